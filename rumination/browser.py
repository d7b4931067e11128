"""The simulated browser behind the model's search, click and open tools."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

from rumination.config import Config
from rumination.factory import results_lead_inside
from rumination.formatting import format_search_results, read_page
from rumination.neterrors import brief
from rumination.reading import Cut, Truncator, query_terms
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
    opens_web,
    parse_local_url,
    url_key,
)
from rumination.web.base import Fetcher, FetchError, Page
from rumination.web.fetch import AddressError, Reach, within_reach
from rumination.web.guard import names_inside

# The same words whether the name resolves to a private address, to a metadata one, or not at all: the model may
# not map the network through refusals (the reason is in the result's detail, for the user's trace).
ADDRESS_REFUSED = "Error: this address may not be opened"
NO_SUCH_DOCUMENT = (
    "Error: there is no such document. Local documents are opened by the local://NAME/ID URLs of results."
)


def _failure(observation: str, error: BrowserErrorKind, detail: str, url: str | None = None) -> ToolResult:
    return ToolResult(observation=observation, ok=False, error=error, url=url, detail=detail)


def _failed(task: asyncio.Task[Page]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


class BrowserState(BaseModel):
    """What a browser knows after a turn (pages themselves excepted): a resumed run's browser starts from it."""

    results: list[SearchHit] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    inside: dict[str, bool] = Field(default_factory=dict)
    hits_inside: bool | None = None
    seen_urls: dict[str, bool] = Field(default_factory=dict)
    seen_hosts: dict[str, bool] = Field(default_factory=dict)
    last_query: str = ""
    read: dict[str, list[int]] = Field(default_factory=dict, description="final URL: the passages shown of it")
    left: dict[str, int] = Field(default_factory=dict, description="final URL: passages not shown yet")


