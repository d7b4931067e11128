"""Long pages: the query-aware cut, reading on, and what the model is shown of a page over its budget."""

from __future__ import annotations

import random
from collections import Counter
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Reply
from transformers import AutoTokenizer

from rumination import reading
from rumination.assets import bundled_tokenizer_dir
from rumination.browser import Browser
from rumination.cli import main
from rumination.config import Config
from rumination.factory import NoEngine
from rumination.results import ToolCall
from rumination.tokens import count_tokens, truncate_tokens
from rumination.web.base import Page

TOKENIZER = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
TRUNCATE = partial(truncate_tokens, TOKENIZER)
FACT = "The Aldine Press printed exactly 1,234 copies of the Hypnerotomachia Poliphili in December 1499."
FILLER = [
    "printing",
    "press",
    "Venice",
    "merchants",
    "paper",
    "guild",
    "ink",
    "workshop",
    "scholars",
    "trade",
    "harbour",
    "letters",
]


def long_page(sections: int = 12, depth: float = 0.7, seed: int = 0) -> str:
    """Markdown sections of generated prose, the fact planted at `depth` of the way through."""
    rng = random.Random(seed)
    parts = []
    for s in range(sections):
        parts.append(f"## Section {s}: the {rng.choice(FILLER)} of {rng.choice(FILLER)}")
        for _ in range(4):
            parts.append(" ".join(rng.choice(FILLER) for _ in range(60)).capitalize() + ".")
    parts.insert(int(len(parts) * depth), FACT)
    return "\n\n".join(parts)


def body_tokens(text: str) -> int:
    return count_tokens(TOKENIZER, text)


def test_the_passage_the_question_asks_for_is_kept_within_the_budget():
    page = long_page()
    assert body_tokens(page) > 4 * 600
    head = reading.cut(page, 600, TRUNCATE, Counter())
    asked = reading.cut(page, 600, TRUNCATE, reading.query_terms("How many copies of the Hypnerotomachia?", "", ""))
    assert FACT not in head.text and FACT in asked.text  # the head alone never reaches it
    for cut in (head, asked):
        assert cut.cut and body_tokens(cut.text) <= 600 and cut.kept_tokens <= 600
        assert cut.text.startswith("## Section 0") or cut.text.startswith("[")  # the lead comes first
        assert "[Sections: Section 0" in cut.text and "left out" in cut.text
    assert abs(asked.total_tokens - body_tokens(page)) < 0.1 * body_tokens(page)


def test_the_thinking_or_the_search_steers_the_cut_too():
    page = long_page(depth=0.9)
    thinking = "The press history is long. I want the number of copies of the Hypnerotomachia printed in 1499."
    by_thinking = reading.cut(page, 600, TRUNCATE, reading.query_terms("Aldus Manutius?", "", thinking))
    by_search = reading.cut(page, 600, TRUNCATE, reading.query_terms("Aldus Manutius?", "Hypnerotomachia copies", ""))
    assert FACT in by_thinking.text and FACT in by_search.text


def test_markers_say_how_much_was_left_out_and_where():
    cut = reading.cut(long_page(), 600, TRUNCATE, reading.query_terms("Hypnerotomachia", "", ""))
    markers = [line for line in cut.text.splitlines() if line.startswith("[… ")]
    assert markers and all("characters) left out" in m for m in markers)
    assert any('in "Section' in m for m in markers)


def test_a_page_that_fits_is_shown_whole():
    text = "# Title\n\nA short page about the Aldine Press."
    cut = reading.cut(text, 600, TRUNCATE, reading.query_terms("anything", "", ""))
    assert (cut.text, cut.cut, cut.left) == (text, False, 0)


def test_the_cut_is_the_same_for_the_same_inputs():
    page, query = long_page(seed=3), reading.query_terms("Hypnerotomachia copies", "Aldine", "")
    assert reading.cut(page, 500, TRUNCATE, query) == reading.cut(page, 500, TRUNCATE, query)


def test_reading_on_never_repeats_a_passage_until_the_page_is_exhausted():
    page, query = long_page(sections=6), reading.query_terms("Hypnerotomachia", "", "")
    seen: set[int] = set()
    reads = 0
    while True:
        cut = reading.cut(page, 400, TRUNCATE, query, seen)
        if not cut.shown:
            break
        assert not cut.shown & seen  # nothing shown twice
        assert body_tokens(cut.text) <= 400
        if seen:
            assert cut.continued and cut.text.startswith("[continued")
        seen |= cut.shown
        reads += 1
    assert reads > 2 and seen == set(range(len(reading.split(page, reading.passage_size(400)))))
    assert cut.continued and cut.text == ""


