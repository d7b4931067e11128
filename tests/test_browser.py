"""The browser takes its settings from Config, and every failed tool call has a known kind and a reason."""

from __future__ import annotations

from typing import get_args

import pytest
from localweb import LocalWeb

from rumination.browser import Browser, ToolResult
from rumination.config import Config
from rumination.parser import ToolCallError, parse_tool_call
from rumination.results import ToolCall
from rumination.search.base import SearchHit
from rumination.tool_errors import BrowserErrorKind, ParseErrorKind, ToolErrorKind
from rumination.web.base import Page
from rumination.web.fetcher import WebFetcher


def whole(text: str, max_tokens: int) -> tuple[str, int]:
    """A truncator that keeps everything."""
    return text, len(text.split())


class ListEngine:
    """A search engine over a fixed list of hits that records what it was asked."""

    name = "list"

    def __init__(self, hits: list[SearchHit] | Exception):
        self.hits = hits
        self.asked: list[int] = []

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        self.asked.append(max_results)
        if isinstance(self.hits, Exception):
            raise self.hits
        return self.hits[:max_results]

    async def aclose(self) -> None:
        """Nothing to close."""


class BrokenFetcher:
    """A fetcher (a plugin, say) that fails in a way nobody anticipated."""

    name = "broken"

    async def fetch(self, url: str) -> Page:
        raise KeyError("page")

    async def aclose(self) -> None:
        """Nothing to close."""


HITS = [SearchHit(title=f"Hit {i}", url=f"https://site{i}.example/page", snippet=f"snippet {i}") for i in range(6)]


def test_settings_come_from_config() -> None:
    config = Config(
        search_results=4,
        search_layout="card",
        page_max_tokens=321,
        prefetch=2,
        open_any_url=True,
        allow_domains=["a.example"],
        deny_domains=["b.example"],
    )
    browser = Browser(config, ListEngine(HITS), BrokenFetcher(), whole)
    assert (browser.max_results, browser.layout, browser.page_max_tokens) == (4, "card", 321)
    assert (browser.prefetch, browser.open_any_url) == (2, True)
    assert (browser.allow_domains, browser.deny_domains) == (["a.example"], ["b.example"])


def test_defaults_are_configs_defaults() -> None:
    config = Config()
    browser = Browser(config, ListEngine(HITS), BrokenFetcher(), whole)
    assert browser.open_any_url is config.open_any_url is False  # the browser once defaulted to True
    assert browser.prefetch == config.prefetch
    assert browser.layout == config.search_layout


def test_explicit_overrides_win() -> None:
    config = Config(prefetch=3, open_any_url=False)
    browser = Browser(config, ListEngine(HITS), BrokenFetcher(), whole, prefetch=0, open_any_url=True)
    assert (browser.prefetch, browser.open_any_url) == (0, True)
    assert (config.prefetch, config.open_any_url) == (3, False)  # the run's settings are untouched


async def test_search_uses_the_configured_count_and_layout() -> None:
    engine = ListEngine(HITS)
    browser = Browser(Config(search_results=3, search_layout="card", prefetch=0), engine, BrokenFetcher(), whole)
    result = await browser.search("q")
    assert engine.asked == [3]
    assert result.ok and result.results == 3 and result.detail is None
    assert result.observation.startswith("【0†Hit 0†https://site0.example/page\nsnippet 0】")


async def test_a_default_browser_refuses_urls_it_was_never_shown() -> None:
    browser = Browser(Config(), ListEngine(HITS), BrokenFetcher(), whole, question="see https://asked.example/x")
    refused = await browser.open("https://unseen.example/")
    assert (refused.ok, refused.error) == (False, "refused")
    assert refused.detail and "did not appear" in refused.detail and refused.detail in refused.observation
    asked = await browser.open("https://asked.example/x")  # named in the question: fetched (and failing here)
    assert asked.error == "fetch"