class Browser:
    """Keeps the latest result list and the pages read; every page comes through the fetcher, in the run's scope."""

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
        self.allow_private = config.allow_private_network
        self.local_indexes = {index for index in map(local_index, config.engines) if index}
        self.opens_web = opens_web(config.engines, config.allow_web)
        self.results: list[SearchHit] = []
        self.sources: list[Source] = []
        self._pages: dict[str, Page] = {}
        self._inside: dict[str, bool] = {}  # final URL -> the page was read from a private or local address
        self._inflight: dict[tuple[str, bool], asyncio.Task[Page]] = {}  # (URL, may reach private addresses)
        self._hits_inside: bool | None = None
        self.question, self.last_query = question, ""
        self.read: dict[str, set[int]] = {}  # final URL -> the passages of it shown so far
        self.left: dict[str, int] = {}  # final URL -> passages of it not shown yet
        self.seen = Provenance()
        self.seen.add_text(question, inside=True, local=True)
        self._asked = {url_key(url) for url in find_urls(question) if is_local(url)}

    def state(self) -> BrowserState:
        """What this browser knows, for the journal."""
        return BrowserState(
            results=list(self.results),
            sources=list(self.sources),
            inside=dict(self._inside),
            hits_inside=self._hits_inside,
            **self.seen.state(),
            last_query=self.last_query,
            read={url: sorted(shown) for url, shown in self.read.items()},
            left=dict(self.left),
        )

    def restore(self, state: BrowserState) -> None:
        """Know what `state` says (a resumed run); pages are read again through the fetcher, which has them."""
        self.results, self.sources = list(state.results), list(state.sources)
        self._inside, self._hits_inside = dict(state.inside), state.hits_inside
        self.seen.restore(state.seen_urls, state.seen_hosts)
        self.last_query, self.left = state.last_query, dict(state.left)
        self.read = {url: set(shown) for url, shown in state.read.items()}

    async def run(self, call: ToolCall, thinking: str = "") -> ToolResult:
        """Execute search, click or open and time it; `thinking`, what the model wrote first, steers a long page."""
        start = time.perf_counter()
        if call.name == "search":
            result = await self.search(call.arguments["query"])
        elif call.name == "click":
            result = await self.click(call.arguments["link_id"], thinking)
        else:
            result = await self.open(call.arguments["url"], thinking=thinking)
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
            url = self.results[call.arguments["link_id"]].url
        elif call.name == "open":
            url = normalize_url(call.arguments["url"])
        else:
            return f"{call.name}:{call.arguments}"
        page = self._pages.get(normalize_url(url))
        if page is not None and self.left.get(page.final_url):  # a read on: new passages, not a repeat
            return f"read:{url}#{len(self.read.get(page.final_url, ()))}"
        return "read:" + url

    async def search(self, query: str) -> ToolResult:
        """Run the engine; the hits become the list that click indexes."""
        self.last_query = query
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
        inside = await self._results_lead_inside()
        for hit in hits:
            self.seen.add(hit.url, inside)
        for url in [normalize_url(hit.url) for hit in hits[: self.prefetch]]:
            # A prefetch never reaches a private address (one written as such is not even tried).
            if not self._refusal(url, chosen=True) and not (names_inside(url) and not is_local(url)):
                self._start_fetch(url, private=False)
        return ToolResult(observation=format_search_results(hits, self.layout), ok=True, results=len(hits))

    async def _results_lead_inside(self) -> bool:
        if self._hits_inside is None:
            self._hits_inside = self.allow_private and await results_lead_inside(self.engine)
        return self._hits_inside

    async def click(self, link_id: int, thinking: str = "") -> ToolResult:
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
        return await self.open(hit.url, title=hit.title, chosen=True, thinking=thinking)

    async def open(self, url: str, title: str = "", chosen: bool = False, thinking: str = "") -> ToolResult:
        """Fetch a page through the fetcher (or this run's copy of it) and show its main text."""
        url = normalize_url(url)
        if is_local(url) and parse_local_url(url) is None:
            return _failure(NO_SUCH_DOCUMENT, "fetch", f"no such document: {brief(url, 100)}", brief(url, 200))
        if refusal := self._refusal(url, chosen):
            return _failure(f"Error: refused: {refusal}", "refused", refusal, url)
        page = self._pages.get(url)
        if page is None:
            try:
                page = await self._read(url, private=self._leads_inside(url))
            except FetchError as exc:
                error: BrowserErrorKind = "refused" if exc.kind in ("refused", "robots") else "fetch"
                if isinstance(exc, AddressError):
                    return _failure(ADDRESS_REFUSED, error, str(exc), url)
                return _failure(f"Error: could not open {url}: {exc}", error, str(exc), url)
            except Exception as exc:  # a fetcher failing in a way nobody anticipated ends this call, not the run
                reason = brief(f"{type(exc).__name__}: {exc}", 200)
                return _failure(f"Error: could not open {url}: {reason}", "fetch", reason, url)
        source = self._remember(page, title)
        text, cut = self._show(page, source.title, thinking)
        # Its links may be opened now that the model has read them: those it was shown, not those cut off.
        local = is_local(page.final_url)
        self.seen.add_text(text, base=page.final_url, inside=self._inside.get(page.final_url, False), local=local)
        return ToolResult(
            observation=text,
            ok=True,
            url=page.final_url,
            title=source.title,
            source_id=source.id,
            page_tokens=cut.total_tokens if cut.cut else None,
            kept_tokens=cut.kept_tokens if cut.cut else None,
            continued=cut.continued,
        )

    def _show(self, page: Page, title: str, thinking: str) -> tuple[str, Cut]:
        """The page as the model sees it: whole, or what matters most to it now; read again, what it has not seen."""
        final, query = page.final_url, query_terms(self.question, self.last_query, thinking)
        shown = self.read.setdefault(final, set())
        text, cut = read_page(title, final, page.text, self.page_max_tokens, self.truncate, query, shown)
        if cut.continued and not cut.shown:  # every part was shown before: the page again, as a repeat
            text, cut = read_page(title, final, page.text, self.page_max_tokens, self.truncate, query)
            return text + "\n\n[You have now seen every part of this page; this is it again.]", cut
        shown |= cut.shown
        self.left[final] = cut.left
        return text, cut

    # The run's scope, decided before any fetch: local documents only of the indexes searched (or one the question
    # names) and, unless open_any_url, only those the model was shown; web pages only when the run searches the
    # web or allow_web says so, within the domain lists, and only those shown (or on an allowed domain). With
    # private addresses allowed, a fetch may reach one only if a private origin led to its URL: the question, an
    # allowed domain, a private (or the caller's own) engine's results, or a page read from a private address; a
    # public page, result or redirect never leads inside, and a prefetch never reaches inside.
    def _refusal(self, url: str, chosen: bool) -> str | None:
        """Why the model may not open `url`, or None: other indexes, the web, the domain lists, URLs never shown."""
        if is_local(url):
            index = (parse_local_url(url) or ("", 0))[0]
            if index not in self.local_indexes and url_key(url) not in self._asked:
                searched = ", ".join(sorted(self.local_indexes)) or "none"
                return f"{url} is not a document of the indexes searched ({searched})"
        elif not self.opens_web:
            return f"{url} is a web page, and this run reads only local documents (--allow-web lets it open the web)"
        elif not domain_allowed(url, [], self.deny_domains):
            return f"{url} is on a denied domain"
        elif not domain_allowed(url, self.allow_domains, []):
            return f"{url} is outside the allowed domains ({', '.join(self.allow_domains)})"
        elif self.allow_domains:
            return None  # every page of a domain the user allowed may be opened
        if chosen or self.open_any_url or url in self.seen:
            return None
        return (
            f"{url} did not appear in the search results, the pages you read or the question. "
            "Search for it first, or open a link from a page you read."
        )

    def _leads_inside(self, url: str) -> bool:
        """Whether a fetch of `url` may reach private addresses: only where a private origin led to the URL."""
        if not self.allow_private:
            return False
        return self.seen.leads_inside(url) or (bool(self.allow_domains) and domain_allowed(url, self.allow_domains, []))

    async def _read(self, url: str, private: bool) -> Page:
        """The page of `url`; a prefetch still running serves a fetch that may reach inside too, unless refused."""
        shared = self._inflight.get((url, False)) if private else None
        if shared is not None and not _failed(shared):
            try:
                return await shared
            except FetchError as exc:
                if exc.kind != "refused":
                    raise
        return await self._start_fetch(url, private)

    def _start_fetch(self, url: str, private: bool) -> asyncio.Task[Page]:
        """Fetch `url` once per run and reach: later requests (and a click after a prefetch) share the same task."""
        task = self._inflight.get((url, private))
        if task is None or _failed(task):
            reach = Reach(private=private)
            task = asyncio.get_running_loop().create_task(self._fetch(url, reach), context=within_reach(reach))
            self._inflight[url, private] = task
        return task

    async def _fetch(self, url: str, reach: Reach) -> Page:
        page = await self.fetcher.fetch(url)
        known = reach.inside if reach.inside is not None else names_inside(page.final_url)
        self._inside[page.final_url] = is_local(page.final_url) or (reach.private and known)
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
    """The URLs the model has been shown, each with whether what showed it may lead inside the private network."""

    def __init__(self) -> None:
        self._urls: dict[str, bool] = {}
        self._hosts: dict[str, bool] = {}

    def add(self, url: str, inside: bool = False) -> None:
        """Remember one URL (and its host, so its home page may be opened); `inside`: a private origin showed it."""
        key = url_key(url)
        self._urls[key] = self._urls.get(key, False) or inside
        if not is_local(url):
            host = key.split("/", 1)[0]
            self._hosts[host] = self._hosts.get(host, False) or inside

    def state(self) -> dict[str, dict[str, bool]]:
        """What was shown, as BrowserState keeps it."""
        return {"seen_urls": dict(self._urls), "seen_hosts": dict(self._hosts)}

    def restore(self, urls: dict[str, bool], hosts: dict[str, bool]) -> None:
        """Know what a journal says was shown (a resumed run), its keys made again (an older version's may differ)."""
        for key, inside in urls.items():
            key = key if is_local(key) else url_key(f"https://{key}")
            self._urls[key] = self._urls.get(key, False) or inside
        for host, inside in hosts.items():
            host = url_key(f"https://{host}")
            self._hosts[host] = self._hosts.get(host, False) or inside

    def add_text(self, text: str, base: str | None = None, *, inside: bool = False, local: bool = False) -> None:
        """Remember the URLs written in `text` (Markdown links against `base`); local:// ones only if `local`."""
        for url in find_urls(text, base):
            if local or not is_local(url):
                self.add(url, inside)

    def _shown(self, url: str) -> bool | None:
        """None if never shown, else whether a private origin showed it."""
        key = url_key(url)
        if key in self._urls:
            return self._urls[key]
        host, _, path = key.partition("/")
        return self._hosts.get(host) if path == "" and not is_local(url) else None

    def __contains__(self, url: str) -> bool:
        return self._shown(url) is not None

    def leads_inside(self, url: str) -> bool:
        """Whether `url` was shown by a private origin (the question, a private engine, a private page)."""
        return self._shown(url) is True
