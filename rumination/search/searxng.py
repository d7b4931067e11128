"""A self-hosted SearXNG instance through its JSON API (a configured, trusted endpoint)."""

from __future__ import annotations

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.search.base import SearchError, SearchHit
from rumination.search.http import api_client, result_hits, send
from rumination.urls import without_userinfo


class SearxngEngine:
    """Search a SearXNG instance; its `json` output format must be enabled."""

    name = "searxng"

    def __init__(self, config: Config):
        if not config.searxng_url:
            raise ConfigError("--search searxng needs --searxng-url URL (or RUMINATION_SEARXNG_URL)")
        self.client = api_client(config.searxng_url, "--searxng-url", config.user_agent, 20.0)
        self.base = config.searxng_url.rstrip("/")

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Return up to `max_results` hits; raise SearchError with the reason on failure."""
        response = await send(
            self.client.get(f"{self.base}/search", params={"q": query, "format": "json"}), "SearXNG", self.base
        )
        if response.status_code == 403:
            raise SearchError("SearXNG refused JSON output: add `json` to search.formats in its settings.yml")
        if response.status_code == 429:
            raise SearchError("SearXNG is rate-limiting requests (HTTP 429)")
        if response.status_code in (404, 405):  # no SearXNG at that address: the setting is wrong, not the query
            raise SearchError(
                f"no SearXNG search at {without_userinfo(self.base)}/search (HTTP {response.status_code}): "
                "check --searxng-url"
            )
        if response.status_code != 200:
            raise SearchError(f"SearXNG answered HTTP {response.status_code}")
        return result_hits(response, "SearXNG", max_results)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
