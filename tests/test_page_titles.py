"""A page's title and heading reach the model once each: never twice, never lost."""

from __future__ import annotations

import time
from typing import Any

import pytest
from localweb import LocalWeb

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import load_tokenizer
from rumination.browser import Browser
from rumination.config import Config
from rumination.factory import make_engine, make_fetcher
from rumination.formatting import format_page
from rumination.web.extract import MAX_TITLE_CHARS, extract_html, markdown_title, strip_title


def whole(text: str, max_tokens: int) -> tuple[str, int]:
    """A truncator that keeps everything."""
    return text, len(text.split())


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(str(bundled_tokenizer_dir()))


async def observe(web: LocalWeb, path: str, tokenizer: Any) -> str:
    """What the model reads after opening `path` of the local site."""
    config = Config(
        search="searxng",
        searxng_url=web.base,
        allow_private_network=True,
        page_cache=False,
        allow_domains=["127.0.0.1"],
    )
    engine, fetcher = make_engine(config), make_fetcher(config)
    browser = Browser.from_config(config, engine, fetcher, tokenizer, open_any_url=True)
    try:
        result = await browser.open(web.url(path))
    finally:
        await browser.aclose()
        await engine.aclose()
        await fetcher.aclose()
    assert result.ok, result.observation
    return result.observation


# --- format_page ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "# Printing in Mainz\n\nGutenberg worked here.",
        "\n\n#  printing in  MAINZ ##\nGutenberg worked here.",
        "Printing in Mainz\n=================\n\nGutenberg worked here.",
        "**Printing in Mainz**\n\nGutenberg worked here.",
    ],
)
def test_a_heading_that_repeats_the_title_is_dropped(text: str) -> None:
    page = format_page("Printing in Mainz", "https://a.example/", text, 100, whole)
    assert page == "# Printing in Mainz\nURL: https://a.example/\n\nGutenberg worked here."


def test_a_different_heading_is_kept() -> None:
    page = format_page("Printing Archive", "https://a.example/", "# The Aldine Press\n\nVenice, 1494.", 100, whole)
    assert page == "# Printing Archive\nURL: https://a.example/\n\n# The Aldine Press\n\nVenice, 1494."


def test_only_the_first_line_is_compared() -> None:
    text = "Intro line.\n\n# Printing in Mainz\n\nBody."
    assert format_page("Printing in Mainz", "u", text, 100, whole).endswith(text)


def test_front_matter_stays_and_the_heading_after_it_goes() -> None:
    text = "---\ndate: 2024-01-01\n---\n\n# Stars\n\nA pulsar spins."
    assert strip_title(text, "Stars") == "---\ndate: 2024-01-01\n---\n\nA pulsar spins."
    assert markdown_title(text) == "Stars"


def test_markdown_title_takes_linear_time_on_hostile_pages() -> None:
    started = time.monotonic()
    assert markdown_title("# a" + " " * 2_000_000 + "b") == "a"  # only the top of a page is looked at
    assert markdown_title("x" * 3_000_000) == "x" * MAX_TITLE_CHARS
    assert time.monotonic() - started < 1.0  # a backtracking heading regex took minutes on the first one


# --- HTML extraction --------------------------------------------------------------------------------------------------

ARTICLE = (
    "<p>Aldus Manutius founded the Aldine Press in Venice in 1494 and printed Greek and Latin classics in small "
    "octavo volumes.</p><p>The press introduced italic type, cut by Francesco Griffo, and its dolphin-and-anchor "
    "device became a famous printers' mark.</p>"
)


def test_an_h1_outside_the_article_is_kept_when_the_title_differs() -> None:
    html = (
        '<html><head><title>Archive</title><meta property="og:title" content="Printing Press Archive"></head><body>'
        f'<div class="entry-header"><h1>The Aldine Press of Venice</h1></div><div class="entry-content">{ARTICLE}'
        "</div></body></html>"
    )
    title, text = extract_html(html, "https://a.example/aldine")
    assert title == "Printing Press Archive"
    assert text.startswith("# The Aldine Press of Venice\n\nAldus Manutius")


def test_an_h1_that_is_the_title_is_not_added() -> None:
    html = (
        "<html><head><title>The Aldine Press of Venice</title></head><body><header><h1>The Aldine Press of Venice"
        f"</h1></header><article>{ARTICLE}</article></body></html>"
    )
    title, text = extract_html(html, "https://a.example/aldine")
    assert title == "The Aldine Press of Venice"
    assert "# " not in text


def test_several_h1s_are_left_to_the_extractor() -> None:
    html = (
        "<html><head><title>Archive</title></head><body><h1>Site name</h1><h1>Other</h1>"
        f"<article>{ARTICLE}</article></body></html>"
    )
    _, text = extract_html(html, "https://a.example/")
    assert not text.startswith("# Site name")


# --- real pages from the local site -----------------------------------------------------------------------------------


async def test_html_page_title_is_shown_once(web: LocalWeb, tokenizer: Any) -> None:
    observation = await observe(web, "/gutenberg.html", tokenizer)
    assert observation.startswith(
        f"# Johannes Gutenberg and movable type\nURL: {web.url('/gutenberg.html')}\n\nJohannes Gutenberg, a goldsmith"
    )
    assert observation.count("Johannes Gutenberg and movable type") == 1
    assert "## Legacy" in observation  # other headings stay


async def test_html_page_heading_outside_the_article_is_not_lost(web: LocalWeb, tokenizer: Any) -> None:
    observation = await observe(web, "/aldine.html", tokenizer)
    assert observation.startswith("# Printing Press Archive\nURL: ")
    assert observation.count("The Aldine Press of Venice") == 1
    assert "\n\n# The Aldine Press of Venice\n\nAldus Manutius founded" in observation


async def test_markdown_page_title_is_shown_once(web: LocalWeb, tokenizer: Any) -> None:
    observation = await observe(web, "/notes.md", tokenizer)
    assert observation.startswith(f"# Notes on movable type\nURL: {web.url('/notes.md')}\n\nMovable type lets")
    assert observation.count("Notes on movable type") == 1
    assert "## Materials" in observation
