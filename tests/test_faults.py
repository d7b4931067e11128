"""Fault tolerance of the fetch path: resets, drips, and a 1,000-fetch soak with flat sockets and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rumination.web.base import FetchError
from rumination.web.fetch import FetchPolicy, guarded_get, make_client

PAGE = b"<html><head><title>ok</title></head><body><p>" + b"printing press " * 200 + b"</p></body></html>"


class _Faults(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""

    def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        path = self.path.split("?")[0]
        with server.lock:
            server.hits[self.path] += 1
            hit = server.hits[self.path]
        if path == "/ok":
            self._headers(200, len(PAGE))
            self.wfile.write(PAGE)
        elif path == "/missing":
            self._headers(404, 0)
        elif path == "/busy":
            self._headers(503, 0, {"Retry-After": "0"})
        elif path == "/reset" or (path == "/reset-once" and hit == 1):
            self._headers(200, 10_000)
            self.wfile.write(PAGE[:100])
            self.wfile.flush()
            self._reset()
        elif path == "/reset-once":
            self._headers(200, len(PAGE))
            self.wfile.write(PAGE)
        elif path == "/drip":
            self._headers(200, 1000)
            with contextlib.suppress(OSError):  # the client gives up: that is the point
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
        elif path in ("/raw-deflate", "/multi-gzip"):
            import gzip
            import zlib

            if path == "/raw-deflate":
                packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
                body, encoding = packer.compress(PAGE) + packer.flush(), "deflate"
            else:
                body, encoding = gzip.compress(PAGE[:100]) + gzip.compress(PAGE[100:]), "gzip"
            self._headers(200, len(body), {"Content-Encoding": encoding})
            self.wfile.write(body)
        elif path == "/bad-retry-after":
            self.send_response(503)
            self.send_header("Retry-After", "\u00b2")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-denied":
            self._headers(302, 0, {"Location": "http://tracker.denied.test/collect?data=secret"})
        elif path == "/huge":
            self._headers(200, 2_000_000_000)
            self._reset()
        else:
            self._headers(404, 0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Faults)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        """Resets and hang-ups are the point of these tests."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def faults():
    server = _Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


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
