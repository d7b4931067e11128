"""The simulated browser behind the model's search, click and open tools."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from rumination.config import Config
from rumination.formatting import Truncator, format_page, format_search_results
from rumination.neterrors import brief
from rumination.results import Source, ToolCall, ToolResult
from rumination.sanitize import clean_text
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.errors import Unreachable
from rumination.tokens import truncate_tokens
from rumination.tool_errors import BrowserErrorKind
from rumination.urls import (
    domain_allowed,
    find_urls,
    is_local,
    local_index,
    normalize_url,
    parse_local_url,
    url_key,
)
from rumination.web.base import Fetcher, FetchError, Page


def _failure(observation: str, error: BrowserErrorKind, detail: str, url: str | None = None) -> ToolResult:
    return ToolResult(observation=observation, ok=False, error=error, url=url, detail=detail)


class Browser:
    """Keeps the latest result list and the pages read; every page comes through the fetcher."""

    def __init__(
        self,
        config: Config,
        engine: SearchEngine,
        fetcher: Fetcher,
        truncate: Truncator,
        *,
        question: str = "",
        prefetch: int | None = None,
        open_any_url: bool | None = None,
    ):
        """Settings come from `config`; `prefetch` and `open_any_url` override it for one-off commands."""
        self.engine, self.fetcher, self.truncate = engine, fetcher, truncate
        self.max_results, self.layout = config.search_results, config.search_layout
        self.page_max_tokens = config.page_max_tokens
        self.prefetch = config.prefetch if prefetch is None else prefetch
        self.open_any_url = config.open_any_url if open_any_url is None else open_any_url
        self.allow_domains, self.deny_domains = list(config.allow_domains), list(config.deny_domains)
        indexes = [local_index(engine) for engine in config.engines]
        self.local_indexes = {index for index in indexes if index}
        self.local_only = None not in indexes  # then no web page, unless asked
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
        cls, config: Config, engine: SearchEngine, fetcher: Fetcher, tokenizer: Any, **options: Any
    ) -> Browser:
        """A browser with a run's settings, truncating pages with `tokenizer`; `options` as for the constructor."""
        return cls(config, engine, fetcher, partial(truncate_tokens, tokenizer), **options)

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
        except Unreachable as exc:
            reason = brief(str(exc), 400)
            return _failure(f"Error: search failed: {reason}. Check the network, then try again.", "search", reason)
        except SearchError as exc:
            reason = brief(str(exc), 400)
            return _failure(f"Error: search failed: {reason}. Try again later or rephrase.", "search", reason)
        except Exception as exc:  # a plugin's engine failing in a way nobody anticipated ends this call, not the run
            reason = brief(f"{type(exc).__name__}: {exc}", 200)
            return _failure(f"Error: search failed: {reason}. Try again later.", "search", reason)
        if not hits:
            return ToolResult(observation=f"No results for {query!r}. Try other keywords.", ok=True, results=0)
        self.results = hits
        for hit in hits:
            self.seen.add(hit.url)
        for hit in hits[: self.prefetch]:
            if not self._refusal(normalize_url(hit.url), chosen=True):
                self._start_fetch(normalize_url(hit.url))
        return ToolResult(observation=format_search_results(hits, self.layout), ok=True, results=len(hits))

    async def click(self, link_id: int) -> ToolResult:
        """Open result `link_id` of the latest search."""
        if not self.results:
            return _failure(
                "Error: there are no search results to click yet. Call search first, or open a URL.",
                "arguments",
                "no search results to click",
            )
        if not 0 <= link_id < len(self.results):
            return _failure(
                f"Error: link_id {link_id} does not exist. The latest search results have link_id 0 to "
                f"{len(self.results) - 1}.",
                "arguments",
                f"link_id {link_id} out of range 0-{len(self.results) - 1}",
            )
        hit = self.results[link_id]
        return await self.open(hit.url, title=hit.title, chosen=True)

    async def open(self, url: str, title: str = "", chosen: bool = False) -> ToolResult:
        """Fetch a page through the fetcher (or this run's copy of it) and show its main text."""
        url = normalize_url(url)
        if refusal := self._refusal(url, chosen):
            return _failure(f"Error: refused: {refusal}", "refused", refusal, url)
        page = self._pages.get(url)
        if page is None:
            try:
                page = await self._start_fetch(url)
            except FetchError as exc:
                error: BrowserErrorKind = "refused" if exc.kind in ("refused", "robots") else "fetch"
                return _failure(f"Error: could not open {url}: {exc}", error, str(exc), url)
            except Exception as exc:  # a fetcher failing in a way nobody anticipated ends this call, not the run
                reason = brief(f"{type(exc).__name__}: {exc}", 200)
                return _failure(f"Error: could not open {url}: {reason}", "fetch", reason, url)
        self.seen.add_page(page)  # its links may be opened now that the model has read it
        source = self._remember(page, title)
        text = format_page(source.title, page.final_url, page.text, self.page_max_tokens, self.truncate)
        return ToolResult(observation=text, ok=True, url=page.final_url, title=source.title, source_id=source.id)

    def _refusal(self, url: str, chosen: bool) -> str | None:
        """Why the model may not open `url`, or None: the domain lists, other indexes, URLs it was never shown."""
        if is_local(url):
            index = (parse_local_url(url) or ("", 0))[0]
            if index in self.local_indexes or self.open_any_url:
                return None
            return f"{url} is not a document of the indexes searched ({', '.join(sorted(self.local_indexes))})"
        if self.local_only and not (self.open_any_url or self.allow_domains):
            return f"{url} is a web page, and this run reads only local documents"
        if not domain_allowed(url, [], self.deny_domains):
            return f"{url} is on a denied domain"
        if not domain_allowed(url, self.allow_domains, []):
            return f"{url} is outside the allowed domains ({', '.join(self.allow_domains)})"
        if chosen or self.open_any_url or self.allow_domains:
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
            title=" ".join(clean_text(page.title or fallback_title or page.final_url).split()),
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
        for url in find_urls(text, base):
            self.add(url)

    def add_page(self, page: Page) -> None:
        """Remember a fetched page and its links."""
        self.add(page.url)
        self.add(page.final_url)
        self.add_text(page.text, base=page.final_url)

    def __contains__(self, url: str) -> bool:
        key = url_key(url)
        host, _, path = key.partition("/")
        return key in self._urls or (path == "" and host in self._hosts)
