"""DuckDuckGo and friends through the `ddgs` metasearch library (synchronous, so run off the loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from rumination.config import Config
from rumination.neterrors import TIMED_OUT, brief, network_reason
from rumination.search.base import SearchError, SearchHit
from rumination.search.errors import Unreachable


def _is_rate_limit(exc: BaseException) -> bool:
    from ddgs.exceptions import RatelimitException

    return isinstance(exc, RatelimitException)


class DdgsEngine:
    """Text search with `ddgs`, backing off and retrying when rate-limited."""

    name = "ddgs"

    def __init__(
        self, config: Config, client_factory: Callable[[], Any] | None = None, attempts: int = 4, max_wait: float = 20.0
    ):
        self.backend = config.ddgs_backend
        self.attempts, self.max_wait = attempts, max_wait
        self._factory = client_factory

    def _client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from ddgs import DDGS

        return DDGS(timeout=10)

    def _search_sync(self, query: str, max_results: int) -> list[dict[str, Any]]:
        return self._client().text(query, max_results=max_results, backend=self.backend)

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Search, retrying rate limits with exponential backoff; raise SearchError when it fails."""
        from ddgs.exceptions import DDGSException

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=1.0, max=self.max_wait),
            retry=retry_if_exception(_is_rate_limit),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    rows = await asyncio.to_thread(self._search_sync, query, max_results)
        except DDGSException as exc:
            if _is_rate_limit(exc):
                raise SearchError(
                    f"search rate-limited by ddgs after {self.attempts} attempts; wait a minute, "
                    "or use another engine (--search searxng)"
                ) from None
            if "no results" in str(exc).lower():
                return []
            reason = network_reason(exc)
            if reason is not None and reason != TIMED_OUT:
                raise Unreachable(f"ddgs could not reach its search engines: {reason}") from None
            raise SearchError(f"ddgs search failed: {reason or brief(str(exc), 200)}") from None
        return [
            SearchHit(
                title=str(r.get("title", "")),
                url=str(r.get("href") or r.get("url", "")),
                snippet=str(r.get("body", "")),
            )
            for r in rows
            if r.get("href") or r.get("url")
        ][:max_results]

    async def aclose(self) -> None:
        """Nothing to close."""
