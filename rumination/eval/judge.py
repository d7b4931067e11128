"""A judge model grading reports with SimpleQA's scheme (correct, incorrect, not attempted), on any backend."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from pydantic import BaseModel

from rumination.backends.base import ModelBackend, Progress, Prompt, SamplingParams
from rumination.config import Config
from rumination.errors import BackendError, ConfigError, RuminationError
from rumination.eval.grader_template import GRADER_TEMPLATE
from rumination.streaming import split_thinking

# SimpleQA's three grades, and "unparsed" where the judge's reply named none of them (SimpleQA counts that as
# not attempted; here it is kept apart so a misbehaving judge shows).
Grade = Literal["correct", "incorrect", "not_attempted", "unparsed"]
_LETTER_GRADE: dict[str, Grade] = {"A": "correct", "B": "incorrect", "C": "not_attempted"}  # as the template lists them
_WORD_GRADE: dict[str, Grade] = {"CORRECT": "correct", "INCORRECT": "incorrect", "NOT_ATTEMPTED": "not_attempted"}
# A lone capital A, B or C (not "A" as an article before a lower-case word), or a grade word in capitals.
_LETTER = re.compile(r"(?<![A-Za-z0-9_])([ABC])(?![A-Za-z0-9_])(?! [a-z])")
_WORD = re.compile(r"\b(NOT[_ ]ATTEMPTED|INCORRECT|CORRECT)\b")
# Reports are long; the judge sees their head (the answer leads a report) within this many characters.
MAX_ANSWER_CHARS = 24_000


class Grading(BaseModel):
    """One grade, with the judge's reply (its thinking left out) so a grade can be checked."""

    grade: Grade
    output: str = ""
    error: str | None = None  # the judge backend failed: graded again when the evaluation resumes


def parse_grade(text: str) -> Grade:
    """The grade in a judge's reply: after its thinking, one letter (A, B, C) or grade word, named consistently."""
    _, answer = split_thinking(text)
    grades = {_LETTER_GRADE[m] for m in _LETTER.findall(answer)}
    grades |= {_WORD_GRADE[m.replace(" ", "_")] for m in _WORD.findall(answer)}
    return grades.pop() if len(grades) == 1 else "unparsed"


def grader_prompt(question: str, targets: list[str], predicted: str, max_chars: int = MAX_ANSWER_CHARS) -> str:
    """SimpleQA's grader template filled in; several gold answers are offered as alternatives."""
    target = targets[0] if len(targets) == 1 else "any of: " + "; ".join(targets)
    if len(predicted) > max_chars:
        predicted = predicted[:max_chars].rstrip() + " [...]"
    return GRADER_TEMPLATE.format(question=question, target=target, predicted_answer=predicted)


def judge_config(config: Config) -> Config | None:
    """The judge's settings: a copy with the judge_* settings in place of the research's, or None without a judge.

    A judge setting left unset keeps the research's value (the same server, say, with another served model), except
    that a judge on a server of its own inherits neither the research server's API key nor its served model name,
    and a judge without a model of its own (a tokenizer to render with) is asked in chat mode.
    """
    if config.judge_backend is None:
        return None
    update: dict[str, Any] = {"backend": config.judge_backend}
    if config.judge_model is None:  # -m's tokenizer is the research model's: let the server apply the judge's template
        update["openai_mode"] = "chat"
    if config.judge_base_url is not None and _api_root(config.judge_base_url) != _api_root(config.base_url):
        update |= {"openai_api_key": None, "served_model": None}
    for judge_field, field in (
        ("judge_model", "model"),
        ("judge_base_url", "base_url"),
        ("judge_served_model", "served_model"),
        ("judge_api_key", "openai_api_key"),
    ):
        if getattr(config, judge_field) is not None:
            update[field] = getattr(config, judge_field)
    return config.model_copy(update=update)


def _api_root(url: str | None) -> str | None:
    return url.strip().rstrip("/").lower() if url else None


def make_judge(config: Config, progress: Progress | None = None) -> Judge | None:
    """The judge the judge_* settings describe, or None when no judge backend is set."""
    settings = judge_config(config)
    return Judge.from_config(settings, progress) if settings is not None else None


