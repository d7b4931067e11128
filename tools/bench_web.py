"""Benchmark the web layer against a local site with injected latency, side by side in one run.

    python tools/bench_web.py [--latency 0.3] [--think 1.0] [--rounds 8] [--pages 100] [--big-pages 20]

Prints `name=value` lines: mean click latency without and with prefetch and their ratio
(`click_prefetch_speedup=`); then 20 pages of 5 MB (every tenth one nested lists that trafilatura takes
far longer than its time limit on) fetched and extracted, as many at a time as there are extraction workers:
how many went over their limit or fell back to plain text, peak memory of this process and of the largest
worker, the 95th percentile of their fetch times (`big_page_p95_s=`), and last the worst event-loop lag
while the 100 small and the big pages were fetched and extracted (`max_loop_lag_ms=`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import tempfile
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import load_tokenizer
from rumination.browser import Browser
from rumination.config import Config
from rumination.search.searxng import SearxngEngine
from rumination.tokens import truncate_tokens
from rumination.web.fetcher import WebFetcher
from rumination.web.worker import close_pools, default_size

PARAGRAPH = (
    "<p>" + "The printing press spread across Europe within decades, changing how ideas travelled. " * 12 + "</p>"
)


def page(n: int) -> bytes:
    """A realistic article page: navigation, a long article, a footer."""
    body = "".join(PARAGRAPH for _ in range(30))
    return (
        f"<html><head><title>Article {n}</title></head><body><nav>Home | About | Archive</nav><article>"
        f"<h1>Article {n}</h1>{body}</article><footer>Footer links</footer></body></html>"
    ).encode()


BIG_PAGE_BYTES = 5_000_000


def big_page(n: int) -> bytes:
    """A 5 MB page: an article of paragraphs, link lists and tables; every tenth one deeply nested lists instead."""
    if n % 10 == 9:
        unit = "<ul><li>" * 100 + f"item {n} of a deeply nested list " + "</li></ul>" * 100
    else:
        links = "".join(f"<li><a href='/big/{n}/{i}'>Related article {i}</a></li>" for i in range(20))
        rows = "".join(f"<tr><td>{1450 + i}</td><td>Press number {i}</td><td>Mainz</td></tr>" for i in range(20))
        unit = f"{PARAGRAPH * 3}<ul>{links}</ul><table>{rows}</table>"
    head, tail = f"<html><head><title>Big page {n}</title></head><body><article><h1>Big page {n}</h1>", "</article>"
    return (head + unit * ((BIG_PAGE_BYTES - len(head) - len(tail)) // len(unit)) + tail).encode()


def serve(latency: float) -> ThreadingHTTPServer:
    """Pages under /p/N answer after `latency` seconds, /big/N at once; /search answers at once with 5 /p/ pages."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/search":
                start = int(parse_qs(parts.query)["q"][0].split()[-1]) * 10
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                results = [
                    {"url": f"{base}/p/{start + i}", "title": f"Article {start + i}", "content": "..."}
                    for i in range(5)
                ]
                body, ctype = json.dumps({"results": results}).encode(), "application/json"
            elif parts.path.startswith("/big/"):
                body, ctype = big_page(int(parts.path.rsplit("/", 1)[-1])), "text/html; charset=utf-8"
            else:
                time.sleep(latency)
                body, ctype = page(int(parts.path.rsplit("/", 1)[-1])), "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _loopback_plays_the_public_web() -> None:
    """Prefetch never reaches a private address: the benchmark's loopback site stands in for the public web."""
    import ipaddress

    from rumination.web import guard

    public, real = ipaddress.ip_address("127.0.0.1"), guard.is_public_address
    guard.is_public_address = lambda ip: guard.unwrap(ip) == public or real(ip)


async def click_latency(base: str, prefetch: int, rounds: int, think: float, offset: int, cache: Path) -> float:
    """Mean seconds from click to observation when the model thinks `think` s between search and click."""
    config = Config(searxng_url=base, allow_private_network=True, robots_txt=False, cache_dir=cache)
    tokenizer = load_tokenizer(str(bundled_tokenizer_dir()))
    fetcher, engine = WebFetcher(config), SearxngEngine(config)
    browser = Browser(config, engine, fetcher, partial(truncate_tokens, tokenizer), prefetch=prefetch)
    total = 0.0
    try:
        for i in range(rounds):
            await browser.search(f"printing round {offset + i}")
            await asyncio.sleep(think)  # the model reads the results and thinks
            started = time.perf_counter()
            result = await browser.click(0)
            total += time.perf_counter() - started
            assert result.ok, result.observation
    finally:
        await browser.aclose()
        await fetcher.aclose()
        await engine.aclose()
    return total / rounds


