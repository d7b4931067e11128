"""Name -> factory registries for backends, search engines and fetchers (plugins via entry points)."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from rumination.errors import ConfigError


class Registry:
    """Built-in factories given as 'module:attr' strings, plus the entry points of one group."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group, self.builtins = kind, group, builtins

    def names(self) -> list[str]:
        """Every registered name, built-ins first."""
        plugins = [ep.name for ep in entry_points(group=self.group) if ep.name not in self.builtins]
        return [*self.builtins, *sorted(plugins)]

    def get(self, name: str) -> Any:
        """Import and return the factory registered as `name`."""
        if name in self.builtins:
            module, _, attr = self.builtins[name].partition(":")
            return getattr(import_module(module), attr)
        for ep in entry_points(group=self.group, name=name):
            return ep.load()
        raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")


backends = Registry(
    "model backend",
    "rumination.backends",
    {
        "local": "rumination.backends.local:LocalBackend",
        "openai": "rumination.backends.server:ServerBackend",
        "scripted": "rumination.backends.scripted:ScriptedBackend",
    },
)
search_engines = Registry(
    "search engine",
    "rumination.search_engines",
    {
        "ddgs": "rumination.search.ddgs_engine:DdgsEngine",
        "searxng": "rumination.search.searxng:SearxngEngine",
        "brave": "rumination.search.brave:BraveEngine",
        "tavily": "rumination.search.tavily:TavilyEngine",
        "local": "rumination.local.engine:LocalEngine",
    },
)
fetchers = Registry("fetcher", "rumination.fetchers", {"web": "rumination.web.fetcher:WebFetcher"})
