"""robots.txt, fetched once per site through the guarded fetch function."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from rumination.web.base import FetchError
from rumination.web.fetch import FetchPolicy, guarded_get


class Robots:
    """Answers whether our user agent may fetch a URL; an unreachable or missing robots.txt allows all."""

    def __init__(self, client: httpx.AsyncClient, policy: FetchPolicy, user_agent: str):
        self.client, self.user_agent = client, user_agent
        self.policy = replace(policy, timeout=min(policy.timeout, 10.0), max_bytes=500_000, max_redirects=3, retries=0)
        self._sites: dict[str, asyncio.Task[RobotFileParser | None]] = {}

    async def allowed(self, url: str) -> bool:
        """True unless the site's robots.txt disallows `url` for us."""
        parts = urlsplit(url)
        site = f"{parts.scheme}://{parts.netloc}"
        if site not in self._sites:
            self._sites[site] = asyncio.ensure_future(self._load(site))
        rules = await asyncio.shield(self._sites[site])
        return rules is None or rules.can_fetch(self.user_agent, url)

    async def _load(self, site: str) -> RobotFileParser | None:
        try:
            raw = await guarded_get(self.client, site + "/robots.txt", self.policy)
        except FetchError:
            return None  # no robots.txt (404), or unreachable: nothing forbids the fetch
        except Exception:  # a malformed answer must not break every later fetch from the site
            return None
        rules = RobotFileParser()
        rules.parse(raw.body.decode("utf-8", errors="replace").splitlines())
        return rules

    def close(self) -> None:
        """Cancel robots.txt fetches still running."""
        for task in self._sites.values():
            task.cancel()
