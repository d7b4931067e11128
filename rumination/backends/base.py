"""The model backend Protocol: render with the tokenizer's template, stream a generation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rumination.errors import BackendError
from rumination.protocol import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P, STOP_TOKENS
from rumination.results import GenerationUsage

Progress = Callable[[str], None]


class OutOfMemory(BackendError):
    """The accelerator ran out of memory for this prompt; a shorter context may still fit."""


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample one generation (transformers' order: temperature, then top-k, then top-p)."""

    max_new_tokens: int
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K  # 0: no limit
    seed: int | None = None


class Outcome(GenerationUsage):
    """How a generation ended: its text, with its accounting."""

    text: str


@dataclass(frozen=True)
class Prompt:
    """One prompt: the text the chat template rendered, and the messages it was rendered from (for chat APIs)."""

    text: str
    messages: tuple[dict[str, str], ...] = ()
    ids: list[int] | None = field(default=None, compare=False, repr=False)  # the text's tokens, when counted already
    turn: int = 0  # the run's generation it is for: tool turn n, or the report's (tool turns + 1); 0: not a run's

    @classmethod
    def of(cls, tokenizer: Any, messages: list[dict[str, str]]) -> Prompt:
        """Render `messages` with the tokenizer's own template."""
        return cls(render(tokenizer, messages), tuple(dict(m) for m in messages))

    def token_ids(self, tokenizer: Any) -> list[int]:
        """The text's tokens (no special tokens added): those counted when it was rendered, else counted now."""
        return self.ids if self.ids is not None else tokenizer(self.text, add_special_tokens=False)["input_ids"]


@dataclass
class Chunk:
    """A piece of streamed text; the last chunk of a generation carries its Outcome.

    A chunk with `restart` set says the generation starts over (the reason): drop what it streamed so far.
    """

    text: str = ""
    outcome: Outcome | None = None
    restart: str | None = None


@runtime_checkable
class ModelBackend(Protocol):
    """A loaded model that continues a rendered prompt until one of the stop ids."""

    name: str
    model_id: str
    context_window: int
    tokenizer: Any  # a transformers tokenizer: its chat template renders every prompt

    def load(self, progress: Progress | None = None) -> None:
        """Load weights and tokenizer (blocking; called off the event loop); `progress` takes status lines.

        A backend may also keep a `load_notes` list of lines worth keeping on screen after loading, and set
        `concurrent = True` when several runs may generate through it at once (a serving engine).
        """
        ...

    def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Stream the continuation of `prompt.text`; the final chunk carries the Outcome."""
        ...

    async def aclose(self) -> None: ...


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Render the conversation with the tokenizer's own chat template, ending with `<|assistant|>`."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def cut_at_stop(text: str) -> str:
    """Drop everything from the first stop token on, as an engine that stops on the stop ids would."""
    cut = min((i for i in (text.find(t) for t in STOP_TOKENS) if i >= 0), default=len(text))
    return text[:cut]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids of <|endoftext|>, <|user|> and <|observation|> in this tokenizer."""
    ids = []
    for token in STOP_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise BackendError(f"this tokenizer has no {token} token: it is not a GLM-4-0414 tokenizer")
        ids.append(token_id)
    return ids


def load_tokenizer(name_or_path: str, local_files_only: bool | None = None) -> Any:
    """Load a tokenizer, turning a missing model into a clear error; None: look in the cache before the hub."""
    from transformers import AutoTokenizer

    from rumination.backends.hub import locate

    if local_files_only is None:
        local_files_only = locate(name_or_path, "tokenizer_config.json").local_files_only
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"cannot load the tokenizer of {name_or_path!r}: {' '.join(str(exc).split())[:300]}\n"
            "Pass -m with a local model directory, or a Hugging Face id you can download."
        ) from None
