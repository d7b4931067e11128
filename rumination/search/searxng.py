"""A self-hosted SearXNG instance through its JSON API (a configured, trusted endpoint)."""

from __future__ import annotations

import httpx

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.search.base import SearchError, SearchHit


class SearxngEngine:
    """Search a SearXNG instance; its `json` output format must be enabled."""

    name = "searxng"

    def __init__(self, config: Config):
        if not config.searxng_url:
            raise ConfigError("--search searxng needs --searxng-url URL (or RUMINATION_SEARXNG_URL)")
        if not config.searxng_url.startswith(("http://", "https://")):
            raise ConfigError(f"--searxng-url must be an http(s) URL, got {config.searxng_url!r}")
        self.base = config.searxng_url.rstrip("/")
        self.client = httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(20.0, connect=5.0), headers={"User-Agent": config.user_agent}
        )

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Return up to `max_results` hits; raise SearchError with the reason on failure."""
        try:
            response = await self.client.get(f"{self.base}/search", params={"q": query, "format": "json"})
        except httpx.TransportError as exc:
            raise SearchError(f"SearXNG at {self.base} is unreachable ({type(exc).__name__})") from None
        if response.status_code == 403:
            raise SearchError("SearXNG refused JSON output: add `json` to search.formats in its settings.yml")
        if response.status_code == 429:
            raise SearchError("SearXNG is rate-limiting requests (HTTP 429)")
        if response.status_code != 200:
            raise SearchError(f"SearXNG answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise SearchError("SearXNG did not answer with JSON") from None
        rows = data.get("results") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise SearchError("SearXNG answered JSON without a list of results")
        hits = [
            SearchHit(title=str(r.get("title") or ""), url=str(r["url"]), snippet=str(r.get("content") or ""))
            for r in rows
            if isinstance(r, dict) and r.get("url")
        ]
        return hits[:max_results]

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
