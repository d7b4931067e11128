"""Check a report's links against the pages the run actually read."""

from __future__ import annotations

from rumination.results import Source
from rumination.urls import find_urls, url_key


def mark_cited(sources: list[Source], report: str) -> list[Source]:
    """Copies of `sources` with `cited` set where the report links to the page."""
    cited = {url_key(url) for url in find_urls(report)}
    return [s.model_copy(update={"cited": url_key(s.url) in cited or url_key(s.final_url) in cited}) for s in sources]


def unverified_urls(sources: list[Source], report: str) -> list[str]:
    """URLs in the report that the run never fetched."""
    read = {url_key(s.url) for s in sources} | {url_key(s.final_url) for s in sources}
    return sorted({url for url in find_urls(report) if url_key(url) not in read})
