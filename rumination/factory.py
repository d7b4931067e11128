"""Build the configured search engine chain and fetcher."""

from __future__ import annotations

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.registry import fetchers, search_engines
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.chain import DomainFilter, Fallback, Paced
from rumination.urls import is_local, local_index
from rumination.web.base import Fetcher, Page


def make_engine(config: Config) -> SearchEngine:
    """The primary engine, then each fallback; paced and filtered by the domain lists."""
    engines = [DomainFilter(_one(name, config), config.allow_domains, config.deny_domains) for name in config.engines]
    return engines[0] if len(engines) == 1 else Fallback(engines)


def _one(name: str, config: Config) -> SearchEngine:
    index = local_index(name)
    if index is not None:
        if not index:
            raise ConfigError("name the index to search: --search local:NAME (build it with rumination index)")
        return search_engines.get("local")(config, index)  # no pacing: it is on this machine
    return Paced(search_engines.get(name)(config), config.search_min_interval)


class RoutingFetcher:
    """local:// documents from the local indexes, everything else through the configured web fetcher."""

    name = "web"

    def __init__(self, config: Config):
        self.config = config
        self.web: Fetcher = fetchers.get(config.fetcher)(config)
        self.local: Fetcher | None = None

    async def fetch(self, url: str) -> Page:
        """Fetch from the right place."""
        if is_local(url):
            if self.local is None:
                from rumination.local.fetcher import LocalFetcher

                self.local = LocalFetcher(self.config)
            return await self.local.fetch(url)
        return await self.web.fetch(url)

    async def aclose(self) -> None:
        """Close both."""
        await self.web.aclose()
        if self.local is not None:
            await self.local.aclose()


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
