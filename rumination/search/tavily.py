"""The Tavily search API (needs an API key)."""

from __future__ import annotations

import httpx

from rumination.config import Config
from rumination.neterrors import brief
from rumination.search.base import SearchError, SearchHit
from rumination.search.errors import parse_retry_after, rate_limited
from rumination.search.http import api_client, require_key, result_hits, send

MAX_RESULTS = 20  # the API refuses a larger `max_results`


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("error") or detail.get("message")
    return f": {brief(str(detail), 200)}" if detail else ""


class TavilyEngine:
    """Search the web through the Tavily API."""

    name = "tavily"

    def __init__(self, config: Config):
        key = require_key(config.tavily_api_key, "tavily")
        self.url = config.tavily_url
        self.client = api_client(self.url, "tavily_url", config.user_agent, 30.0, **{"Authorization": f"Bearer {key}"})

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Return up to `max_results` hits; raise SearchError (RateLimited on HTTP 429) with the reason on failure."""
        body = {"query": query, "max_results": max(1, min(max_results, MAX_RESULTS)), "search_depth": "basic"}
        response = await send(self.client.post(self.url, json=body), "Tavily", self.url)
        status = response.status_code
        if status in (401, 403):
            raise SearchError(
                f"Tavily rejected the API key (HTTP {status}): check RUMINATION_TAVILY_API_KEY or tavily_api_key"
            )
        if status == 429:
            raise rate_limited("Tavily", parse_retry_after(response.headers.get("Retry-After")))
        if status in (432, 433):
            raise SearchError(f"Tavily refused the call: the key's usage or spending limit is reached (HTTP {status})")
        if status != 200:
            raise SearchError(f"Tavily answered HTTP {status}{_detail(response)}")
        return result_hits(response, "Tavily", max_results)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
