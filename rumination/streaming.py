"""Split a streamed generation into its thinking and the text after it."""

from __future__ import annotations

from rumination.protocol import THINK_CLOSE, THINK_OPEN


class ThinkSplitter:
    """Route streamed text to thinking (inside <think>...</think>) or answer, across chunk borders."""

    def __init__(self) -> None:
        self.buffer, self.opened, self.after = "", False, False

    def feed(self, text: str) -> tuple[str, str]:
        """Return the (thinking, answer) text that is certain after this chunk."""
        if self.after:
            return "", text
        self.buffer += text
        if not self.opened:
            stripped = self.buffer.lstrip()
            if THINK_OPEN.startswith(stripped):  # may still become the opening tag
                return "", ""
            self.opened = True
            if stripped.startswith(THINK_OPEN):
                self.buffer = stripped[len(THINK_OPEN) :].lstrip("\n")
        head, sep, tail = self.buffer.partition(THINK_CLOSE)
        if sep:
            self.after, self.buffer = True, ""
            return head, tail
        keep = _partial_suffix(self.buffer, THINK_CLOSE)
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out, ""

    def flush(self) -> tuple[str, str]:
        """Return whatever is still held back at the end of the stream."""
        out, self.buffer = self.buffer, ""
        return ("", out) if self.after else (out, "")


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
