"""Search errors that wrappers and the browser act on, and the Retry-After parsing the API engines share."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from rumination.neterrors import network_reason
from rumination.search.base import SearchError


class RateLimited(SearchError):
    """The engine refused the call for now (HTTP 429); `retry_after` is the server's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(SearchError):
    """The engine could not be reached at all (no network, a wrong address, nothing listening)."""


def unreachable(service: str, where: str, exc: BaseException) -> Unreachable:
    """The Unreachable error for `service` at `where`, with the network failure in plain words."""
    return Unreachable(f"{service} at {where} is unreachable: {network_reason(exc) or 'could not connect'}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def rate_limited(service: str, retry_after: float | None) -> RateLimited:
    """The RateLimited error for an HTTP 429 from `service`, mentioning the wait when the server gave one."""
    hint = f"; retry after {retry_after:g}s" if retry_after is not None else ""
    return RateLimited(f"{service} is rate-limiting requests (HTTP 429{hint})", retry_after)
