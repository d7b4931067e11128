"""The fixed system prompt's settings (thinking and search-keyword language, this year), applied to each prompt."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from rumination.backends.base import Prompt, render
from rumination.config import Config
from rumination.protocol import (
    ASSISTANT,
    LANGUAGE_WORDS,
    OBSERVATION,
    SEARCH_LANGUAGE_LINE,
    SYSTEM,
    TEMPLATE_YEAR,
    THINKING_LANGUAGE_LINE,
    USER,
    YEAR_LINE,
    Language,
)

ROLE_TOKENS = (SYSTEM, USER, ASSISTANT, OBSERVATION)
_WORDS = "|".join(word for words in LANGUAGE_WORDS.values() for word in words)


def _line_pattern(line: str, slot: str, value: str, *, whole_line: bool = True) -> re.Pattern[str]:
    """A template line as a regex: (text before the slot)(the slot's value)(text after), spacing and colon loose."""
    before, _, after = line.partition("{" + slot + "}")

    def loose(text: str) -> str:
        return "".join("[ \t]*" if ch == " " else "[：:]" if ch in "：:" else re.escape(ch) for ch in text.strip())

    lead = "^[ \t]*" if whole_line else ""
    return re.compile(f"({lead}{loose(before)}[ \t]*)({value})([ \t]*{loose(after)})", re.MULTILINE)


_SEARCH = _line_pattern(SEARCH_LANGUAGE_LINE, "language", _WORDS)
_THINKING = _line_pattern(THINKING_LANGUAGE_LINE, "language", _WORDS)
_YEAR = _line_pattern(YEAR_LINE, "year", r"\d{4}", whole_line=False)


@dataclass(frozen=True)
class SystemSettings:
    """What to set in the system segment; `year` None keeps the template's year."""

    thinking: Language = "en"
    search: Language = "en"
    year: int | None = None

    @classmethod
    def from_config(cls, config: Config, clock: Callable[[], date] = date.today) -> SystemSettings:
        """The settings of one run; the clock is read here, once, so every turn's prompt says the same year."""
        year = config.today.year if config.today else clock().year if config.current_year else None
        return cls(config.thinking_language, config.search_language, year)

    def edit(self, system: str) -> tuple[str, list[str]]:
        """Apply the settings to a system text; also return the requested ones that found no line to edit."""
        missed = []
        for pattern, language, name, line in (
            (_THINKING, self.thinking, "thinking_language", THINKING_LANGUAGE_LINE),
            (_SEARCH, self.search, "search_language", SEARCH_LANGUAGE_LINE),
        ):
            system, found = pattern.subn(lambda m, lang=language: m[1] + _word(m[2], lang) + m[3], system)
            if not found and language != "en":  # English is the template's own value: nothing was asked
                missed.append(f"{name}={language} ({line.format(language=LANGUAGE_WORDS['en'][0]).strip(' *')})")
        if self.year is not None:
            system, found = _YEAR.subn(lambda m: f"{m[1]}{self.year}{m[3]}", system)
            if not found:  # the current year is the default promise: say when a template cannot take it
                missed.append(f"the year {self.year} ({YEAR_LINE.format(year=TEMPLATE_YEAR)})")
        return system, missed


def _word(current: str, language: Language) -> str:
    """The template's own word when it already names `language` (英语 or 英文), else the standard one."""
    return current if current in LANGUAGE_WORDS[language] else LANGUAGE_WORDS[language][0]


def system_span(prompt: str) -> tuple[int, int] | None:
    """Where the system text lies: after a leading <|system|> up to the next role token; None without one."""
    found = [(i, token) for token in ROLE_TOKENS if (i := prompt.find(token)) >= 0]
    if not found or min(found)[1] != SYSTEM:
        return None
    start = min(found)[0] + len(SYSTEM)
    ends = [i for token in ROLE_TOKENS if (i := prompt.find(token, start)) >= 0]
    return start, min(ends, default=len(prompt))


def edit_system(prompt: str, settings: SystemSettings) -> tuple[str, list[str]]:
    """Edit the system segment of a rendered prompt (never user text or observations); also return what missed."""
    span = system_span(prompt)
    if span is None:
        return prompt, settings.edit("")[1]
    start, end = span
    system, missed = settings.edit(prompt[start:end])
    return prompt[:start] + system + prompt[end:], missed


class PromptRenderer:
    """Renders one run's prompts with the tokenizer's template, the system segment edited the same way each turn.

    Build one per run: the year is fixed when it is built, so the prompt prefix stays byte-identical across
    turns (the KV cache reuses it) even if the run crosses New Year's midnight.
    """

    def __init__(self, tokenizer: Any, settings: SystemSettings):
        self.tokenizer, self.settings = tokenizer, settings
        missed = edit_system(render(tokenizer, [{"role": "user", "content": "?"}]), settings)[1]
        # A lasting line, once per run: a requested setting the template has no line for.
        self.notice: str | None = (
            f"the chat template's system prompt has no line to edit for {', '.join(missed)}: not applied"
            if missed
            else None
        )

    @classmethod
    def for_run(cls, tokenizer: Any, config: Config) -> PromptRenderer:
        """The renderer of one run with this configuration."""
        return cls(tokenizer, SystemSettings.from_config(config))

    def render(self, messages: list[dict[str, str]], turn: int = 0) -> Prompt:
        """The prompt for `messages` (for generation `turn`), ending with `<|assistant|>`, its system segment edited."""
        text = edit_system(render(self.tokenizer, messages), self.settings)[0]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # counted once: the loop and the backend
        return Prompt(text, tuple(dict(m) for m in messages), ids, turn)
