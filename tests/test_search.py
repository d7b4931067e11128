"""Search engines: SearXNG against real local servers, ddgs with an injected client (no network)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import closed_port
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException
from localweb import LocalWeb
from loopback import Loopback, Reply

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.registry import search_engines
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.ddgs_engine import DdgsEngine
from rumination.search.searxng import SearxngEngine


@pytest.fixture
def searx_answering(loopback) -> Callable[..., Loopback]:
    """A loopback server answering every path with one status, body (JSON unless bytes) and Content-Type."""

    def start(status: int = 200, body: Any = b"", ctype: str = "application/json") -> Loopback:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return loopback(fallback=Reply(status, body, ctype))

    return start


@pytest.fixture
async def searxng() -> AsyncIterator[Callable[..., SearxngEngine]]:
    made: list[SearxngEngine] = []

    def make(base: str, **settings: Any) -> SearxngEngine:
        engine = SearxngEngine(Config(search="searxng", searxng_url=base, **settings))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()


# --- SearXNG against the local site -----------------------------------------------------------------------------------


async def test_searxng_maps_hits(web: LocalWeb, searxng) -> None:
    hits = await searxng(web.base).search("gutenberg movable type", 10)
    assert hits[0] == SearchHit(
        title="Johannes Gutenberg and movable type",
        url=web.url("/gutenberg.html"),
        snippet="Gutenberg introduced printing with movable metal type to Europe around 1440.",
    )
    assert all(isinstance(hit, SearchHit) and hit.url.startswith(web.base) for hit in hits)
    assert web.hits["/search"] == 1


async def test_searxng_respects_max_results(web: LocalWeb, searxng) -> None:
    engine = searxng(web.base)
    everything = await engine.search("printing presses", 10)
    assert len(everything) == 4
    assert await engine.search("printing", 2) == everything[:2]
    assert len(await engine.search("printing", 1)) == 1


async def test_searxng_no_results(web: LocalWeb, searxng) -> None:
    assert await searxng(web.base).search("zeppelin quantum", 10) == []
    assert web.hits["/search"] == 1


async def test_searxng_base_with_trailing_slash(web: LocalWeb, searxng) -> None:
    hits = await searxng(web.base + "/").search("spread", 5)
    assert [hit.url for hit in hits] == [web.url("/spread.html")]


async def test_searxng_ignores_proxy_environment(web: LocalWeb, searxng, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    hits = await searxng(web.base).search("gutenberg", 3)
    assert hits
    assert web.hits["/search"] == 1


# --- SearXNG against servers that misbehave ------------------------------------------------------------------------


async def test_searxng_sends_query_json_format_and_user_agent(searx_answering, searxng) -> None:
    server = searx_answering(200, {"results": []})
    await searxng(server.base, user_agent="RuminationTest/1").search("café & co?", 5)
    (request,) = server.requests
    assert request.path == "/search"
    assert request.query == {"q": "café & co?", "format": "json"}
    assert request.headers["User-Agent"] == "RuminationTest/1"


async def test_searxng_403_explains_the_json_setting(searx_answering, searxng) -> None:
    server = searx_answering(403, b"Forbidden", "text/html")
    with pytest.raises(SearchError) as info:
        await searxng(server.base).search("gutenberg", 5)
    assert "json" in str(info.value)
    assert "settings.yml" in str(info.value)


async def test_searxng_429_is_rate_limiting(searx_answering, searxng) -> None:
    server = searx_answering(429, b"Too Many Requests", "text/plain")
    with pytest.raises(SearchError) as info:
        await searxng(server.base).search("gutenberg", 5)
    assert "429" in str(info.value)
    assert "rate" in str(info.value).lower()


@pytest.mark.parametrize("status", [404, 500, 502, 302])
async def test_searxng_other_status(searx_answering, searxng, status: int) -> None:
    server = searx_answering(status, b"nope", "text/plain")
    with pytest.raises(SearchError) as info:
        await searxng(server.base).search("gutenberg", 5)
    assert f"HTTP {status}" in str(info.value)


async def test_searxng_unreachable(searxng) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SearchError) as info:
        await searxng(base).search("gutenberg", 5)
    assert "unreachable" in str(info.value)
    assert base in str(info.value)


@pytest.mark.parametrize("body", [b"<html><body>SearXNG</body></html>", b"", b"\xff\xfe\x00garbage", b"{not json"])
async def test_searxng_non_json_body(searx_answering, searxng, body: bytes) -> None:
    server = searx_answering(200, body, "text/html")
    with pytest.raises(SearchError) as info:
        await searxng(server.base).search("gutenberg", 5)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("payload", [[], [{"url": "https://a.example/"}], "results", 42, None])
async def test_searxng_json_that_is_not_an_object(searx_answering, searxng, payload: Any) -> None:
    """Valid JSON of the wrong shape must be a SearchError, not an AttributeError."""
    server = searx_answering(200, payload)
    with pytest.raises(SearchError):
        await searxng(server.base).search("gutenberg", 5)


@pytest.mark.parametrize("results", [None, "oops", 7, {"url": "https://a.example/"}])
async def test_searxng_results_field_of_the_wrong_type(searx_answering, searxng, results: Any) -> None:
    """A `results` that is not a list gives no hits or a SearchError, never a TypeError."""
    server = searx_answering(200, {"results": results})
    try:
        hits = await searxng(server.base).search("gutenberg", 5)
    except SearchError:
        return
    assert hits == []


async def test_searxng_skips_malformed_rows(searx_answering, searxng) -> None:
    rows = [
        "not a dict",
        {"title": "no url"},
        {"url": "", "title": "empty url"},
        {"url": "https://a.example/", "title": None, "content": None},
        {"url": "https://b.example/", "title": "B", "content": "about B"},
    ]
    server = searx_answering(200, {"results": rows})
    hits = await searxng(server.base).search("gutenberg", 10)
    assert hits == [
        SearchHit(title="", url="https://a.example/", snippet=""),
        SearchHit(title="B", url="https://b.example/", snippet="about B"),
    ]


def test_searxng_without_url_is_a_config_error() -> None:
    config = Config(search="searxng")
    with pytest.raises(ConfigError, match="searxng-url"):
        SearxngEngine(config)
    with pytest.raises(ConfigError):
        search_engines.get(config.search)(config)


@pytest.mark.parametrize("url", ["localhost:8888", "ftp://searx.example/", "searx.example"])
def test_searxng_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="http"):
        SearxngEngine(Config(search="searxng", searxng_url=url))


async def test_engines_satisfy_the_protocol(web: LocalWeb, searxng) -> None:
    assert isinstance(searxng(web.base), SearchEngine)
    engine = DdgsEngine(Config(), client_factory=lambda: FakeDDGS([]))
    assert isinstance(engine, SearchEngine)
    assert await engine.aclose() is None


# --- ddgs with an injected client ---------------------------------------------------------------------------------


class FakeDDGS:
    """Stands in for ddgs.DDGS: answers `.text` from a script of rows or exceptions, and records each call."""

    def __init__(self, script: list[Any], calls: list[dict[str, Any]] | None = None):
        self.script, self.calls = script, calls if calls is not None else []

    def text(self, query: str, max_results: int | None = None, backend: str = "auto") -> list[dict[str, Any]]:
        self.calls.append(
            {"query": query, "max_results": max_results, "backend": backend, "thread": threading.current_thread()}
        )
        step = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(step, BaseException):
            raise step
        return step


def ddgs_engine(script: list[Any], **settings: Any) -> tuple[DdgsEngine, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    engine = DdgsEngine(Config(**settings), client_factory=lambda: FakeDDGS(script, calls), attempts=4, max_wait=0.01)
    return engine, calls


ROWS = [
    {"title": "Gutenberg", "href": "https://en.wikipedia.org/wiki/Johannes_Gutenberg", "body": "German inventor."},
    {"title": "No link at all", "body": "dropped"},
    {"title": "Printing press", "url": "https://example.org/press", "body": ""},
    {"title": "", "href": "https://example.org/untitled"},
]


async def test_ddgs_maps_rows() -> None:
    engine, calls = ddgs_engine([ROWS], ddgs_backend="bing")
    hits = await engine.search("gutenberg", 10)
    assert hits == [
        SearchHit(
            title="Gutenberg", url="https://en.wikipedia.org/wiki/Johannes_Gutenberg", snippet="German inventor."
        ),
        SearchHit(title="Printing press", url="https://example.org/press", snippet=""),
        SearchHit(title="", url="https://example.org/untitled", snippet=""),
    ]
    ((call,),) = [calls]
    assert (call["query"], call["max_results"], call["backend"]) == ("gutenberg", 10, "bing")


async def test_ddgs_respects_max_results() -> None:
    rows = [{"title": f"T{i}", "href": f"https://example.org/{i}", "body": ""} for i in range(20)]
    engine, calls = ddgs_engine([rows])
    hits = await engine.search("printing", 3)
    assert [hit.url for hit in hits] == ["https://example.org/0", "https://example.org/1", "https://example.org/2"]
    assert calls[0]["max_results"] == 3


async def test_ddgs_retries_rate_limits() -> None:
    engine, calls = ddgs_engine([RatelimitException("202 Ratelimit"), RatelimitException("202 Ratelimit"), ROWS[:1]])
    hits = await engine.search("gutenberg", 5)
    assert [hit.title for hit in hits] == ["Gutenberg"]
    assert len(calls) == 3


async def test_ddgs_always_rate_limited() -> None:
    engine, calls = ddgs_engine([RatelimitException("202 Ratelimit")])
    with pytest.raises(SearchError) as info:
        await engine.search("gutenberg", 5)
    assert "rate-limited" in str(info.value)
    assert "4 attempts" in str(info.value)
    assert len(calls) == 4


@pytest.mark.parametrize("error", [DDGSException("boom"), TimeoutException("timed out")])
async def test_ddgs_other_errors_are_not_retried(error: DDGSException) -> None:
    engine, calls = ddgs_engine([error, ROWS])
    with pytest.raises(SearchError) as info:
        await engine.search("gutenberg", 5)
    assert str(error) in str(info.value)
    assert len(calls) == 1


async def test_ddgs_no_results_is_an_empty_list() -> None:
    engine, calls = ddgs_engine([DDGSException("No results found.")])
    assert await engine.search("zeppelin quantum", 5) == []
    assert len(calls) == 1


async def test_ddgs_runs_off_the_event_loop() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    class SlowFake(FakeDDGS):
        def text(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            rows = super().text(*args, **kwargs)
            threading.Event().wait(0.3)  # a blocking call, as the real ddgs makes
            return rows

    calls: list[dict[str, Any]] = []
    engine = DdgsEngine(Config(), client_factory=lambda: SlowFake([ROWS], calls), attempts=1, max_wait=0.01)
    task = asyncio.create_task(ticker())
    hits = await engine.search("gutenberg", 5)
    stop.set()
    await task
    assert len(hits) == 3
    assert calls[0]["thread"] is not threading.main_thread()
    assert calls[0]["thread"] is not threading.current_thread()
    assert ticks >= 5  # the loop kept running while the search blocked its thread