class LoopLag:
    """The worst lateness of a 10 ms ticker on the running loop, from start() to stop()."""

    def __init__(self) -> None:
        self.worst, self._done = 0.0, False
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._done:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - expected)

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> float:
        self._done = True
        if self._task is not None:
            await self._task
        return self.worst


async def loop_lag(base: str, pages: int, cache: Path) -> tuple[float, float]:
    """Worst lateness of a 10 ms ticker while `pages` pages are fetched and extracted; and pages/s."""
    config = Config(allow_private_network=True, robots_txt=False, page_cache=False, cache_dir=cache)
    fetcher = WebFetcher(config)
    lag = LoopLag()
    lag.start()
    started = time.perf_counter()
    await asyncio.gather(*(fetcher.fetch(f"{base}/p/{10_000 + i}") for i in range(pages)))
    elapsed = time.perf_counter() - started
    worst = await lag.stop()
    await fetcher.aclose()
    return worst, pages / elapsed


async def big_pages(base: str, pages: int, cache: Path) -> tuple[list[float], int, float]:
    """Fetch times of `pages` 5 MB pages (as many at a time as there are workers), how many fell back, loop lag."""
    config = Config(allow_private_network=True, robots_txt=False, page_cache=False, cache_dir=cache)
    fetcher, gate, lag = WebFetcher(config), asyncio.Semaphore(default_size()), LoopLag()

    async def one(n: int) -> tuple[float, bool]:
        async with gate:
            started = time.perf_counter()
            page = await fetcher.fetch(f"{base}/big/{n}")
            return time.perf_counter() - started, "[plain text: " in page.text

    lag.start()
    results = await asyncio.gather(*(one(n) for n in range(pages)))
    worst = await lag.stop()
    await fetcher.aclose()
    return [seconds for seconds, _ in results], sum(fallback for _, fallback in results), worst


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds each page takes to answer")
    parser.add_argument("--think", type=float, default=1.0, help="seconds the model thinks before clicking")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--big-pages", type=int, default=20, help="pages of 5 MB")
    args = parser.parse_args()
    server = serve(args.latency)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _loopback_plays_the_public_web()
    with tempfile.TemporaryDirectory() as tmp:
        without = await click_latency(base, 0, args.rounds, args.think, 0, Path(tmp) / "a")
        with_prefetch = await click_latency(base, 3, args.rounds, args.think, 1000, Path(tmp) / "b")
        lag, rate = await loop_lag(base, args.pages, Path(tmp) / "c")
        times, fallbacks, big_lag = await big_pages(base, args.big_pages, Path(tmp) / "d")
    server.shutdown()
    close_pools()  # the workers are reaped: their peak memory is counted in RUSAGE_CHILDREN
    limit = Config().extract_timeout + 2.0  # extraction's limit, plus the download, decoding and the fallback
    print(f"page_latency_s={args.latency}")
    print(f"think_s={args.think}")
    print(f"click_ms_no_prefetch={without * 1000:.1f}")
    print(f"click_ms_prefetch={with_prefetch * 1000:.1f}")
    print(f"click_prefetch_speedup={without / max(with_prefetch, 1e-9):.1f}")
    print(f"pages_extracted={args.pages}")
    print(f"pages_per_s={rate:.1f}")
    print(f"big_pages={len(times)}")
    print(f"big_page_bytes={BIG_PAGE_BYTES}")
    print(f"big_pages_plain_text={fallbacks}")
    print(f"big_pages_over_limit={sum(t > limit for t in times)}")
    print(f"big_page_median_s={sorted(times)[len(times) // 2] if times else 0:.2f}")
    print(f"big_page_max_s={max(times, default=0):.2f}")
    print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    print(f"peak_worker_rss_mb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")
    print(f"big_page_p95_s={p95(times) if times else 0:.2f}")
    print(f"max_loop_lag_ms={max(lag, big_lag) * 1000:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
