"""Citations: every form resolved to the pages read, and each claim checked against its page's text."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rumination.citations import check_citations, citation_groups, code_regions, mark_cited, unverified_urls
from rumination.results import Citation, Source, Step, ToolCall

NOW = datetime(2026, 11, 29, 21, 3, tzinfo=UTC)


def source(sid: int, url: str, title: str = "", final_url: str | None = None) -> Source:
    return Source(id=sid, url=url, final_url=final_url or url, title=title or f"Page {sid}", fetched_at=NOW)


def read(sid: int, text: str, turn: int = 1) -> Step:
    """A step that showed the model page `sid` with `text` (as its observation)."""
    return Step(turn=turn, call=ToolCall(name="open"), observation=text, ok=True, source_id=sid)


SOURCES = [
    source(1, "https://a.example/gutenberg", "Johannes Gutenberg and movable type"),
    source(2, "http://b.example/spread", "How printing spread", final_url="https://www.b.example/spread/"),
    source(3, "local://papers/3", "Printing in Korea"),
]
STEPS = [
    read(1, "# Johannes Gutenberg\nGutenberg introduced “movable metal type” to Europe around 1440."),
    read(2, "By 1500, printing presses were operating in more than 250 cities.", turn=2),
    read(3, "Jikji was printed in 1377 with movable metal type.", turn=3),
]


def shape(citations: list[Citation]) -> list[tuple[str, str, str, int | None]]:
    return [(c.form, c.text, c.target, c.source_id) for c in citations]


def check(report: str, sources: list[Source] = SOURCES, steps: list[Step] = STEPS) -> list[Citation]:
    return check_citations(report, sources, steps)


# ---------------------------------------------------------------- resolving


def test_every_form_resolves_to_the_pages_read():
    report = (
        "Gutenberg printed in 1440【1†Johannes Gutenberg and movable type】. "
        "Presses spread【0†How printing spread†https://b.example/spread】 and【2†L1-L5】 further【3】. "
        "Korea had metal type [3]. See [the spread](https://b.example/spread), <https://a.example/gutenberg> and "
        "local://papers/3, or [the paper](local://papers/3/). Unknown: [9], 【7†No such page】, [^4], "
        "https://never.example/x and [x](local://papers/99)."
    )
    assert shape(check(report)) == [
        ("mark", "【1†Johannes Gutenberg and movable type】", "Johannes Gutenberg and movable type", 1),
        ("mark", "【0†How printing spread†https://b.example/spread】", "https://b.example/spread", 2),  # URL first
        ("mark", "【2†L1-L5】", "2", 2),
        ("mark", "【3】", "3", 3),
        ("number", "[3]", "3", 3),
        ("link", "[the spread](https://b.example/spread)", "https://b.example/spread", 2),  # the final URL
        ("url", "<https://a.example/gutenberg>", "https://a.example/gutenberg", 1),
        ("url", "local://papers/3", "local://papers/3", 3),
        ("link", "[the paper](local://papers/3/)", "local://papers/3/", 3),
        ("number", "[9]", "9", None),
        ("mark", "【7†No such page】", "7", None),
        ("footnote", "[^4]", "4", None),
        ("url", "https://never.example/x", "https://never.example/x", None),
        ("link", "[x](local://papers/99)", "local://papers/99", None),
    ]


def test_a_mark_with_a_url_that_was_not_read_is_unverified_whatever_its_number():
    [mark] = check("Claim【1†Johannes Gutenberg and movable type†https://elsewhere.example/】.")
    assert (mark.target, mark.source_id, mark.verified) == ("https://elsewhere.example/", None, False)


def test_numbers_resolve_through_the_reports_own_reference_list():
    listed = "Presses spread fast [1].\n\n## References\n\n[1] How printing spread https://b.example/spread\n"
    assert shape(check(listed)) == [("number", "[1]", "https://b.example/spread", 2)]
    by_id = "Presses spread fast [1].\n"
    assert shape(check(by_id)) == [("number", "[1]", "1", 1)]


@pytest.mark.parametrize(
    "definition",
    [
        "[2]: https://never.example/2",
        "[2] Some page — https://never.example/2",
        "2. [Some page](https://never.example/2)",
        "- [2] <https://never.example/2>",
    ],
)
def test_every_kind_of_reference_line_defines_its_number(definition):
    report = f"A claim [2].\n\n## Sources\n\n{definition}\n"
    assert shape(check(report)) == [("number", "[2]", "https://never.example/2", None)]


def test_footnotes_resolve_through_their_definitions_anywhere():
    report = "A claim.[^a] Another.[^1]\n\n[^a]: https://a.example/gutenberg\n[^1]: https://never.example/1\n"
    assert shape(check(report)) == [
        ("footnote", "[^a]", "https://a.example/gutenberg", 1),
        ("footnote", "[^1]", "https://never.example/1", None),
    ]


def test_a_trailing_reference_list_counts_without_a_heading():
    report = "Presses spread [1].\n\n1. [How printing spread](https://b.example/spread)\n"
    assert shape(check(report)) == [("number", "[1]", "https://b.example/spread", 2)]


def test_a_numbered_list_in_the_body_defines_nothing():
    report = "Steps:\n\n1. [Read this](https://never.example/1)\n2. Then this.\n\nAs said before [1]."
    assert shape(check(report)) == [
        ("link", "[Read this](https://never.example/1)", "https://never.example/1", None),
        ("number", "[1]", "1", 1),
    ]


def test_a_definition_never_cited_is_still_checked_like_a_link():
    report = (
        "Gutenberg [1].\n\n## References\n\n[1] https://a.example/gutenberg\n[2] https://never.example/2\n"
        "[3] Printing in Korea\n"
    )
    assert shape(check(report)) == [
        ("number", "[1]", "https://a.example/gutenberg", 1),
        ("url", "https://never.example/2", "https://never.example/2", None),
    ]


def test_only_the_first_definition_of_a_number_counts_and_a_later_ones_url_is_a_link():
    report = "Spread [2].\n\n## References\n\n[2] https://b.example/spread\n[2] https://never.example/dup\n"
    assert shape(check(report)) == [
        ("number", "[2]", "https://b.example/spread", 2),
        ("url", "https://never.example/dup", "https://never.example/dup", None),
    ]


def test_a_definition_without_a_url_resolves_by_title_or_not_at_all():
    report = "Korea [3]. Elsewhere [4].\n\n## References\n\n[3] *Printing in Korea*.\n[4] Smith, J. (2003). A Book.\n"
    assert shape(check(report)) == [
        ("number", "[3]", "Printing in Korea", 3),
        ("number", "[4]", "Smith, J. (2003). A Book", None),  # the report says [4] is a book the run never read
    ]


def test_groups_and_ranges_cite_each_number():
    citations = check("Many [1, 3] and [1-3] and [2][9].")
    assert [(c.text, c.target, c.source_id) for c in citations] == [
        ("[1, 3]", "1", 1),
        ("[1, 3]", "3", 3),
        ("[1-3]", "1", 1),
        ("[1-3]", "2", 2),
        ("[1-3]", "3", 3),
        ("[2]", "2", 2),
        ("[9]", "9", None),
    ]


def test_link_text_task_boxes_and_code_are_not_citations():
    report = (
        "- [x] done\n- [ ] todo\n\nA [word](#anchor) and [mail](mailto:a@b.example).\n\n"
        "Inline `[1] https://never.example/a` code and ``a ` [2] `` too.\n\n```python\nx = [3]  # https://never.example/b\n"
        "```\n\n~~~\n[4]\n~~~\n"
    )
    assert check(report) == []


def test_an_unclosed_fence_runs_to_the_end():
    assert check("Text [1].\n\n```\n[2] https://never.example/\n") and len(check("Text [1].\n\n```\n[2]\n")) == 1


def test_urls_end_before_sentence_and_full_width_punctuation():
    report = (
        "See https://a.example/gutenberg. And **https://b.example/spread**, and https://a.example/gutenberg，见上。"
    )
    assert [(c.text, c.source_id) for c in check(report)] == [
        ("https://a.example/gutenberg", 1),
        ("https://b.example/spread", 2),
        ("https://a.example/gutenberg", 1),
    ]


def test_wikipedia_style_parentheses_in_a_link_a_bare_url_and_a_reference_list():
    wiki = source(4, "https://en.wikipedia.org/wiki/Type_(printing)", "Type")
    [link] = check("Type [is cast](https://en.wikipedia.org/wiki/Type_(printing)).", [wiki], [])
    assert link.source_id == 4 and link.text.endswith("(printing))")
    report = "Type is cast (https://en.wikipedia.org/wiki/Type_(printing)), in lead [1].\n\n[1]: https://en.wikipedia.org/wiki/Type_(printing)"
    assert [(c.target, c.source_id) for c in check(report, [wiki], [])] == [
        ("https://en.wikipedia.org/wiki/Type_(printing)", 4),
        ("https://en.wikipedia.org/wiki/Type_(printing)", 4),
    ]


def test_cited_sources_and_unverified_urls_derive_from_the_citations():
    citations = check("A [1]. B https://never.example/b and [x](https://never.example/a) and [7].")
    assert [s.cited for s in mark_cited(SOURCES, citations)] == [True, False, False]
    assert unverified_urls(citations) == ["https://never.example/a", "https://never.example/b"]  # [7] is no URL


# ---------------------------------------------------------------- claims


def test_numbers_present_and_missing():
    [ok] = check("Gutenberg introduced movable type around 1440 [1].")
    [bad] = check("Gutenberg introduced movable type around 1450 in 3 cities [1].")
    assert ok.supported and ok.missing == []
    assert not bad.supported and bad.verified and bad.missing == ["1450", "3"]


def test_number_formats_are_normalised():
    page = read(1, "It sold 1234.50 copies, 1,234 more, 12 percent of 10 000 and three editions.")
    for written in ("1,234.5", "1234.5", "1 234", "1,234", "12%", "10,000", "3", "10 000", "three"):
        [c] = check(f"It sold {written} copies [1].", SOURCES, [page])
        assert c.supported, written
    [c] = check("It sold 1,235 copies [1].", SOURCES, [page])
    assert c.missing == ["1,235"]


def test_dates_are_checked_by_their_numbers_not_their_format():
    for page_text in ("on 3 March 1923", "on 1923-03-03", "on March 3rd, 1923"):
        [c] = check("It opened on March 3, 1923 [1].", SOURCES, [read(1, page_text)])
        assert c.supported, page_text
    [c] = check("It opened on March 3, 1923 [1].", SOURCES, [read(1, "on 4 March 1923")])
    assert c.missing == ["3"]


def test_quotes_present_and_missing():
    quoted = 'He called it "Movable  METAL type" and ‘x’ [1].'  # case and spacing, straight vs typographic quotes
    [ok] = check(quoted)
    assert ok.supported
    [bad] = check("He called it “a revolution in print” [1].")
    assert bad.missing == ['"a revolution in print"']
    [one_word] = check('He called it "type" [1].')  # one word: not checked
    assert one_word.supported


def test_quotes_with_an_ellipsis_are_checked_piece_by_piece():
    [ok] = check("Gutenberg “introduced … to Europe” [1].")
    [bad] = check("Gutenberg “introduced … to Asia” [1].")
    assert ok.supported and bad.missing == ['"introduced … to Asia"']


def test_numbers_in_citations_urls_ordinals_and_link_targets_are_not_claims():
    report = (
        "1. Around 1440 (https://x.example/2019/07) [see](https://a.example/gutenberg#55)【1†L7-L9】\n"
        "2) In 1440, [1] and again [1]."
    )
    citations = check(report)
    assert [c.source_id for c in citations] == [None, 1, 1, 1, 1]
    assert all(c.supported for c in citations if c.verified)


def test_a_links_own_text_is_part_of_its_claim_when_it_says_something():
    [bad] = check("Gutenberg [printed in 1455](https://a.example/gutenberg).")
    [bare] = check("Gutenberg printed around 1440 [1](https://a.example/gutenberg).")
    assert bad.missing == ["1455"] and bare.supported  # "1" is a label, not a claim


def test_adjacent_citations_share_a_claim_checked_against_all_their_pages():
    report = "Gutenberg's type of 1440 reached 250 cities by 1500 [1][2]. Also 1440 and 1377【1†a】【3†b】."
    citations = check(report)
    assert [c.source_id for c in citations] == [1, 2, 1, 3]
    assert all(c.supported for c in citations)
    assert [len(g) for g in citation_groups(report, citations)] == [2, 2]
    [alone, _] = check("Gutenberg's type of 1440 reached 250 cities [1] by 1500 [2].")
    assert alone.missing == ["250"]


def test_a_citation_after_the_full_stop_vouches_for_the_sentence_before():
    [c] = check("Gutenberg introduced movable type around 1450. [1]")
    [d] = check("Gutenberg introduced movable type around 1450。【1】")
    assert c.missing == d.missing == ["1450"]


def test_the_claim_starts_after_the_previous_citation_in_the_sentence():
    [first, second] = check("In 1440 movable type came [1], and by 1500 there were 250 presses [2].")
    assert first.supported and second.supported
    [first, second] = check("In 1440 movable type came [2], and by 1500 there were 250 presses [1].")
    assert first.missing == ["1440"] and second.missing == ["1500", "250"]


def test_every_read_of_a_page_counts():
    steps = [read(1, "First look: 1440."), read(1, "Second look: page 2 says 1455.", turn=2)]
    [c] = check("From 1440 to 1455 [1].", SOURCES, steps)
    assert c.supported


def test_pages_without_kept_text_and_unverified_citations_are_not_checked():
    [unread, no_text] = check("Around 1999 [9]. Around 1999 [1].", SOURCES, [])
    assert (unread.verified, unread.missing) == (False, [])
    assert no_text.supported  # nothing the run showed to compare with


def test_page_text_is_normalised_like_the_claim():
    page = read(1, "Ｔｈｅ  “Gutenberg—Bible” (１,２８２ pages) — ＊printed＊ in 1455")
    [c] = check('The "gutenberg-bible" had 1282 pages, "printed in 1455" [1].', SOURCES, [page])
    assert c.supported


def test_cjk_quotes_and_numbers():
    page = read(3, "《直指》于１３７７年以金属活字印刷。")
    [ok] = check("《直指》于1377年以「金属活字」印刷【3】。", SOURCES, [page])
    [bad] = check("《直指》于1378年以「木活字」印刷【3】。", SOURCES, [page])
    assert ok.supported and bad.missing == ["1378", '"木活字"']


# ---------------------------------------------------------------- hostile text


def _spans_are_valid(report: str, citations: list[Citation]) -> None:
    for c in citations:
        assert 0 <= c.start < c.end <= len(report) and report[c.start : c.end] == c.text
    for a, b in itertools.pairwise(citations):
        assert a.start <= b.start and (a.end <= b.start or (a.start, a.end) == (b.start, b.end))


PIECES = [
    "[1]",
    "[2, 3]",
    "[1-4]",
    "[^1]",
    "【1†Johannes Gutenberg and movable type】",
    "【2†t†https://b.example/spread】",
    "【",
    "】",
    "†",
    "[x](https://a.example/gutenberg)",
    "![i](http://e.example/i.png)",
    "](",
    "https://a.example/gutenberg",
    "local://papers/3",
    "<https://c.example>",
    "`",
    "```\n",
    "\n## References\n",
    "\n[1]: https://never.example/\n",
    "\n1. [t](https://b.example/spread)\n",
    '"two words"',
    "“quoted phrase”",
    "1,234.5",
    "1440",
    ". ",
    "\n",
    " ",
    "。",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40))
def test_any_text_gives_valid_ordered_spans(pieces):
    report = "".join(pieces)
    citations = check(report)
    _spans_are_valid(report, citations)
    for c in citations:
        assert c.missing == [] or c.verified


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_unicode_gives_valid_spans(report):
    _spans_are_valid(report, check(report))


PATHOLOGICAL = [
    "https://" + "".join(chr(0x4E00 + i) for i in range(20_000)) + "/x",  # IDNA work grows with the square
    "https://a.example/" + "(a" * 100_000,
    "[a](https://a.example/" + "(a)" * 60_000 + ")",
    "[" * 200_000,
    "[a" * 100_000,
    "[" + "a[b]" * 50_000,
    "](" * 100_000,
    "[a](" + "(a" * 100_000,
    "[a](b" + "[a](b" * 40_000,
    "![" * 100_000,
    "【" * 200_000,
    "【1†" * 60_000,
    "[^" * 100_000,
    "[1," * 60_000,
    "[1 ," * 50_000,
    "`" * 200_000,
    "` `` " * 40_000,
    "```\n" * 50_000,
    "http://" * 30_000,
    "https://a.example/" + "a" * 200_000,
    "<https://" * 25_000,
    '"' * 200_000,
    '"a b' * 50_000,
    "“" * 200_000,
    "1," * 100_000,
    "1 " * 100_000,
    "1." * 100_000,
    " " * 200_000 + "[1]",
    "\n" * 200_000 + "[1]",
    "a. " * 60_000 + "[1]",
    "[1]" * 60_000,
    "1. [t](https://b.example/)\n" * 8_000,
    "## References\n" + "[1] x\n" * 30_000,
    "> " * 100_000 + "1. x [1]",
    "x" * 1990 + ". [1]" * 40_000,
    "a [1]. " * 30_000,
]


@pytest.mark.parametrize("report", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_reports_are_checked_in_linear_time(report):
    page = read(1, "1 " * 100_000 + '"' * 50_000 + "[" * 50_000)
    started = time.perf_counter()
    citations = check(report, SOURCES, [page, *STEPS[1:]])
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{elapsed:.1f} s"
    _spans_are_valid(report, citations)


# ---------------------------------------------------------------- code regions


def test_code_regions_pair_backtick_runs_as_commonmark_does():
    text = "a `x` b ``y ` z`` c ` unpaired\n\nnew `para"
    assert [text[s:e] for s, e in code_regions(text)] == ["`x`", "``y ` z``"]
    fenced = "t\n````\n```\nstill code\n````\nafter `q`"
    assert [fenced[s:e] for s, e in code_regions(fenced)] == ["````\n```\nstill code\n````", "`q`"]
