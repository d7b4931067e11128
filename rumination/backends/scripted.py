"""Replay recorded model outputs: for tests, demos and debugging the loop without a GPU."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import Chunk, Outcome, Progress, Prompt, SamplingParams, cut_at_stop, load_tokenizer
from rumination.config import Config
from rumination.errors import BackendError, ConfigError
from rumination.protocol import DEFAULT_MODEL


class ScriptedBackend:
    """Each generation returns a string of a JSON array, cut at the first stop token.

    A run's prompt for turn n gets output n (the report's prompt, after n tool turns, gets output n + 1), so a
    resumed run continues its script where it stopped; a prompt that names no turn gets the next output. A string
    longer than `max_new_tokens` is cut there and ends with finish_reason "length", as a real engine would. Every
    prompt is kept in `prompts` so tests can assert on it. `for_run()` gives a copy with no prompts recorded and the
    script from its start (a batch takes one per question).
    """

    name = "scripted"

    def __init__(self, config: Config | None = None, outputs: list[str] | None = None, chunk_chars: int = 24):
        config = config or Config(backend="scripted")
        if outputs is None:
            if config.script is None:
                raise ConfigError("the scripted backend needs --script PATH (a JSON array of model outputs)")
            outputs = read_script(config.script)
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.chunk_chars = chunk_chars
        # Without -m, render with the bundled tokenizer whose template has the real one's shape.
        self._tokenizer_source = str(bundled_tokenizer_dir()) if config.model == DEFAULT_MODEL else config.model
        self.model_id = "scripted" if config.model == DEFAULT_MODEL else config.model
        self.context_window = config.context_window or 131072
        self.tokenizer: Any = None

    def for_run(self) -> Self:
        """A backend for one more run: it replays the script from its start and shares the loaded tokenizer."""
        run = copy.copy(self)
        run.prompts = []
        return run

    def load(self, progress: Progress | None = None) -> None:
        """Load the tokenizer used to render and count."""
        self.tokenizer = load_tokenizer(self._tokenizer_source)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Stream the next scripted output."""
        index = prompt.turn - 1 if prompt.turn else len(self.prompts)
        if index >= len(self.outputs):
            raise BackendError(
                f"the script ran out of outputs: generation {index + 1} was asked for and the script has "
                f"{len(self.outputs)}. A run needs one output per tool turn plus one for the report after the finish "
                "call"
            )
        start = time.perf_counter()
        self.prompts.append(prompt.text)
        text, finish = cut_at_stop(self.outputs[index]), "stop"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > params.max_new_tokens:
            ids = ids[: params.max_new_tokens]
            text, finish = self.tokenizer.decode(ids), "length"
        for i in range(0, len(text), self.chunk_chars):
            yield Chunk(text=text[i : i + self.chunk_chars])
            await asyncio.sleep(0)
        prompt_tokens = len(prompt.token_ids(self.tokenizer))
        generated = len(ids) + (finish == "stop")  # the stop token is generated too
        seconds = time.perf_counter() - start
        outcome = Outcome(
            text=text, finish_reason=finish, prompt_tokens=prompt_tokens, generated_tokens=generated, seconds=seconds
        )
        yield Chunk(outcome=outcome)

    async def aclose(self) -> None:
        """Nothing to release."""


def read_script(path: Path) -> list[str]:
    """Read a script file: a JSON array of strings."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"script file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read script {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ConfigError(f"script {path} must be a JSON array of strings (one model output each)")
    if not data:
        raise ConfigError(f"script {path} has no outputs: a run needs at least a finish call and a report")
    return data
