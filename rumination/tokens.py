"""Token counting and cutting with the model's own tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in `text`, with no special tokens added."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_tokens(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, int]:
    """Return the longest prefix of `text` within `max_tokens`, and the text's total token count."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    total = len(enc["input_ids"])
    if total <= max_tokens:
        return text, total
    end = enc["offset_mapping"][max_tokens - 1][1] if max_tokens > 0 else 0
    return text[:end], total


class LazyTokenizer:
    """A tokenizer loaded on first use: commands that end before they count a token never import transformers."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self._tokenizer = load, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer(*args, **kwargs)
