"""The simulated browser behind the model's search, click and open tools."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rumination.formatting import SearchLayout, Truncator, format_page, format_search_results
from rumination.results import Source, ToolCall
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.web.base import Fetcher, Page
from rumination.web.fetch import FetchError
from rumination.web.fetcher import normalize_url


@dataclass
class ToolResult:
    """What one tool call produced: the observation text and facts for the event stream."""

    observation: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    url: str | None = None
    title: str | None = None
    source_id: int | None = None
    results: int | None = None


class Browser:
    """Keeps the latest result list and the pages read; every page comes through the fetcher."""

    def __init__(
        self,
        engine: SearchEngine,
        fetcher: Fetcher,
        truncate: Truncator,
        *,
        max_results: int = 10,
        layout: SearchLayout = "card",
        page_max_tokens: int = 8000,
    ):
        self.engine, self.fetcher, self.truncate = engine, fetcher, truncate
        self.max_results, self.layout, self.page_max_tokens = max_results, layout, page_max_tokens
        self.results: list[SearchHit] = []
        self.sources: list[Source] = []
        self._pages: dict[str, Page] = {}

    async def run(self, call: ToolCall) -> ToolResult:
        """Execute search, click or open and time it."""
        start = time.perf_counter()
        if call.name == "search":
            result = await self.search(call.arguments["query"])
        elif call.name == "click":
            result = await self.click(call.arguments["link_id"])
        else:
            result = await self.open(call.arguments["url"])
        result.seconds = time.perf_counter() - start
        return result

    def action_key(self, call: ToolCall) -> str:
        """A key that is equal for repeated actions: the normalised query, or the URL a click/open reads."""
        if call.name == "search":
            return "search:" + " ".join(call.arguments["query"].lower().split())
        if call.name == "click" and 0 <= call.arguments["link_id"] < len(self.results):
            return "read:" + self.results[call.arguments["link_id"]].url
        if call.name == "open":
            return "read:" + normalize_url(call.arguments["url"])
        return f"{call.name}:{call.arguments}"

    async def search(self, query: str) -> ToolResult:
        """Run the engine; the hits become the list that click indexes."""
        try:
            hits = await self.engine.search(query, self.max_results)
        except SearchError as exc:
            return ToolResult(f"Error: search failed: {exc}. Try again later or rephrase.", False, "search")
        if not hits:
            return ToolResult(f"No results for {query!r}. Try other keywords.", True, results=0)
        self.results = hits
        return ToolResult(format_search_results(hits, self.layout), True, results=len(hits))

    async def click(self, link_id: int) -> ToolResult:
        """Open result `link_id` of the latest search."""
        if not self.results:
            return ToolResult(
                "Error: there are no search results to click yet. Call search first, or open a URL.", False, "arguments"
            )
        if not 0 <= link_id < len(self.results):
            return ToolResult(
                f"Error: link_id {link_id} does not exist. The latest search results have link_id 0 to "
                f"{len(self.results) - 1}.",
                False,
                "arguments",
            )
        hit = self.results[link_id]
        return await self.open(hit.url, title=hit.title)

    async def open(self, url: str, title: str = "") -> ToolResult:
        """Fetch a page through the fetcher (or this run's copy of it) and show its main text."""
        url = normalize_url(url)
        page = self._pages.get(url)
        if page is None:
            try:
                page = await self.fetcher.fetch(url)
            except FetchError as exc:
                error = "refused" if exc.kind == "refused" else "fetch"
                return ToolResult(f"Error: could not open {url}: {exc}", False, error, url=url)
            self._pages[url] = self._pages[page.final_url] = page
        source = self._remember(page, title)
        text = format_page(source.title, page.final_url, page.text, self.page_max_tokens, self.truncate)
        return ToolResult(text, True, url=page.final_url, title=source.title, source_id=source.id)

    def _remember(self, page: Page, fallback_title: str) -> Source:
        for source in self.sources:
            if source.final_url == page.final_url:
                return source
        source = Source(
            id=len(self.sources) + 1,
            url=page.url,
            final_url=page.final_url,
            title=page.title or fallback_title or page.final_url,
            fetched_at=page.fetched_at,
        )
        self.sources.append(source)
        return source
