"""Wrappers around search engines: domain filtering, pacing with backoff, and falling back to other engines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.errors import RateLimited, Unreachable
from rumination.urls import domain_allowed, normalize_domains


class DomainFilter:
    """Drop the hits of `engine` whose domain the allow and deny lists rule out."""

    def __init__(self, engine: SearchEngine, allow: Iterable[str], deny: Iterable[str]):
        self.engine = engine
        self.name = engine.name
        self.allow, self.deny = normalize_domains(allow), normalize_domains(deny)

    def allowed(self, url: str) -> bool:
        """Whether `url` passes this filter's lists."""
        return domain_allowed(url, self.allow, self.deny)

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The wrapped engine's hits that pass the lists (possibly fewer than `max_results`)."""
        hits = await self.engine.search(query, max_results)
        return [hit for hit in hits if self.allowed(hit.url)][:max_results]

    async def aclose(self) -> None:
        """Close the wrapped engine."""
        await self.engine.aclose()


class Paced:
    """Start calls to `engine` at most once per `min_interval` seconds, backing off and retrying when rate-limited."""

    def __init__(
        self,
        engine: SearchEngine,
        min_interval: float,
        max_backoff: float = 60.0,
        retries: int = 2,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.engine = engine
        self.name = engine.name
        self.min_interval, self.max_backoff, self.retries = max(0.0, min_interval), max(0.0, max_backoff), retries
        self._clock, self._sleep = clock, sleep
        self._lock = asyncio.Lock()
        self._next_start = float("-inf")  # no call may start before this clock reading
        self._strikes = 0  # consecutive rate limits, for the exponential backoff

    async def _wait_turn(self) -> None:
        async with self._lock:
            # Loop: a rate limit met by a call in flight may push the next start further while we sleep.
            while (delay := self._next_start - self._clock()) > 0:
                await self._sleep(delay)
            self._next_start = self._clock() + self.min_interval

    def _backoff(self, exc: RateLimited) -> float:
        self._strikes += 1
        if exc.retry_after is not None:
            wait = min(exc.retry_after, self.max_backoff)
        else:
            wait = min(max(self.min_interval, 1.0) * 2 ** (self._strikes - 1), self.max_backoff)
        self._next_start = max(self._next_start, self._clock() + wait)
        return wait

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The wrapped engine's hits, after waiting for this engine's turn; RateLimited when retries run out."""
        attempt = 0
        while True:
            await self._wait_turn()
            try:
                hits = await self.engine.search(query, max_results)
            except RateLimited as exc:
                self._backoff(exc)
                too_long = exc.retry_after is not None and exc.retry_after > self.max_backoff
                if too_long or attempt >= self.retries:
                    raise
                attempt += 1
                continue
            self._strikes = 0
            return hits

    async def aclose(self) -> None:
        """Close the wrapped engine."""
        await self.engine.aclose()


class Fallback:
    """Try engines in order and return the first one's hits that does not fail."""

    def __init__(self, engines: list[SearchEngine]):
        if not engines:
            raise ValueError("Fallback needs at least one engine")
        self.engines = list(engines)
        self.name = "→".join(engine.name for engine in self.engines)

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The first success; SearchError with every engine's reason when all fail (Unreachable when none answered)."""
        errors: list[SearchError] = []
        reasons = []
        for engine in self.engines:
            try:
                return await engine.search(query, max_results)
            except SearchError as exc:
                errors.append(exc)
                # Engines that name themselves in their messages are not named twice.
                named = str(exc).lower().startswith(engine.name.lower())
                reasons.append(str(exc) if named else f"{engine.name}: {exc}")
        error = Unreachable if all(isinstance(e, Unreachable) for e in errors) else SearchError
        raise error("; ".join(reasons))

    async def aclose(self) -> None:
        """Close every engine, even when one of them fails to close."""
        first: BaseException | None = None
        for engine in self.engines:
            try:
                await engine.aclose()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
