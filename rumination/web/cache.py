"""Content-addressed page snapshots on disk, so a page read once is not fetched again."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from rumination.urls import normalize_domains
from rumination.web.base import Page
from rumination.web.fetch import FetchPolicy


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(url: str, policy: FetchPolicy, robots: bool) -> str:
    """The key of `url` read under `policy`: a page is served only to fetches under the rules it was read under."""
    # Private addresses, the allow and deny lists (checked on every redirect hop of the fetch that read the page) and
    # robots.txt; the lists compared as hosts are, so that one rule spelled two ways shares pages.
    rules = [
        "private" if policy.allow_private else "public",
        sorted(set(normalize_domains(policy.allow_domains))),
        sorted(set(normalize_domains(policy.deny_domains))),
        "robots" if robots else "any",
    ]
    return json.dumps([*rules, url], ensure_ascii=False)


class Cached(NamedTuple):
    """A page from the cache, and whether it was read from a private or local address."""

    page: Page
    inside: bool


class PageCache:
    """Snapshots in `objects/<sha256 of the content>.json`; `urls/<sha256 of a URL>` names the snapshot."""

    def __init__(self, directory: Path, max_age: timedelta = timedelta(days=1)):
        self.directory, self.max_age = Path(directory), max_age

    def get(self, url: str) -> Cached | None:
        """The snapshot stored under `url` (a key) if fresh enough, else None (a damaged entry counts as missing)."""
        try:
            ref = json.loads((self.directory / "urls" / _digest(url)).read_text())
            page = Page.model_validate_json((self.directory / "objects" / f"{ref['object']}.json").read_text())
            inside = ref.get("inside") is True  # an entry that does not say leads nowhere inside
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return Cached(page, inside) if datetime.now(UTC) - page.fetched_at <= self.max_age else None

    def find(self, url: str, policy: FetchPolicy, robots: bool) -> Cached | None:
        """The page of `url` read under `policy` or, when it allows private addresses, read without them."""
        policies = [policy, replace(policy, allow_private=False)] if policy.allow_private else [policy]
        return next(filter(None, (self.get(cache_key(url, rules, robots)) for rules in policies)), None)

    def keep(self, page: Page, policy: FetchPolicy, robots: bool, inside: bool) -> None:
        """Store `page`, read under `policy` (from a private or local address if `inside`)."""
        self.put(page, lambda url: cache_key(url, policy, robots), inside)

    def put(self, page: Page, key: Callable[[str], str] = str, inside: bool = False) -> None:
        """Store a snapshot under its content hash and point `key(url)` and `key(final url)` at it."""
        data = page.model_dump_json()
        digest = _digest(page.final_url + "\0" + page.title + "\0" + page.text)
        self._write(self.directory / "objects" / f"{digest}.json", data)
        for url in {page.url, page.final_url}:
            ref = {"object": digest, "url": url, "inside": inside}
            self._write(self.directory / "urls" / _digest(key(url)), json.dumps(ref))

    @staticmethod
    def _write(path: Path, data: str) -> None:
        """Write atomically: a crash leaves the old entry or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, path)
