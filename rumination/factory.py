"""Build the configured search engine chain and fetcher."""

from __future__ import annotations

import weakref

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.registry import fetchers, search_engines
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.chain import DomainFilter, Fallback, Paced
from rumination.snapshot import FetchRules, ReachingSnapshotFetcher, SnapshotEngine, WebSnapshot
from rumination.urls import is_local, local_index, opens_web, without_userinfo
from rumination.web.base import Fetcher, FetchError, Page
from rumination.web.guard import resolves_inside

# The setting that holds the endpoint of each built-in engine that has one; ddgs has none (the public web).
_ENDPOINTS = {"searxng": "searxng_url", "brave": "brave_url", "tavily": "tavily_url"}
_CONFIGURED: weakref.WeakKeyDictionary[SearchEngine, Config] = weakref.WeakKeyDictionary()


def make_engine(config: Config) -> SearchEngine:
    """The primary engine, then each fallback; paced, recorded to the web snapshot, filtered by the domain lists."""
    store = _snapshot(config)  # opened first: a snapshot it cannot use fails before any engine opens a client
    engines = [
        DomainFilter(_one(name, config, store), config.allow_domains, config.deny_domains) for name in config.engines
    ]
    engine = engines[0] if len(engines) == 1 else Fallback(engines)
    _CONFIGURED[engine] = config
    return engine


async def results_lead_inside(engine: SearchEngine) -> bool:
    """Whether hits of `engine` may lead to private addresses: the caller's own engine, or only private endpoints."""
    # A configured chain leads inside only if every engine is a local index or has its endpoint at a private address
    # (an intranet SearXNG); ddgs, a plugin and an engine at a public address search the public web.
    config = _CONFIGURED.get(engine)
    if config is None:
        return True
    for name in config.engines:
        if local_index(name) is not None:
            continue
        endpoint = getattr(config, _ENDPOINTS[name]) if name in _ENDPOINTS else None
        if not endpoint or not await resolves_inside(without_userinfo(str(endpoint))):
            return False
    return True


def same_origin(outer: SearchEngine, inner: SearchEngine) -> None:
    """Let `outer`, which wraps `inner`, lead where `inner`'s results lead (see results_lead_inside)."""
    if inner in _CONFIGURED:
        _CONFIGURED[outer] = _CONFIGURED[inner]


def _snapshot(config: Config) -> WebSnapshot | None:
    return None if config.web_snapshot is None else WebSnapshot.open(config.web_snapshot)


def _one(name: str, config: Config, store: WebSnapshot | None) -> SearchEngine:
    index = local_index(name)
    if index is not None:
        if not index:
            raise ConfigError("name the index to search: --search local:NAME (build it with rumination index)")
        return search_engines.get("local")(config, index)  # no pacing (or snapshot): it is on this machine
    engine: SearchEngine = Paced(search_engines.get(name)(config), config.search_min_interval)
    if store is not None:
        # Inside the domain filter, so the snapshot holds the engine's unfiltered hits and a run replaying it applies
        # its own allow/deny lists (a stricter deny list is never shown what it denies, a looser one sees what an
        # earlier list dropped); outside the pacing, so a replayed search never waits for the engine's turn.
        engine = SnapshotEngine(engine, store)
    return WebHits(engine)


class WebHits:
    """A web engine's hits that are web pages: one naming a local document (or any other scheme) is dropped."""

    def __init__(self, engine: SearchEngine):
        self.engine = engine
        self.name = engine.name

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The wrapped engine's http(s) hits."""
        hits = await self.engine.search(query, max_results)
        return [hit for hit in hits if hit.url.strip().lower().startswith(("http://", "https://"))]

    async def aclose(self) -> None:
        """Close the wrapped engine."""
        await self.engine.aclose()


class RoutingFetcher:
    """local:// documents from the local indexes, the web through the configured web fetcher (if the run opens it)."""

    name = "web"

    def __init__(self, config: Config):
        self.config = config
        store = _snapshot(config)
        self.web: Fetcher | None = None
        self._recorded: Fetcher | None = None
        if opens_web(config.engines, config.allow_web):
            self.web = fetchers.get(config.fetcher)(config)
            if store is not None:  # local:// documents are on this machine: never recorded
                self._recorded = ReachingSnapshotFetcher(self.web, store, fetch_rules(config))
        self.local: Fetcher | None = None

    async def fetch(self, url: str) -> Page:
        """Fetch from the right place."""
        if is_local(url):
            if self.local is None:
                from rumination.local.fetcher import LocalFetcher

                self.local = LocalFetcher(self.config)
            return await self.local.fetch(url)
        if self.web is None:
            raise FetchError(
                "refused", "refused: this run reads only local documents (--allow-web lets it open the web)"
            )
        return await (self._recorded or self.web).fetch(url)

    async def aclose(self) -> None:
        """Close both."""
        if self.web is not None:
            await self.web.aclose()
        if self.local is not None:
            await self.local.aclose()


def fetch_rules(config: Config) -> FetchRules:
    """The egress rules the web fetcher enforces under `config`, as the web snapshot records and re-applies them."""
    return FetchRules(
        private_network=config.allow_private_network,
        robots_txt=config.robots_txt,
        allow_domains=config.allow_domains,
        deny_domains=config.deny_domains,
    )


def make_fetcher(config: Config) -> Fetcher:
    """The fetcher for model-chosen URLs."""
    return RoutingFetcher(config)


class NoEngine:
    """The engine of a command that only opens pages: it never builds (or needs the settings of) a real one."""

    name = "none"

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Refuse: this command does not search."""
        raise SearchError("this command does not search")

    async def aclose(self) -> None:
        """Nothing to close."""
