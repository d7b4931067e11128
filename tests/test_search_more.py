"""Brave and Tavily against real local servers speaking their APIs; the domain filter, pacing and fallback wrappers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

import pytest
from conftest import closed_port
from loopback import Loopback, Reply

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.brave import BraveEngine
from rumination.search.chain import DomainFilter, Fallback, Paced
from rumination.search.errors import RateLimited, parse_retry_after
from rumination.search.tavily import TavilyEngine
from rumination.urls import domain_allowed

BRAVE_KEY = "brave-test-key-123"
TAVILY_KEY = "tvly-test-key-456"


@pytest.fixture
def api(loopback) -> Callable[..., Loopback]:
    """A loopback API server answering every path and method with one status, body (JSON unless bytes) and headers."""

    def start(
        status: int = 200, body: Any = b"", ctype: str = "application/json", headers: dict[str, str] | None = None
    ) -> Loopback:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return loopback(fallback=Reply(status, body, ctype, headers or {}))

    return start


@pytest.fixture
async def engines() -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(kind: str, url: str, key: str | None = "default", **settings: Any) -> Any:
        if kind == "brave":
            engine: Any = BraveEngine(Config(brave_url=url, brave_api_key=BRAVE_KEY if key == "default" else key))
        else:
            engine = TavilyEngine(Config(tavily_url=url, tavily_api_key=TAVILY_KEY if key == "default" else key))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()


BRAVE_OK = {
    "type": "search",
    "query": {"original": "gutenberg"},
    "web": {
        "type": "search",
        "results": [
            {
                "title": "Johannes <strong>Gutenberg</strong> - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Johannes_Gutenberg",
                "description": "<strong>Gutenberg</strong> introduced printing to Europe &amp; more. It&#x27;s old.",
            },
            {"title": "No URL", "description": "dropped"},
            "not a dict",
            {"title": None, "url": "https://example.org/press", "description": None},
            {"title": "Third", "url": "https://example.org/third", "description": "third"},
        ],
    },
}

TAVILY_OK = {
    "query": "gutenberg",
    "answer": None,
    "results": [
        {
            "title": "Johannes Gutenberg",
            "url": "https://en.wikipedia.org/wiki/Johannes_Gutenberg",
            "content": "Gutenberg introduced printing.",
            "score": 0.98,
        },
        {"title": "no url", "content": "dropped"},
        {"title": "Press", "url": "https://example.org/press", "content": None, "score": 0.5},
    ],
}

# --- Brave ------------------------------------------------------------------------------------------------------------


async def test_brave_happy_path(api, engines) -> None:
    server = api(200, BRAVE_OK)
    hits = await engines("brave", server.url("/res/v1/web/search"), user_agent="RuminationTest/1").search(
        "café & co?", 7
    )
    assert hits == [
        SearchHit(
            title="Johannes Gutenberg - Wikipedia",
            url="https://en.wikipedia.org/wiki/Johannes_Gutenberg",
            snippet="Gutenberg introduced printing to Europe & more. It's old.",
        ),
        SearchHit(title="", url="https://example.org/press", snippet=""),
        SearchHit(title="Third", url="https://example.org/third", snippet="third"),
    ]
    (request,) = server.requests
    assert request.method == "GET"
    assert request.path == "/res/v1/web/search"
    assert request.query == {"q": "café & co?", "count": "7"}
    assert request.headers["x-subscription-token"] == BRAVE_KEY
    assert request.headers["accept"] == "application/json"


async def test_brave_truncates_and_caps_count(api, engines) -> None:
    server = api(200, BRAVE_OK)
    engine = engines("brave", server.url("/s"))
    assert [hit.title for hit in await engine.search("q", 1)] == ["Johannes Gutenberg - Wikipedia"]
    await engine.search("q", 50)
    assert [r.query["count"] for r in server.requests] == ["1", "20"]


@pytest.mark.parametrize("body", [{"type": "search", "query": {"original": "zz"}}, {"web": {"results": []}}])
async def test_brave_no_results(api, engines, body: Any) -> None:
    server = api(200, body)
    assert await engines("brave", server.url("/s")).search("zeppelin quantum", 5) == []


@pytest.mark.parametrize("key", [None, "", "   "])
def test_brave_without_key_is_a_config_error(key: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        BraveEngine(Config(brave_api_key=key))
    assert str(info.value) == (
        "--search brave needs an API key: set RUMINATION_BRAVE_API_KEY or brave_api_key in the config file"
    )


def test_brave_key_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RUMINATION_BRAVE_API_KEY", "from-env")
    assert isinstance(BraveEngine(Config()), SearchEngine)


def test_brave_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="http"):
        BraveEngine(Config(brave_api_key=BRAVE_KEY, brave_url="api.search.brave.com/res/v1/web/search"))


# --- Tavily -----------------------------------------------------------------------------------------------------------


async def test_tavily_happy_path(api, engines) -> None:
    server = api(200, TAVILY_OK)
    hits = await engines("tavily", server.url("/search")).search("café & co?", 6)
    assert hits == [
        SearchHit(
            title="Johannes Gutenberg",
            url="https://en.wikipedia.org/wiki/Johannes_Gutenberg",
            snippet="Gutenberg introduced printing.",
        ),
        SearchHit(title="Press", url="https://example.org/press", snippet=""),
    ]
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/search"
    assert request.headers["authorization"] == f"Bearer {TAVILY_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"query": "café & co?", "max_results": 6, "search_depth": "basic"}


async def test_tavily_truncates_and_caps_max_results(api, engines) -> None:
    server = api(200, TAVILY_OK)
    engine = engines("tavily", server.url("/search"))
    assert len(await engine.search("q", 1)) == 1
    await engine.search("q", 50)
    assert [json.loads(r.body)["max_results"] for r in server.requests] == [1, 20]


@pytest.mark.parametrize("key", [None, ""])
def test_tavily_without_key_is_a_config_error(key: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        TavilyEngine(Config(tavily_api_key=key))
    assert "RUMINATION_TAVILY_API_KEY" in str(info.value)
    assert "tavily_api_key" in str(info.value)


async def test_tavily_usage_limit(api, engines) -> None:
    server = api(432, {"detail": {"error": "This request exceeds your plan's set usage limit."}})
    with pytest.raises(SearchError, match="limit") as info:
        await engines("tavily", server.url("/search")).search("q", 5)
    assert not isinstance(info.value, RateLimited)


# --- errors both engines share ----------------------------------------------------------------------------------------

KINDS = [("brave", BRAVE_KEY, "RUMINATION_BRAVE_API_KEY"), ("tavily", TAVILY_KEY, "RUMINATION_TAVILY_API_KEY")]


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key(api, engines, kind: str, key: str, variable: str, status: int) -> None:
    server = api(status, {"error": {"detail": f"bad token {key}"}, "detail": {"error": "Unauthorized"}})
    with pytest.raises(SearchError) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    message = str(info.value)
    assert "API key" in message
    assert variable in message
    assert str(status) in message
    assert key not in message
    assert not isinstance(info.value, RateLimited)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_rate_limited_with_retry_after(api, engines, kind: str, key: str, variable: str) -> None:
    server = api(429, {"error": "slow down"}, headers={"Retry-After": "2"})
    with pytest.raises(RateLimited) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert info.value.retry_after == 2.0
    assert isinstance(info.value, SearchError)
    assert "429" in str(info.value)
    assert "rate" in str(info.value).lower()


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_rate_limited_with_an_http_date(api, engines, kind: str, key: str, variable: str) -> None:
    server = api(429, b"", headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    with pytest.raises(RateLimited) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert info.value.retry_after is not None
    assert 27 <= info.value.retry_after <= 31


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_rate_limited_without_retry_after(api, engines, kind: str, key: str, variable: str) -> None:
    server = api(429, b"Too Many Requests", "text/plain")
    with pytest.raises(RateLimited) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert info.value.retry_after is None


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
@pytest.mark.parametrize("status", [400, 404, 500, 502])
async def test_other_status(api, engines, kind: str, key: str, variable: str, status: int) -> None:
    server = api(status, b"nope", "text/plain")
    with pytest.raises(SearchError) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_other_status_shows_the_api_detail(api, engines, kind: str, key: str, variable: str) -> None:
    body = {"error": {"detail": "Unable to validate request parameter(s)"}, "detail": {"error": "Invalid query"}}
    server = api(422, body)
    with pytest.raises(SearchError) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert "HTTP 422" in str(info.value)
    assert ("parameter" if kind == "brave" else "Invalid query") in str(info.value)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
@pytest.mark.parametrize("body", [b"<html><body>Welcome</body></html>", b"", b"\xff\xfe\x00garbage", b"{not json"])
async def test_non_json_body(api, engines, kind: str, key: str, variable: str, body: bytes) -> None:
    server = api(200, body, "text/html")
    with pytest.raises(SearchError) as info:
        await engines(kind, server.url("/search")).search("q", 5)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
@pytest.mark.parametrize("payload", [[], "results", 42, None, {"results": "x", "web": {"results": 7}}])
async def test_json_of_the_wrong_shape(api, engines, kind: str, key: str, variable: str, payload: Any) -> None:
    server = api(200, payload)
    with pytest.raises(SearchError):
        await engines(kind, server.url("/search")).search("q", 5)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_unreachable(engines, kind: str, key: str, variable: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/search"
    with pytest.raises(SearchError) as info:
        await engines(kind, url).search("q", 5)
    assert "unreachable" in str(info.value)
    assert url in str(info.value)
    assert not isinstance(info.value, RateLimited)


@pytest.mark.parametrize(("kind", "key", "variable"), KINDS)
async def test_ignores_proxy_environment(api, engines, monkeypatch, kind: str, key: str, variable: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = api(200, BRAVE_OK if kind == "brave" else TAVILY_OK)
    assert await engines(kind, server.url("/search")).search("q", 5)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("soon", None), ("nan", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


# --- in-test engines for the wrappers ---------------------------------------------------------------------------------


class ScriptedEngine:
    """An engine answering from a script of hit lists or exceptions (the last step repeats), recording call times."""

    def __init__(self, name: str, script: list[Any]):
        self.name, self.script = name, script
        self.calls: list[float] = []
        self.closed = False

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        self.calls.append(time.monotonic())
        step = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(step, BaseException):
            raise step
        return step[:max_results]

    async def aclose(self) -> None:
        self.closed = True


def hits(*urls: str) -> list[SearchHit]:
    return [SearchHit(title=url, url=url) for url in urls]


# --- DomainFilter -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow", "deny", "expected"),
    [
        ("https://example.com/a", [], [], True),
        ("https://example.com/a", [], ["example.com"], False),
        ("https://news.example.com/a", [], ["example.com"], False),
        ("https://a.b.example.com/a", [], ["example.com"], False),
        ("https://notexample.com/a", [], ["example.com"], True),
        ("https://example.com.evil.org/a", [], ["example.com"], True),
        ("https://www.example.com/a", [], ["example.com"], False),
        ("https://example.com/a", [], ["www.example.com"], False),
        ("https://WWW.Example.COM/a", [], ["example.com"], False),
        ("https://example.com/a", [], ["EXAMPLE.com"], False),
        ("https://example.com./a", [], ["example.com"], False),
        ("https://example.com:8443/a", [], ["example.com"], False),
        ("https://user@example.com/a", [], ["example.com"], False),
        ("https://example.com/a", [], ["*.example.com"], False),
        ("https://example.com/a", [], ["https://Example.com/path"], False),
        ("https://example.com/a", ["example.org"], [], False),
        ("https://example.org/a", ["example.org"], [], True),
        ("https://docs.example.org/a", ["example.org"], [], True),
        ("https://www.example.org/a", ["example.org"], [], True),
        ("https://docs.example.org/a", ["example.org"], ["docs.example.org"], False),
        ("https://api.docs.example.org/a", ["example.org"], ["docs.example.org"], False),
        ("https://blog.example.org/a", ["example.org"], ["docs.example.org"], True),
        ("https://example.org/a", ["example.org"], ["example.org"], False),
        ("https://wiki.org/a", ["example.org", "wiki.org"], ["evil.org"], True),
        ("https://bücher.de/a", ["BÜCHER.de"], [], True),
        ("https://xn--bcher-kva.de/a", ["bücher.de"], [], True),
        ("https://bücher.de/a", [], ["xn--bcher-kva.de"], False),
        ("not a url", [], ["example.com"], True),
        ("not a url", ["example.com"], [], False),
        ("https://[::1/a", ["example.com"], [], False),
        ("https://example.com/a", ["", "  "], [""], True),
    ],
)
def test_domain_allowed(url: str, allow: list[str], deny: list[str], expected: bool) -> None:
    assert domain_allowed(url, allow, deny) is expected
    assert DomainFilter(ScriptedEngine("x", [[]]), allow, deny).allowed(url) is expected


async def test_domain_filter_drops_hits() -> None:
    inner = ScriptedEngine(
        "brave",
        [hits("https://a.example.org/1", "https://spam.com/2", "https://www.example.org/3", "https://other.net/4")],
    )
    engine = DomainFilter(inner, allow=["example.org", "other.net"], deny=["spam.com", "Other.NET"])
    assert engine.name == "brave"
    assert isinstance(engine, SearchEngine)
    assert [hit.url for hit in await engine.search("q", 10)] == ["https://a.example.org/1", "https://www.example.org/3"]
    await engine.aclose()
    assert inner.closed


# --- Paced ------------------------------------------------------------------------------------------------------------


async def test_paced_spaces_calls() -> None:
    inner = ScriptedEngine("brave", [hits("https://a.org/")])
    engine = Paced(inner, min_interval=0.3)
    assert engine.name == "brave"
    assert isinstance(engine, SearchEngine)
    await engine.search("one", 5)
    await engine.search("two", 5)
    assert len(inner.calls) == 2
    assert inner.calls[1] - inner.calls[0] >= 0.25


async def test_paced_spaces_concurrent_calls() -> None:
    inner = ScriptedEngine("brave", [hits("https://a.org/")])
    engine = Paced(inner, min_interval=0.1)
    await asyncio.gather(*(engine.search(str(i), 5) for i in range(3)))
    gaps = [b - a for a, b in zip(inner.calls, inner.calls[1:], strict=False)]
    assert len(gaps) == 2
    assert all(gap >= 0.08 for gap in gaps)


async def test_paced_first_call_is_immediate() -> None:
    inner = ScriptedEngine("brave", [hits("https://a.org/")])
    start = time.monotonic()
    await Paced(inner, min_interval=5.0).search("q", 5)
    assert time.monotonic() - start < 1.0


async def test_paced_retries_after_retry_after() -> None:
    inner = ScriptedEngine("brave", [RateLimited("slow down", retry_after=0.2), hits("https://a.org/")])
    engine = Paced(inner, min_interval=0.0, max_backoff=5.0)
    assert [hit.url for hit in await engine.search("q", 5)] == ["https://a.org/"]
    assert len(inner.calls) == 2
    assert inner.calls[1] - inner.calls[0] >= 0.15


async def test_paced_reraises_a_long_retry_after_at_once() -> None:
    inner = ScriptedEngine("brave", [RateLimited("slow down", retry_after=30.0), hits("https://a.org/")])
    engine = Paced(inner, min_interval=0.0, max_backoff=1.0)
    start = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await engine.search("q", 5)
    assert info.value.retry_after == 30.0
    assert time.monotonic() - start < 0.5
    assert len(inner.calls) == 1


async def test_paced_gives_up_after_two_retries() -> None:
    inner = ScriptedEngine("brave", [RateLimited("slow down", retry_after=0.01)])
    engine = Paced(inner, min_interval=0.0, max_backoff=1.0)
    with pytest.raises(RateLimited):
        await engine.search("q", 5)
    assert len(inner.calls) == 3


async def test_paced_backs_off_exponentially_without_retry_after() -> None:
    slept: list[float] = []
    now = [100.0]

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    inner = ScriptedEngine("brave", [RateLimited("slow down")])
    engine = Paced(inner, min_interval=0.0, max_backoff=3.0, clock=lambda: now[0], sleep=fake_sleep)
    with pytest.raises(RateLimited):
        await engine.search("q", 5)
    assert len(inner.calls) == 3
    assert slept == [1.0, 2.0]
    with pytest.raises(RateLimited):
        await engine.search("q", 5)  # the third strike's wait (4 s, capped at 3) comes before this call
    assert slept[2] == 3.0


async def test_paced_waits_out_a_rate_limit_before_the_next_call() -> None:
    inner = ScriptedEngine("brave", [RateLimited("slow down", retry_after=9.0), hits("https://a.org/")])
    engine = Paced(inner, min_interval=0.0, max_backoff=0.3)
    with pytest.raises(RateLimited):
        await engine.search("q", 5)  # 9 s is beyond max_backoff: re-raised, but the next call still waits 0.3 s
    assert await engine.search("q", 5)
    assert inner.calls[1] - inner.calls[0] >= 0.25


async def test_paced_passes_other_errors_through() -> None:
    inner = ScriptedEngine("brave", [SearchError("unreachable"), hits("https://a.org/")])
    with pytest.raises(SearchError, match="unreachable"):
        await Paced(inner, min_interval=0.0).search("q", 5)
    assert len(inner.calls) == 1


# --- Fallback ---------------------------------------------------------------------------------------------------------


async def test_fallback_uses_the_next_engine() -> None:
    first = ScriptedEngine("brave", [RateLimited("rate-limited", retry_after=None)])
    second = ScriptedEngine("searxng", [hits("https://a.org/", "https://b.org/")])
    engine = Fallback([first, second])
    assert engine.name == "brave→searxng"
    assert isinstance(engine, SearchEngine)
    assert await engine.search("q", 5) == hits("https://a.org/", "https://b.org/")
    assert (len(first.calls), len(second.calls)) == (1, 1)


async def test_fallback_stops_at_the_first_success() -> None:
    first = ScriptedEngine("brave", [hits()])
    second = ScriptedEngine("searxng", [hits("https://a.org/")])
    assert await Fallback([first, second]).search("q", 5) == []
    assert second.calls == []


async def test_fallback_all_fail() -> None:
    engine = Fallback(
        [
            ScriptedEngine("brave", [RateLimited("rate-limited")]),
            ScriptedEngine("tavily", [SearchError("bad key")]),
            ScriptedEngine("searxng", [SearchError("unreachable")]),
        ]
    )
    assert engine.name == "brave→tavily→searxng"
    with pytest.raises(SearchError) as info:
        await engine.search("q", 5)
    assert str(info.value) == "brave: rate-limited; tavily: bad key; searxng: unreachable"


async def test_fallback_does_not_swallow_other_errors() -> None:
    second = ScriptedEngine("searxng", [hits("https://a.org/")])
    with pytest.raises(ZeroDivisionError):
        await Fallback([ScriptedEngine("brave", [ZeroDivisionError()]), second]).search("q", 5)
    assert second.calls == []


async def test_fallback_closes_all_even_when_one_fails() -> None:
    class BadClose(ScriptedEngine):
        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    engines = [BadClose("brave", [[]]), ScriptedEngine("searxng", [[]])]
    with pytest.raises(RuntimeError):
        await Fallback(engines).aclose()
    assert engines[1].closed


def test_fallback_needs_an_engine() -> None:
    with pytest.raises(ValueError):
        Fallback([])


async def test_wrappers_compose(api) -> None:
    server = api(429, b"", headers={"Retry-After": "120"})
    brave = BraveEngine(Config(brave_url=server.url("/s"), brave_api_key=BRAVE_KEY))
    backup = ScriptedEngine("searxng", [hits("https://spam.com/1", "https://example.org/2")])
    engine = Fallback(
        [DomainFilter(Paced(brave, 0.0, max_backoff=1.0), [], ["spam.com"]), DomainFilter(backup, [], ["spam.com"])]
    )
    assert engine.name == "brave→searxng"
    assert [hit.url for hit in await engine.search("q", 5)] == ["https://example.org/2"]
    assert len(server.requests) == 1
    await engine.aclose()
    assert backup.closed
