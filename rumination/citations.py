"""Check a report's links against the pages the run actually read."""

from __future__ import annotations

import re

from rumination.results import Source

_URL = re.compile(r"https?://[^\s<>\"')\]】]+")


def _norm(url: str) -> str:
    return url.rstrip("/.,;:").removeprefix("https://").removeprefix("http://").removeprefix("www.")


def mark_cited(sources: list[Source], report: str) -> list[Source]:
    """Copies of `sources` with `cited` set where the report links to the page."""
    cited = {_norm(u) for u in _URL.findall(report)}
    return [s.model_copy(update={"cited": _norm(s.url) in cited or _norm(s.final_url) in cited}) for s in sources]


def unverified_urls(sources: list[Source], report: str) -> list[str]:
    """URLs in the report that the run never fetched."""
    read = {_norm(s.url) for s in sources} | {_norm(s.final_url) for s in sources}
    return sorted({u.rstrip(".,;:") for u in _URL.findall(report) if _norm(u) not in read})
