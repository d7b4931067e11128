"""Check a report's links against the pages the run actually read."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from rumination.results import Source

_URL = re.compile(r"https?://[^\s<>\"')\]】]+")


def url_key(url: str) -> str:
    """Compare URLs without scheme, www., fragment, or trailing slash."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    host = (parts.hostname or "").lower().removeprefix("www.")
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(("", host, parts.path.rstrip("/"), parts.query, "")).removeprefix("//")


def _norm(url: str) -> str:
    return url_key(url.rstrip(".,;:"))


def mark_cited(sources: list[Source], report: str) -> list[Source]:
    """Copies of `sources` with `cited` set where the report links to the page."""
    cited = {_norm(u) for u in _URL.findall(report)}
    return [s.model_copy(update={"cited": _norm(s.url) in cited or _norm(s.final_url) in cited}) for s in sources]


def unverified_urls(sources: list[Source], report: str) -> list[str]:
    """URLs in the report that the run never fetched."""
    read = {_norm(s.url) for s in sources} | {_norm(s.final_url) for s in sources}
    return sorted({u.rstrip(".,;:") for u in _URL.findall(report) if _norm(u) not in read})
