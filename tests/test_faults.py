"""Fault tolerance of the fetch path: resets, drips, and a 1,000-fetch soak with flat sockets and memory."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import zlib
from collections import Counter

import pytest
from loopback import Exchange, Loopback, Reply

from rumination.web.base import FetchError
from rumination.web.fetch import FetchPolicy, guarded_get, make_client

PAGE = b"<html><head><title>ok</title></head><body><p>" + b"printing press " * 200 + b"</p></body></html>"


def _truncated_by_a_reset(exchange: Exchange) -> None:
    """Declare 10,000 bytes, send 100, then reset the connection."""
    exchange.send_head(200, "text/html", length=10_000)
    exchange.wfile.write(PAGE[:100])
    exchange.wfile.flush()
    exchange.reset()


def _reset_once(exchange: Exchange) -> None:
    """Reset mid-body the first time, answer in full afterwards."""
    if exchange.hit == 1:
        return _truncated_by_a_reset(exchange)
    return exchange.send(200, PAGE, "text/html")


def _drip(exchange: Exchange) -> None:
    """Declare 1,000 bytes and send one every half second (the client gives up: that is the point)."""
    exchange.send_head(200, "text/html", length=1000)
    exchange.drip([b"x"] * 1000, every=0.5)


def _huge(exchange: Exchange) -> None:
    """Declare a 2 GB body, then reset without sending any of it."""
    exchange.send_head(200, "text/html", length=2_000_000_000)
    exchange.reset()


def _raw_deflate() -> Reply:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return Reply(200, packer.compress(PAGE) + packer.flush(), "text/html", {"Content-Encoding": "deflate"})


FAULTS = {
    "/ok": Reply(200, PAGE, "text/html"),
    "/missing": Reply(404, b"", "text/html"),
    "/busy": Reply(503, b"", "text/html", {"Retry-After": "0"}),
    "/reset": _truncated_by_a_reset,
    "/reset-once": _reset_once,
    "/drip": _drip,
    "/raw-deflate": _raw_deflate(),
    "/multi-gzip": Reply(
        200, gzip.compress(PAGE[:100]) + gzip.compress(PAGE[100:]), "text/html", {"Content-Encoding": "gzip"}
    ),
    "/bad-retry-after": Reply(503, b"", None, {"Retry-After": "\u00b2"}),
    "/to-denied": Reply(302, b"", "text/html", {"Location": "http://tracker.denied.test/collect?data=secret"}),
    "/huge": _huge,
}


@pytest.fixture
def faults(loopback) -> Loopback:
    """A loopback server with one path per fault (HTTP/1.1, keep-alive); 404 elsewhere."""
    return loopback(FAULTS, fallback=Reply(404, b"", "text/html"))


POLICY = FetchPolicy(allow_private=True, timeout=10.0, max_bytes=200_000)


async def test_reset_mid_body_is_retried_and_recovers(faults):
    async with make_client("test") as client:
        raw = await guarded_get(client, faults.url("/reset-once"), POLICY)
    assert raw.body == PAGE and faults.hits["/reset-once"] == 2


async def test_reset_every_time_is_reported_after_the_retries(faults):
    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, faults.url("/reset"), POLICY)
    assert info.value.kind == "network" and faults.hits["/reset"] == POLICY.retries + 1


async def test_slow_drip_hits_the_total_deadline(faults):
    started = time.monotonic()
    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, faults.url("/drip"), FetchPolicy(allow_private=True, timeout=2.0))
    assert info.value.kind == "timeout" and time.monotonic() - started < 4


async def test_two_gigabyte_declared_body_is_refused_unread(faults):
    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, faults.url("/huge"), POLICY)
    assert info.value.kind == "too_large"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
async def test_soak_1000_fetches_against_a_fault_mix_leaks_nothing(faults):
    mix = ["/ok"] * 5 + ["/missing", "/busy", "/reset", "/huge"]
    policy = FetchPolicy(allow_private=True, timeout=5.0, max_bytes=200_000, retries=1)
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(20)

    async def one(client, i: int) -> None:
        async with limit:
            try:
                await guarded_get(client, faults.url(f"{mix[i % len(mix)]}?n={i}"), policy)
                outcomes["ok"] += 1
            except FetchError as exc:
                outcomes[exc.kind] += 1

    async with make_client("test") as client:
        await asyncio.gather(*(one(client, i) for i in range(200)))  # warm up pools and caches
        fds, rss = _open_fds(), _rss_mb()
        await asyncio.gather(*(one(client, i) for i in range(200, 1000)))
        grown_fds, grown_rss = _open_fds() - fds, _rss_mb() - rss
    assert sum(outcomes.values()) == 1000
    assert outcomes["ok"] == 1000 * 5 // 9 + 1 and outcomes["http"] > 0 and outcomes["network"] > 0
    assert grown_fds <= 5, f"{grown_fds} more open file descriptors after 800 fetches"
    assert grown_rss < 40, f"memory grew by {grown_rss:.0f} MB over 800 fetches"
    assert _open_fds() <= fds + 5  # the client is closed: its sockets are gone


@pytest.mark.parametrize("path", ["/raw-deflate", "/multi-gzip"])
async def test_raw_deflate_and_multi_member_gzip_decode(faults, path):
    async with make_client("test") as client:
        raw = await guarded_get(client, faults.url(path), POLICY)
    assert raw.body == PAGE and not raw.truncated


async def test_a_malformed_retry_after_is_a_fetch_error_not_a_crash(faults):
    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, faults.url("/bad-retry-after"), POLICY)
    assert info.value.kind == "http" and "503" in str(info.value)


async def test_a_redirect_into_a_denied_domain_is_refused(faults):
    policy = FetchPolicy(allow_private=True, deny_domains=("denied.test",))
    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, faults.url("/to-denied"), policy)
    assert info.value.kind == "refused" and "denied domain" in str(info.value)
