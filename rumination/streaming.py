"""The one rule that splits a generation into its thinking and its answer, whole or while it streams."""

from __future__ import annotations

from dataclasses import dataclass

from rumination.protocol import THINK_CLOSE, THINK_OPEN


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer): the answer is the text after the last </think>, as the chat template keeps it.

    With no </think> at all, an output that opened <think> was cut off inside its thinking (no answer);
    any other output is all answer.
    """
    head, sep, tail = text.rpartition(THINK_CLOSE)
    if sep:
        return head, tail
    if text.lstrip().startswith(THINK_OPEN):
        return text, ""
    return "", text


@dataclass(frozen=True)
class Split:
    """What one streamed chunk adds; `reset` says the answer streamed so far was thinking after all."""

    thinking: str = ""
    answer: str = ""
    reset: bool = False


class ThinkSplitter:
    """Apply split_thinking to a stream: the answers it yields, restarted at each reset, end as its answer."""

    def __init__(self) -> None:
        self.text = ""  # everything fed so far
        self.sent = 0  # characters passed on; the rest may still start a </think> (or the opening <think>)
        self.answer_from: int | None = None  # where the current answer began; None while in the thinking

    def feed(self, chunk: str) -> Split:
        """Pass on what is certain after this chunk."""
        self.text += chunk
        if self.sent == 0 and self.answer_from is None:
            stripped = self.text.lstrip()
            if THINK_OPEN.startswith(stripped):  # may still become the opening tag
                return Split()
            if not stripped.startswith(THINK_OPEN):
                self.answer_from = 0  # no <think>: an answer, unless a </think> comes later
        start = self.sent
        close = self.text.rfind(THINK_CLOSE, start)  # the held tail never lets a </think> straddle `sent`
        if close >= 0:
            reset = self.answer_from is not None
            thinking = self.text[self.answer_from if reset else start : close]
            self.answer_from = close + len(THINK_CLOSE)
            self.sent = self.answer_from
            return Split(thinking=_display(thinking, start), answer=self._pass_on(), reset=reset)
        if self.answer_from is not None:
            return Split(answer=self._pass_on())
        return Split(thinking=_display(self._pass_on(), start))

    def _pass_on(self) -> str:
        """The text after what was sent, less a tail that may start a </think>."""
        end = len(self.text) - _partial_suffix(self.text[self.sent :], THINK_CLOSE)
        piece, self.sent = self.text[self.sent : end], max(self.sent, end)
        return piece

    def flush(self) -> Split:
        """Whatever is still held back at the end of the stream."""
        piece, self.sent = self.text[self.sent :], len(self.text)
        if self.answer_from is None and not self.text.lstrip().startswith(THINK_OPEN):
            return Split(answer=piece)  # a short output that only looked like the start of <think>
        return Split(answer=piece) if self.answer_from is not None else Split(thinking=_display(piece, 0))


def _display(thinking: str, start: int) -> str:
    """Thinking as shown: the output's opening <think> and the newlines around it left out."""
    stripped = thinking.lstrip()
    if start == 0 and stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].lstrip("\n")
    return thinking


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