WORDS = st.sampled_from(["press", "ink", "Venice", "paper", "1499", "copies", "活字", "印刷", "guild", "a", "the"])
PARAGRAPH = st.lists(WORDS, min_size=1, max_size=80).map(" ".join)
HEADING = st.tuples(st.integers(1, 3), st.lists(WORDS, min_size=1, max_size=4).map(" ".join)).map(
    lambda h: "#" * h[0] + " " + h[1]
)


def words(text: str, max_tokens: int) -> tuple[str, int]:
    """A truncator counting words: the longest prefix of `max_tokens` words, and the count."""
    parts = text.split()
    if len(parts) <= max_tokens:
        return text, len(parts)
    end = 0
    for part in parts[:max_tokens]:
        end = text.index(part, end) + len(part)
    return text[:end], len(parts)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(PARAGRAPH, HEADING), min_size=1, max_size=40),
    st.lists(WORDS, max_size=6).map(" ".join),
    st.integers(20, 300),
    st.sets(st.integers(0, 60), max_size=20),
)
def test_any_page_and_query_stay_within_the_budget_verbatim_and_in_order(blocks, query, budget, seen):
    text = "\n\n".join(blocks)
    cut = reading.cut(text, budget, words, reading.query_terms(query, "", ""), seen)
    assert words(cut.text, 1 << 30)[1] <= budget
    position = 0
    for start, end in cut.spans:  # every kept passage is the page's own text, in the page's order
        assert start >= 0 and end <= len(text)
        found = cut.text.find(text[start:end], position)
        assert found >= 0
        position = found + (end - start)
    assert [s for s, _ in cut.spans] == sorted(s for s, _ in cut.spans)


def test_pathological_text_is_cut_in_reasonable_time():
    import time

    for text in ("# " + "a " * 200_000, "x" * 500_000, ("word. " * 50 + "\n") * 5_000, "#" * 300_000):
        started = time.perf_counter()
        cut = reading.cut(text, 300, words, reading.query_terms("word", "", ""))
        assert words(cut.text, 1 << 30)[1] <= 300
        assert time.perf_counter() - started < 10


# --- the browser: reading on, the repeat rule, and what a step records ------------------------------------------


class OnePage:
    """A fetcher serving one long page."""

    name = "one"

    def __init__(self, text: str):
        self.text = text

    async def fetch(self, url: str) -> Page:
        return Page(url=url, final_url=url, title="Aldine Press", text=self.text, content_type="text/markdown")

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_a_page_read_again_goes_on_and_counts_as_a_repeat_only_when_read_through():
    url = "https://aldine.example/history"
    config = Config(page_max_tokens=400, open_any_url=True, prefetch=0)
    browser = Browser.from_config(config, NoEngine(), OnePage(long_page(sections=2)), TOKENIZER, question="Aldine?")
    call = ToolCall(name="open", arguments={"url": url})
    keys, results = [], []
    for _ in range(80):
        keys.append(browser.action_key(call))
        results.append(await browser.run(call, "I need the copies of the Hypnerotomachia"))
        if keys.count(keys[-1]) > 1:
            break
    first, second = results[0], results[1]
    assert first.page_tokens and first.kept_tokens and first.kept_tokens <= 400 and not first.continued
    assert FACT in first.observation  # what the thinking asked for comes first
    assert second.continued and "\n\n[continued: the parts of this page not shown before]" in second.observation
    assert len(set(keys[:-1])) == len(keys) - 1  # every read that showed something new was a new action
    assert keys[-1] == keys[0] == "read:" + url  # read through: the same action as the first read, a repeat
    assert "this is it again" in results[-1].observation and len(results) > 3
    state = browser.state()
    assert state.left[url] == 0 and state.read[url]


def test_fetch_shows_what_the_question_needs_and_never_warns_about_token_counts(loopback, capsys):
    html = "<html><head><title>Aldine</title></head><body><article>"
    html += "".join(f"<p>{p}</p>" for p in long_page(sections=30).split("\n\n") if not p.startswith("#"))
    server = loopback({"/long.html": Reply(200, (html + "</article></body></html>").encode())})
    args = ["fetch", server.url("/long.html"), "--allow-private-network", "--no-page-cache", "--page-max-tokens", "500"]
    assert main([*args, "--question", "How many copies of the Hypnerotomachia were printed?"]) == 0
    out, err = capsys.readouterr()
    assert FACT in out and "left out" in out and err == ""
    assert "Token indices sequence length" not in err
    assert main(args) == 0
    assert FACT not in capsys.readouterr().out


@pytest.mark.parametrize("depth", [0.3, 0.6, 0.95])
def test_a_fact_at_any_depth_reaches_the_model_when_asked(depth):
    page = long_page(sections=20, depth=depth, seed=int(depth * 10))
    cut = reading.cut(page, 800, TRUNCATE, reading.query_terms("Hypnerotomachia Poliphili copies printed", "", ""))
    assert FACT in cut.text
