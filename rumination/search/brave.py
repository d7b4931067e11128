"""The Brave Search web API (needs a subscription token)."""

from __future__ import annotations

import html
import re

import httpx

from rumination.config import Config
from rumination.neterrors import brief
from rumination.search.base import SearchError, SearchHit
from rumination.search.errors import parse_retry_after, rate_limited
from rumination.search.http import api_client, decode_json, require_key, send

MAX_COUNT = 20  # the API refuses a larger `count`
_TAG = re.compile(r"<[^>]*>")


def strip_tags(text: str) -> str:
    """Plain text from a snippet with inline HTML (Brave marks matches with <strong>) and entities."""
    return html.unescape(_TAG.sub("", text)).strip()


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    detail = error.get("detail") if isinstance(error, dict) else None
    return f": {brief(str(detail), 200)}" if detail else ""


class BraveEngine:
    """Search the web through the Brave Search API."""

    name = "brave"

    def __init__(self, config: Config):
        key = require_key(config.brave_api_key, "brave")
        self.url = config.brave_url
        self.client = api_client(self.url, "brave_url", config.user_agent, 20.0, **{"X-Subscription-Token": key})

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Return up to `max_results` hits; raise SearchError (RateLimited on HTTP 429) with the reason on failure."""
        count = max(1, min(max_results, MAX_COUNT))
        response = await send(self.client.get(self.url, params={"q": query, "count": count}), "Brave Search", self.url)
        status = response.status_code
        if status in (401, 403):
            raise SearchError(
                f"Brave Search rejected the API key (HTTP {status}): check RUMINATION_BRAVE_API_KEY or brave_api_key, "
                "and that the key's plan covers web search"
            )
        if status == 429:
            raise rate_limited("Brave Search", parse_retry_after(response.headers.get("Retry-After")))
        if status != 200:
            raise SearchError(f"Brave Search answered HTTP {status}{_detail(response)}")
        data = decode_json(response, "Brave Search")
        if not isinstance(data, dict):
            raise SearchError("Brave Search answered JSON that is not an object")
        web = data.get("web")
        if web is None:
            return []  # the API leaves `web` out when nothing matched
        rows = web.get("results") if isinstance(web, dict) else None
        if not isinstance(rows, list):
            raise SearchError("Brave Search answered JSON without a list of web results")
        hits = [
            SearchHit(
                title=strip_tags(str(r.get("title") or "")),
                url=str(r["url"]),
                snippet=strip_tags(str(r.get("description") or "")),
            )
            for r in rows
            if isinstance(r, dict) and r.get("url")
        ]
        return hits[:max_results]

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
