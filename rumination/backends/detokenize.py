"""Streaming detokenisation in constant work per token (TextStreamer re-decodes the whole line every token)."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"  # a multi-byte character not complete yet


class Detokenizer:
    """Text for token ids as they arrive: each `add` decodes only the last few tokens, never the whole output.

    The text of the tokens from `prefix` to `read` is known and emitted; a new token is decoded together with that
    short known span (so spacing and merges come out as the full decode would) and whatever it adds is emitted,
    unless it ends in an incomplete character, which waits for the next token.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def add(self, token: int) -> str:
        """The text `token` completes (often "" for part of a character)."""
        self.ids.append(token)
        known = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) <= len(known) or text.endswith(REPLACEMENT):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(known) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        known = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(known) :] if len(text) > len(known) else ""
