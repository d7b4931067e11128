"""Token counting and cutting with the model's own tokenizer."""

from __future__ import annotations

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
