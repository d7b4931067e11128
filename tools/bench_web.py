"""Benchmark the web layer against a local site with injected latency, side by side in one run.

    python tools/bench_web.py [--latency 0.3] [--think 1.0] [--rounds 8] [--pages 100]

Prints `name=value` lines: mean click latency without and with prefetch and their ratio
(`click_prefetch_speedup=`), and the worst event-loop lag while 100 pages are fetched and extracted
(`max_loop_lag_ms=`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def serve(latency: float) -> ThreadingHTTPServer:
    """Pages under /p/N answer after `latency` seconds; /search answers at once with 5 of them."""

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


async def loop_lag(base: str, pages: int, cache: Path) -> tuple[float, float]:
    """Worst lateness of a 10 ms ticker while `pages` pages are fetched and extracted; and pages/s."""
    config = Config(allow_private_network=True, robots_txt=False, page_cache=False, cache_dir=cache)
    fetcher = WebFetcher(config)
    worst, done = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - expected)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(fetcher.fetch(f"{base}/p/{10_000 + i}") for i in range(pages)))
    elapsed = time.perf_counter() - started
    done = True
    await tick
    await fetcher.aclose()
    return worst, pages / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds each page takes to answer")
    parser.add_argument("--think", type=float, default=1.0, help="seconds the model thinks before clicking")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--pages", type=int, default=100)
    args = parser.parse_args()
    server = serve(args.latency)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        without = await click_latency(base, 0, args.rounds, args.think, 0, Path(tmp) / "a")
        with_prefetch = await click_latency(base, 3, args.rounds, args.think, 1000, Path(tmp) / "b")
        lag, rate = await loop_lag(base, args.pages, Path(tmp) / "c")
    server.shutdown()
    print(f"page_latency_s={args.latency}")
    print(f"think_s={args.think}")
    print(f"click_ms_no_prefetch={without * 1000:.1f}")
    print(f"click_ms_prefetch={with_prefetch * 1000:.1f}")
    print(f"click_prefetch_speedup={without / max(with_prefetch, 1e-9):.1f}")
    print(f"pages_extracted={args.pages}")
    print(f"pages_per_s={rate:.1f}")
    print(f"max_loop_lag_ms={lag * 1000:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
