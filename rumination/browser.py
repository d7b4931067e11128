"""The simulated browser behind the model's search, click and open tools."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urljoin

from rumination.citations import url_key
from rumination.config import Config
from rumination.formatting import Truncator, format_page, format_search_results
from rumination.protocol import SearchLayout
from rumination.results import Source, ToolCall
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.chain import domain_allowed
from rumination.tokens import truncate_tokens
from rumination.web.base import Fetcher, Page
from rumination.web.fetch import FetchError
from rumination.web.fetcher import normalize_url

LOCAL_SCHEME = "local://"
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\"')\]】]+")


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
        layout: SearchLayout = "glm4",
        page_max_tokens: int = 8000,
        prefetch: int = 0,
        open_any_url: bool = True,
        allow_domains: Sequence[str] = (),
        deny_domains: Sequence[str] = (),
        question: str = "",
    ):
        self.engine, self.fetcher, self.truncate = engine, fetcher, truncate
        self.max_results, self.layout, self.page_max_tokens = max_results, layout, page_max_tokens
        self.prefetch, self.open_any_url = prefetch, open_any_url
        self.allow_domains, self.deny_domains = list(allow_domains), list(deny_domains)
        self.results: list[SearchHit] = []
        self.sources: list[Source] = []
        self._pages: dict[str, Page] = {}
        self._inflight: dict[str, asyncio.Task[Page]] = {}
        self.seen = Provenance()
        self.seen.add_text(question)

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

    @classmethod
    def from_config(
        cls, config: Config, engine: SearchEngine, fetcher: Fetcher, tokenizer: Any, **overrides: Any
    ) -> Browser:
        """A browser with a run's settings, truncating pages with `tokenizer`; `overrides` win."""
        settings: dict[str, Any] = {
            "max_results": config.search_results,
            "layout": config.search_layout,
            "page_max_tokens": config.page_max_tokens,
            "prefetch": config.prefetch,
            "open_any_url": config.open_any_url,
            "allow_domains": config.allow_domains,
            "deny_domains": config.deny_domains,
        }
        return cls(engine, fetcher, partial(truncate_tokens, tokenizer), **(settings | overrides))

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
        for hit in hits:
            self.seen.add(hit.url)
        for hit in hits[: self.prefetch]:
            if not self._refusal(normalize_url(hit.url), chosen=True):
                self._start_fetch(normalize_url(hit.url))
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
        return await self.open(hit.url, title=hit.title, chosen=True)

    async def open(self, url: str, title: str = "", chosen: bool = False) -> ToolResult:
        """Fetch a page through the fetcher (or this run's copy of it) and show its main text."""
        url = normalize_url(url)
        if refusal := self._refusal(url, chosen):
            return ToolResult(f"Error: refused: {refusal}", False, "refused", url=url)
        page = self._pages.get(url)
        if page is None:
            try:
                page = await self._start_fetch(url)
            except FetchError as exc:
                error = "refused" if exc.kind in ("refused", "robots") else "fetch"
                return ToolResult(f"Error: could not open {url}: {exc}", False, error, url=url)
        self.seen.add_page(page)  # its links may be opened now that the model has read it
        source = self._remember(page, title)
        text = format_page(source.title, page.final_url, page.text, self.page_max_tokens, self.truncate)
        return ToolResult(text, True, url=page.final_url, title=source.title, source_id=source.id)

    def _refusal(self, url: str, chosen: bool) -> str | None:
        """Why the model may not open `url`, or None: denied domains, and URLs it has never been shown."""
        if self.deny_domains and not domain_allowed(url, [], self.deny_domains):
            return f"{url} is on a denied domain"
        if chosen or self.open_any_url or url.startswith(LOCAL_SCHEME):
            return None
        if self.allow_domains and domain_allowed(url, self.allow_domains, []):
            return None
        if url not in self.seen:
            return (
                f"{url} did not appear in the search results, the pages you read or the question. "
                "Search for it first, or open a link from a page you read."
            )
        return None

    def _start_fetch(self, url: str) -> asyncio.Task[Page]:
        """Fetch `url` once per run: later requests (and a click after a prefetch) share the same task."""
        task = self._inflight.get(url)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._inflight[url] = asyncio.ensure_future(self._fetch(url))
        return task

    async def _fetch(self, url: str) -> Page:
        page = await self.fetcher.fetch(url)
        self._pages[url] = self._pages[page.final_url] = page
        return page

    async def aclose(self) -> None:
        """Cancel prefetches still running: they never outlive the run."""
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

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


class Provenance:
    """The URLs the model has been shown: the question, search results and links in pages it read."""

    def __init__(self) -> None:
        self._urls: set[str] = set()
        self._hosts: set[str] = set()

    def add(self, url: str) -> None:
        """Remember one URL (and its host, so the site's home page may be opened)."""
        key = url_key(url)
        self._urls.add(key)
        self._hosts.add(key.split("/", 1)[0])

    def add_text(self, text: str, base: str | None = None) -> None:
        """Remember every URL written in `text`; relative Markdown links resolve against `base`."""
        for url in _BARE_URL.findall(text):
            self.add(url.rstrip(".,;:"))
        if base:
            for href in _MD_LINK.findall(text):
                self.add(urljoin(base, href))

    def add_page(self, page: Page) -> None:
        """Remember a fetched page and its links."""
        self.add(page.url)
        self.add(page.final_url)
        self.add_text(page.text, base=page.final_url)

    def __contains__(self, url: str) -> bool:
        key = url_key(url)
        host, _, path = key.partition("/")
        return key in self._urls or (path == "" and host in self._hosts)
