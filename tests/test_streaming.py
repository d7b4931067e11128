"""One thinking/answer split rule, whole and streamed: the streamed answer always ends as the whole-text answer."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from rumination.streaming import ThinkSplitter, split_thinking

PIECES = ["<think>", "</think>", "\n", "abc", "</thi", "nk>", "<", "/", " x ", "<th", '{"name": "finish"}']


def stream(text: str, cuts: list[int]) -> tuple[str, str, int]:
    """Feed `text` in pieces; return the answer as a consumer keeps it, all thinking shown, and the resets."""
    splitter, answer, thinking, resets = ThinkSplitter(), "", "", 0
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    for split in [*(splitter.feed(p) for p in parts), splitter.flush()]:
        if split.reset:
            answer, resets = "", resets + 1
        answer += split.answer
        thinking += split.thinking
    return answer, thinking, resets


@settings(max_examples=400)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), st.lists(st.integers(0, 200), max_size=8))
def test_the_streamed_answer_is_the_answer_of_the_whole_text(text, cuts):
    answer, _, _ = stream(text, cuts)
    assert answer == split_thinking(text)[1]


def test_the_real_shape_streams_thinking_then_answer():
    text = '\n<think>\nSearch first.\n</think>{"name": "search", "arguments": {"query": "x"}}'
    answer, thinking, resets = stream(text, [3, 9, 20, 30])
    assert thinking == "Search first.\n" and answer.startswith('{"name"') and resets == 0


def test_a_second_close_turns_the_answer_so_far_into_thinking():
    text = "\n<think>\nplan\n</think>draft\n</think>\n# Report"
    answer, thinking, resets = stream(text, [len("\n<think>\nplan\n</think>dr"), len(text) - 5])
    assert answer == "\n# Report" == split_thinking(text)[1]
    assert resets == 1 and "draft" in thinking


def test_no_think_tags_is_all_answer_and_an_unclosed_think_is_no_answer():
    assert split_thinking("# Just a report") == ("", "# Just a report")
    assert stream("# Just a report", [4])[0] == "# Just a report"
    assert split_thinking("\n<think>\ncut off here")[1] == ""
    assert stream("\n<think>\ncut off here", [5, 11]) == ("", "cut off here", 0)