# The research's flags in a backend's message, and the judge's own: the message is about the judge.
_JUDGE_FLAGS = {
    "--base-url": "--judge-base-url",
    "--served-model": "--judge-served-model",
    "--api-key": "--judge-api-key",
    "--backend": "--judge-backend",
    "-m": "--judge-model",
    "RUMINATION_OPENAI_API_KEY": "RUMINATION_JUDGE_API_KEY",
}
_RESEARCH_FLAG = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, _JUDGE_FLAGS)) + r")(?![\w-])")


def judge_error(exc: RuminationError) -> RuminationError:
    """The same error, said of the judge: its message names the judge's flags (a bad setting stays a ConfigError)."""
    message = _RESEARCH_FLAG.sub(lambda m: _JUDGE_FLAGS[m.group(1)], str(exc))
    message = f"the judge: {message} (the judge's settings: --judge-backend, --judge-base-url, --judge-model, ...)"
    return ConfigError(message) if isinstance(exc, ConfigError) else BackendError(message)


class Judge:
    """Grades (question, gold answers, report) with SimpleQA's template, greedily, on one backend."""

    def __init__(
        self,
        backend: ModelBackend,
        *,
        max_new_tokens: int = 4096,
        seed: int | None = None,
        progress: Progress | None = None,
    ):
        self.backend, self.progress = backend, progress
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, seed=seed)
        self._load_lock = asyncio.Lock()
        self._load_error: RuminationError | None = None  # a failed load is not tried again by every grade

    @classmethod
    def from_config(cls, config: Config, progress: Progress | None = None) -> Judge:
        """A judge on the backend `config` names (the judge's own settings: see judge_config)."""
        from rumination.registry import backends

        try:
            backend = backends.get(config.backend)(config)
        except RuminationError as exc:
            raise judge_error(exc) from None
        return cls(backend, max_new_tokens=config.max_new_tokens, seed=config.seed, progress=progress)

    @property
    def name(self) -> str:
        """The judge's backend and model, as recorded with each grade."""
        return f"{self.backend.name}:{self.backend.model_id}"

    @property
    def concurrent(self) -> bool:
        """Whether several grades may be asked for at once (a serving engine)."""
        return bool(getattr(self.backend, "concurrent", False))

    async def load(self) -> None:
        """Load the backend once, off the event loop (in a daemon thread: Ctrl-C need not wait for a model to load).

        An error says it is the judge's, and is raised again by every later call without trying again.
        """
        from rumination.agent import _in_daemon_thread

        async with self._load_lock:
            if self._load_error is not None:
                raise self._load_error
            if self.backend.tokenizer is None:
                if self.progress:
                    self.progress(f"loading the judge: {self.name} ...")
                try:
                    await _in_daemon_thread(lambda: self.backend.load(self.progress))
                except RuminationError as exc:
                    self._load_error = judge_error(exc)
                    raise self._load_error from None

    async def check(self, *, load: bool = True) -> None:
        """Fail fast, before the research: load the judge, or (load=False) only load its model's tokenizer.

        load=False is for a judge whose weights must wait until the research has freed the accelerator.
        """
        if load:
            await self.load()
            return
        from rumination.agent import _in_daemon_thread
        from rumination.backends.base import load_tokenizer

        if self.progress:
            self.progress(f"checking the judge: {self.name} (its tokenizer; the model loads after the research)")
        try:
            await _in_daemon_thread(lambda: load_tokenizer(self.backend.model_id))
        except RuminationError as exc:
            raise judge_error(exc) from None

    async def grade(self, question: str, targets: list[str], predicted: str) -> Grading:
        """Grade one answer; a failing backend is recorded as an unparsed grade with its error."""
        await self.load()
        messages = [{"role": "user", "content": grader_prompt(question, targets, predicted)}]
        text = ""
        try:
            async for chunk in self.backend.generate(Prompt.of(self.backend.tokenizer, messages), self.params):
                if chunk.outcome is not None:
                    text = chunk.outcome.text
        except BackendError as exc:
            return Grading(grade="unparsed", error=str(exc))
        return Grading(grade=parse_grade(text), output=split_thinking(text)[1].strip())

    async def aclose(self) -> None:
        """Release the backend."""
        await self.backend.aclose()
