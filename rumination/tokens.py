"""Token counting and cutting with the model's own tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in `text`, with no special tokens added."""
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


# Characters tokenized per token kept: generous (real text runs ~4 characters a token), so the head holds them all.
CHARS_PER_TOKEN = 12


def truncate_tokens(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of `text` within `max_tokens`, and the text's token count.

    Only a head of about `max_tokens * CHARS_PER_TOKEN` characters is tokenized (a 5 MB page costs what its
    first 100 KB cost); past it, the count is estimated from the head's tokens per character.
    """
    size = max(max_tokens, 1) * CHARS_PER_TOKEN
    while True:
        head = text[:size]
        # verbose=False: a page longer than the model's window is counted, not fed to it; transformers would warn
        enc = tokenizer(head, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        counted = len(enc["input_ids"])
        if counted > max_tokens or len(head) == len(text):
            break
        size *= 2  # text sparser than the guess (long runs of spaces, rules): read on rather than cut a page that fits
    if counted <= max_tokens:
        return text, counted
    end = enc["offset_mapping"][max_tokens - 1][1] if max_tokens > 0 else 0
    total = counted if len(head) == len(text) else round(counted * len(text) / len(head))
    return text[:end], total


class LazyTokenizer:
    """A tokenizer loaded on first use: commands that end before they count a token never import transformers."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self._tokenizer = load, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer(*args, **kwargs)
