"""Readable one-line reasons for network failures, whichever library raised them."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

NO_DNS = "the host name could not be resolved (no network, or no such host)"
REFUSED = "the connection was refused"
NO_ROUTE = "the network is unreachable"
TIMED_OUT = "the connection timed out"
NO_CONNECTION = "could not connect"

# Substrings of messages from libraries that only hand over text (ddgs wraps its client's errors in strings).
_PHRASES = (
    (
        NO_DNS,
        (
            "name or service not known",
            "temporary failure in name resolution",
            "nodename nor servname",
            "no address associated",
            "getaddrinfo failed",
            "dnserror",
            "dnstimeout",
            "dns error",
            "error resolving dns",
        ),
    ),
    (REFUSED, ("connection refused", "actively refused", "connect call failed")),
    (NO_ROUTE, ("network is unreachable", "no route to host", "host is unreachable")),
    (TIMED_OUT, ("timed out", "timeout")),
    (NO_CONNECTION, ("all connection attempts failed", "connecterror", "tcp connect error", "connection reset")),
)
_ERRNOS = {
    errno.ECONNREFUSED: REFUSED,
    errno.ENETUNREACH: NO_ROUTE,
    errno.EHOSTUNREACH: NO_ROUTE,
    errno.ETIMEDOUT: TIMED_OUT,
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and exceptions carried as arguments (as ddgs re-raises them), once each."""
    todo, seen = [exc], set()
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__, *current.args) if isinstance(e, BaseException)]


def network_reason(exc: BaseException) -> str | None:
    """Why a connection failed, in plain words, or None when `exc` is not a recognisable network failure."""
    chain = list(_chain(exc))
    for current in chain:
        if isinstance(current, socket.gaierror):
            return NO_DNS
        if isinstance(current, OSError) and current.errno in _ERRNOS:
            return _ERRNOS[current.errno]
    for current in chain:
        text = f"{type(current).__name__} {current}".lower()
        for reason, phrases in _PHRASES:
            if any(phrase in text for phrase in phrases):
                return reason
    return None


def brief(text: str, limit: int = 160) -> str:
    """`text` on one line, cut at a word boundary with an ellipsis when longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " " and " " in cut:  # the cut falls inside a word: drop that word
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:([{") + "…"
