"""Streaming detokenisation: the chunks add up to the full decode, whatever the tokens."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.detokenize import Detokenizer

TOKENIZER = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
SPECIAL = set(TOKENIZER.all_special_ids)


def streamed(ids: list[int]) -> tuple[str, list[str]]:
    detokenizer = Detokenizer(TOKENIZER)
    chunks = [detokenizer.add(token) for token in ids]
    chunks.append(detokenizer.flush())
    return "".join(chunks), chunks


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_any_text_streams_back_to_its_full_decode(text):
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    joined, _ = streamed(ids)
    assert joined == TOKENIZER.decode(ids, skip_special_tokens=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(TOKENIZER) - 1), max_size=60))
def test_any_token_ids_stream_back_to_their_full_decode(ids):
    joined, _ = streamed(ids)
    assert joined == TOKENIZER.decode(ids, skip_special_tokens=True)


def test_a_character_split_over_tokens_is_held_back_until_complete():
    ids = TOKENIZER("印刷术 🖨️ Gutenberg", add_special_tokens=False)["input_ids"]
    _, chunks = streamed(ids)
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert "".join(chunks) == "印刷术 🖨️ Gutenberg"


def test_thinking_tags_survive_streaming():
    text = '\n<think>\nSearch first.\n</think>{"name": "search"}'
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    assert streamed(ids)[0] == TOKENIZER.decode(ids, skip_special_tokens=True)
