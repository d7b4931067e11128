"""Prompt-lookup drafts for speculative decoding, and the meter that says whether verifying them pays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

LONGEST, SHORTEST = 4, 2  # n-gram lengths looked up, longest first: a longer match predicts better


class Drafter(Protocol):
    """Guesses the next tokens of a sequence it is told token by token."""

    def add(self, token: int) -> None:
        """The sequence's next token."""

    def draft(self, most: int) -> list[int]:
        """Up to `most` guessed next tokens (none: no guess)."""


class PromptLookup:
    """Drafts the tokens that followed the latest earlier occurrence of the sequence's last n-gram.

    Reports and quotes copy runs of tokens from the pages in the prompt, so a matching n-gram often predicts
    the next several tokens exactly. The index maps each n-gram to the position after its latest occurrence
    whose continuation is known; building it is a few C-level passes, updating it O(1) per token.
    """

    def __init__(self, ids: list[int], longest: int = LONGEST, shortest: int = SHORTEST):
        self.seq = list(ids)
        self.lengths = range(longest, shortest - 1, -1)
        self.index: dict[tuple[int, ...], int] = {}
        for n in reversed(self.lengths):  # later positions overwrite earlier ones: the latest occurrence wins
            grams = zip(*(self.seq[i:] for i in range(n)), strict=False)
            self.index.update(zip(grams, range(n, len(self.seq)), strict=False))  # the suffix has no continuation

    def add(self, token: int) -> None:
        """Append a token; the n-grams that ended just before it now have a continuation."""
        self.seq.append(token)
        end = len(self.seq) - 1
        for n in self.lengths:
            if end >= n:
                self.index[tuple(self.seq[end - n : end])] = end

    def draft(self, most: int) -> list[int]:
        """Up to `most` tokens that followed the longest n-gram ending the sequence the last time it occurred."""
        for n in self.lengths:
            at = self.index.get(tuple(self.seq[-n:])) if len(self.seq) >= n else None
            if at is not None:
                found = self.seq[at : at + most]
                if len(found) < most:  # a match close to the end is a loop: it repeats with the loop's period
                    found = (found * (most // len(found) + 1))[:most]
                return found
        return []


@dataclass
class SpeculationMeter:
    """Whether a verify step of k+1 tokens yields more tokens per second than one-token steps, as measured.

    Running averages of a one-token step's time, a verify step's time and the tokens a verify step yields
    (the accepted drafts plus the token sampled after them). The first drafts are verified, then one-token steps
    are timed (even where there are drafts); while drafts do not pay, the next draft after every `probe` passed
    is still tried, as text can turn to copying at any point.
    """

    always: bool = False  # "on": speculate whenever there is a draft
    probe: int = 32
    warm: int = 4
    step_seconds: float = 0.0
    verify_seconds: float = 0.0
    yield_per_verify: float = 0.0
    steps: int = 0
    verifies: int = 0
    skipped: int = 0
    probe_due: bool = False

    def wants(self) -> bool:
        """Whether to verify the draft the next position may have (a one-token step need not wait to see it)."""
        if self.always or self.verifies < self.warm:
            return True
        if self.steps < self.warm:  # drafts at every position so far: time one-token steps too
            return False
        return self.probe_due or self.yield_per_verify / self.verify_seconds > 1 / self.step_seconds

    def passed_over(self) -> None:
        """A draft was there and not verified."""
        self.skipped += 1
        self.probe_due = self.probe_due or self.skipped % self.probe == 0

    def stepped(self, seconds: float) -> None:
        """One one-token step took `seconds`."""
        self.steps += 1
        self.step_seconds = _average(self.step_seconds, seconds, self.steps)

    def verified(self, seconds: float, tokens: int) -> None:
        """One verify step took `seconds` and yielded `tokens` (accepted drafts plus one)."""
        self.verifies, self.probe_due = self.verifies + 1, False
        self.verify_seconds = _average(self.verify_seconds, seconds, self.verifies)
        self.yield_per_verify = _average(self.yield_per_verify, tokens, self.verifies)


def _average(mean: float, value: float, count: int, span: int = 16) -> float:
    """A running mean over the first `span` values, then an exponential average with that span."""
    return mean + (value - mean) / min(count, span)