async def test_unexpected_failures_end_the_call_not_the_run() -> None:
    browser = Browser(Config(prefetch=0), ListEngine(ZeroDivisionError("division by zero")), BrokenFetcher(), whole)
    searched = await browser.search("q")
    assert (searched.ok, searched.error, searched.detail) == (False, "search", "ZeroDivisionError: division by zero")
    opened = await Browser(Config(open_any_url=True), ListEngine(HITS), BrokenFetcher(), whole).open("a.example")
    assert (opened.ok, opened.error) == (False, "fetch")
    assert opened.detail == "KeyError: 'page'" and "\n" not in opened.observation


async def test_fetch_failures_carry_their_reason(web: LocalWeb) -> None:
    config = Config(allow_private_network=True, open_any_url=True, robots_txt=False, page_cache=False)
    fetcher = WebFetcher(config)
    try:
        url = web.url("/status/404")
        result = await Browser(config, ListEngine(HITS), fetcher, whole, question=f"see {url}").open(url)
    finally:
        await fetcher.aclose()
    assert (result.ok, result.error, result.detail) == (False, "fetch", "HTTP 404 Not Found")


# --- the error kinds --------------------------------------------------------------------------------------------------


def test_tool_error_kinds_are_one_vocabulary() -> None:
    assert set(get_args(ToolErrorKind)) == set(get_args(ParseErrorKind)) | set(get_args(BrowserErrorKind))
    assert set(get_args(ToolErrorKind)) == {
        "format",
        "unknown_tool",
        "arguments",
        "cut_off",
        "search",
        "fetch",
        "refused",
        "cancelled",
    }


@pytest.mark.parametrize(
    ("text", "cut_off"),
    [
        ("no call at all", False),
        ('{"name": "fly", "arguments": {}}', False),
        ('{"name": "click", "arguments": {"link_id": "x"}}', False),
        ('{"name": "search", "argu', True),
    ],
)
def test_parser_errors_have_a_tool_error_kind(text: str, cut_off: bool) -> None:
    with pytest.raises(ToolCallError) as info:
        parse_tool_call(text, cut_off=cut_off)
    assert info.value.kind in get_args(ParseErrorKind)


async def test_browser_errors_have_a_tool_error_kind() -> None:
    browser = Browser(Config(prefetch=0), ListEngine(HITS), BrokenFetcher(), whole)
    results: list[ToolResult] = [
        await browser.run(ToolCall(name="click", arguments={"link_id": 0})),  # nothing searched yet
        await browser.run(ToolCall(name="open", arguments={"url": "https://unseen.example/"})),
    ]
    await browser.search("q")
    results.append(await browser.run(ToolCall(name="click", arguments={"link_id": 99})))
    results.append(await browser.run(ToolCall(name="click", arguments={"link_id": 0})))
    assert [r.error for r in results] == ["arguments", "refused", "arguments", "fetch"]
    assert all(r.error in get_args(BrowserErrorKind) for r in results)


def test_from_config_builds_the_same_browser() -> None:
    from rumination.assets import bundled_tokenizer_dir
    from rumination.backends.base import load_tokenizer

    tokenizer = load_tokenizer(str(bundled_tokenizer_dir()))
    config = Config(search_results=5, prefetch=1)
    browser = Browser.from_config(config, ListEngine(HITS), BrokenFetcher(), tokenizer, question="q", prefetch=0)
    assert (browser.max_results, browser.prefetch, browser.open_any_url) == (5, 0, False)
    text, total = browser.truncate("one two three " * 50, 10)
    assert total > 10 and len(text) < len("one two three " * 50)


# --- scope: the allow list, other indexes -----------------------------------------------------------------------------


