"""A search that cannot reach its engine says so in one readable line, for the model and for the user."""

from __future__ import annotations

import time
from typing import Any

import primp
import pytest
from conftest import closed_port
from ddgs import DDGS
from ddgs.exceptions import DDGSException

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import load_tokenizer
from rumination.browser import Browser, ToolResult
from rumination.config import Config
from rumination.factory import make_engine, make_fetcher
from rumination.neterrors import brief
from rumination.search.base import SearchEngine, SearchError
from rumination.search.chain import Fallback
from rumination.search.ddgs_engine import DdgsEngine
from rumination.search.errors import Unreachable
from rumination.search.searxng import SearxngEngine

# What must never reach the model or the terminal: resolver and library internals.
INTERNALS = ("Errno", "ConnectError", "httpx", "httpcore", "DNSError", "Query {", "os error", "gaierror", "Traceback")
NO_DNS = "the host name could not be resolved (no network, or no such host)"
OFFLINE_HINT = ". Check the network, then try again."


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(str(bundled_tokenizer_dir()))


async def run_search(config: Config, tokenizer: Any, engine: SearchEngine | None = None) -> ToolResult:
    """One search tool call as a run makes it: the configured engine chain (or `engine`) behind a Browser."""
    engine = engine or make_engine(config)
    fetcher = make_fetcher(config)
    browser = Browser.from_config(config, engine, fetcher, tokenizer)
    try:
        return await browser.search("printing press")
    finally:
        await browser.aclose()
        await engine.aclose()
        await fetcher.aclose()


def assert_readable(result: ToolResult) -> None:
    """A failed search: one line, no internals, and the reason carried for the event stream."""
    assert not result.ok and result.error == "search"
    assert "\n" not in result.observation
    assert not any(marker in result.observation for marker in INTERNALS), result.observation
    assert result.detail and result.detail in result.observation


def offline_ddgs_error() -> DDGSException:
    """What ddgs raises when DNS fails: its HTTP client wraps primp's error, then DDGS wraps that again."""
    message = (
        "error sending request for url (https://html.duckduckgo.com/html/) > client error (Connect) > dns error > "
        'error resolving DNS > DNS error: no records found for Query { name: Name("html.duckduckgo.com."), '
        "query_type: A, query_class: IN }"
    )
    try:
        try:
            raise primp.DNSError(message)
        except primp.DNSError as ex:
            raise DDGSException(f"{type(ex).__name__}: {ex!r}") from ex
    except DDGSException as err:
        return DDGSException(err)


class OfflineDDGS:
    """Stands in for the DDGS client on a machine without a network (injected through client_factory)."""

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        raise offline_ddgs_error()


async def test_searxng_on_a_closed_port(tokenizer: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await run_search(Config(search="searxng", searxng_url=url), tokenizer)
    assert_readable(result)
    assert result.detail == f"SearXNG at {url} is unreachable: the connection was refused"
    assert result.observation == f"Error: search failed: {result.detail}{OFFLINE_HINT}"


async def test_the_model_never_sees_the_searxng_credentials(tokenizer: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await run_search(Config(search="searxng", searxng_url=url.replace("://", "://reader:s3cret@")), tokenizer)
    assert result.detail == f"SearXNG at {url} is unreachable: the connection was refused"
    assert "s3cret" not in result.observation and "reader" not in result.observation


async def test_searxng_whose_host_name_does_not_resolve(tokenizer: Any) -> None:
    started = time.monotonic()
    result = await run_search(Config(search="searxng", searxng_url="http://searxng.invalid"), tokenizer)
    assert time.monotonic() - started < 15  # .invalid never resolves (RFC 6761): an answer, not a hang
    assert_readable(result)
    assert result.detail == f"SearXNG at http://searxng.invalid is unreachable: {NO_DNS}"


async def test_ddgs_offline(tokenizer: Any) -> None:
    engine = DdgsEngine(Config(), client_factory=OfflineDDGS)
    with pytest.raises(Unreachable) as info:
        await engine.search("printing press", 5)
    assert str(info.value) == f"ddgs could not reach its search engines: {NO_DNS}"
    result = await run_search(Config(), tokenizer, engine=DdgsEngine(Config(), client_factory=OfflineDDGS))
    assert_readable(result)
    assert (
        result.observation == f"Error: search failed: ddgs could not reach its search engines: {NO_DNS}{OFFLINE_HINT}"
    )


async def test_ddgs_through_a_refused_connection() -> None:
    """The real ddgs client, sent through a proxy address where nothing listens: no packet leaves the machine."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    engine = DdgsEngine(Config(ddgs_backend="auto"), client_factory=lambda: DDGS(proxy=proxy, timeout=5))
    with pytest.raises(Unreachable) as info:
        await engine.search("printing press", 5)
    assert str(info.value) == "ddgs could not reach its search engines: the connection was refused"


async def test_fallback_over_unreachable_engines_is_one_line(tokenizer: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    config = Config(search="searxng", searxng_url=url)
    engine = Fallback([SearxngEngine(config), DdgsEngine(config, client_factory=OfflineDDGS)])
    result = await run_search(config, tokenizer, engine=engine)
    assert_readable(result)
    assert result.detail == (
        f"SearXNG at {url} is unreachable: the connection was refused; "
        f"ddgs could not reach its search engines: {NO_DNS}"
    )
    assert result.observation.endswith(OFFLINE_HINT)


async def test_fallback_with_one_engine_answering_an_error_is_not_called_offline() -> None:
    class Refusing:
        name = "tavily"

        async def search(self, query: str, max_results: int) -> list:
            raise SearchError("Tavily rejected the API key (HTTP 401)")

        async def aclose(self) -> None:
            """Nothing to close."""

    url = f"http://127.0.0.1:{closed_port()}"
    engine = Fallback([SearxngEngine(Config(searxng_url=url)), Refusing()])
    with pytest.raises(SearchError) as info:
        await engine.search("q", 5)
    assert not isinstance(info.value, Unreachable)
    assert str(info.value).endswith("; Tavily rejected the API key (HTTP 401)")


async def test_a_long_engine_error_is_cut_between_words() -> None:
    class Verbose:
        def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
            raise DDGSException("unexpected " * 60 + "ending")

    with pytest.raises(SearchError) as info:
        await DdgsEngine(Config(), client_factory=Verbose).search("q", 5)
    message = str(info.value)
    assert message.startswith("ddgs search failed: unexpected") and message.endswith("…")
    assert set(message.removeprefix("ddgs search failed: ").removesuffix("…").split()) == {"unexpected"}
    assert len(message) <= len("ddgs search failed: ") + 200


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short enough", 40, "short enough"),
        ("alpha beta gamma", 12, "alpha beta…"),
        ("alpha\n\nbeta   gamma", 40, "alpha beta gamma"),
        ("averyveryverylongword", 8, "averyve…"),
        ("cut after a comma, here", 19, "cut after a comma…"),
    ],
)
def test_brief(text: str, limit: int, expected: str) -> None:
    assert brief(text, limit) == expected
    assert len(brief(text, limit)) <= limit