class PageFetcher:
    """A fetcher that returns one page linking elsewhere, and records what it fetched."""

    name = "page"

    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> Page:
        self.fetched.append(url)
        text = "See [this](https://evil.example/steal?q=secret)."
        return Page(url=url, final_url=url, title="T", text=text, content_type="text/markdown")

    async def aclose(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize("open_any_url", [False, True])
async def test_the_allow_list_binds_opening_too_not_only_search(open_any_url: bool) -> None:
    fetcher = PageFetcher()
    config = Config(allow_domains=["good.example"], open_any_url=open_any_url)
    browser = Browser(config, ListEngine(HITS), fetcher, whole, question="start at https://good.example/a")
    assert (await browser.open("https://good.example/a")).ok
    refused = await browser.open("https://evil.example/steal?q=secret")  # a link on the allowed page
    assert (refused.ok, refused.error) == (False, "refused") and "outside the allowed domains" in refused.observation
    assert fetcher.fetched == ["https://good.example/a"]


async def test_a_redirect_out_of_the_allowed_domains_is_refused_at_that_hop(web: LocalWeb) -> None:
    config = Config(allow_private_network=True, allow_domains=["localhost"], robots_txt=False, page_cache=False)
    fetcher = WebFetcher(config)
    start = web.base.replace("127.0.0.1", "localhost") + "/redirect-to?url=" + web.url("/gutenberg.html")
    try:
        result = await Browser(config, ListEngine(HITS), fetcher, whole, question=start).open(start)
    finally:
        await fetcher.aclose()
    assert (result.ok, result.error) == (False, "refused") and "outside the allowed domains" in result.observation
    assert web.hits["/gutenberg.html"] == 0


async def test_local_documents_only_of_the_indexes_searched() -> None:
    fetcher = PageFetcher()
    config = Config(search="local:papers", search_fallback=["ddgs"])
    browser = Browser(config, ListEngine(HITS), fetcher, whole, question="see local://papers/1")
    assert (await browser.open("local://papers/1")).ok
    other = await browser.open("local://diary/1")
    assert (other.ok, other.error) == (False, "refused") and "indexes searched (papers)" in other.observation
    assert fetcher.fetched == ["local://papers/1"]


async def test_the_page_cache_never_serves_a_page_read_under_other_domain_rules(web: LocalWeb, tmp_path) -> None:
    from rumination.web.base import FetchError

    start = web.url("/redirect-to?url=" + web.base.replace("127.0.0.1", "localhost") + "/gutenberg.html")
    common = {"allow_private_network": True, "robots_txt": False, "cache_dir": tmp_path}
    warm = WebFetcher(Config(**common))
    try:
        assert "localhost" in (await warm.fetch(start)).final_url  # cached, redirect hop and all
    finally:
        await warm.aclose()
    for lists in ({"deny_domains": ["localhost"]}, {"allow_domains": ["127.0.0.1"]}):
        strict = WebFetcher(Config(**common, **lists))
        try:
            with pytest.raises(FetchError) as info:
                await strict.fetch(start)
        finally:
            await strict.aclose()
        assert info.value.kind == "refused"


async def test_a_local_only_run_never_opens_a_web_page() -> None:
    fetcher = PageFetcher()
    question = "compare local://papers/1 with https://web.example/page"
    browser = Browser(Config(search="local:papers"), ListEngine(HITS), fetcher, whole, question=question)
    assert (await browser.open("local://papers/1")).ok
    refused = await browser.open("https://web.example/page")  # named in the question, and still not opened
    assert (refused.ok, refused.error) == (False, "refused") and "only local documents" in refused.observation
    allowed = Config(search="local:papers", allow_domains=["web.example"])
    assert not (await Browser(allowed, ListEngine(HITS), fetcher, whole, question=question).open(refused.url)).ok
    widened = Config(search="local:papers", allow_web=True, allow_domains=["web.example"])
    browser = Browser(widened, ListEngine(HITS), fetcher, whole, question=question)
    assert (await browser.open("https://web.example/page")).ok  # --allow-web, and then the domain lists say which
    assert fetcher.fetched == ["local://papers/1", "https://web.example/page"]
