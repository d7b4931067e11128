"""Drive the model through a serving engine (vLLM, SGLang, any OpenAI-compatible server) with the openai SDK."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from rumination.backends.base import (
    Chunk,
    Outcome,
    OutOfMemory,
    Progress,
    Prompt,
    SamplingParams,
    cut_at_stop,
    load_tokenizer,
    stop_token_ids,
)
from rumination.config import Config
from rumination.errors import BackendError, ConfigError
from rumination.protocol import STOP_TOKENS, THINK_CLOSE, THINK_OPEN
from rumination.streaming import split_thinking

FINISHED = ("stop", "length")  # anything else ("abort", none at all) is a generation lost
REASONING = ("reasoning_content", "reasoning")  # where reasoning parsers put the thinking (SGLang, vLLM)
CONNECT_SECONDS = 10.0  # an unreachable server should fail fast; a slow first token is the read timeout's business
CHAT_NOTE = (
    "chat mode: the server's own chat template renders the prompt, so the system-prompt settings (languages, year) "
    "are not applied, the thinking may be cut by a reasoning parser, and token counts are estimates "
    "(--openai-mode completions is exact)"
)


class PromptTooLong(OutOfMemory):
    """The server refused the prompt as longer than its context: a shorter one may still fit."""


@dataclass
class _Attempt:
    """What one streamed request returned."""

    text: list[str] = field(default_factory=list)
    finish: str | None = None
    usage: Any = None
    first: float | None = None
    thinking: bool = False  # inside a reasoning parser's separate thinking field
    stopped: bool = False  # a stop token showed up in the text: the server ignored the stop ids


class ServerBackend:
    """A served model: prompts rendered and tokenized here, generated there.

    In completions mode (the default) the prompt goes out as token ids, so the server cannot re-apply a
    template or add special tokens: what the model sees is byte for byte what the local backend would feed it.
    """

    name = "openai"
    concurrent = True  # a serving engine batches many runs at once

    def __init__(self, config: Config):
        if not config.base_url:
            raise ConfigError(
                "the openai backend needs --base-url URL: the server's API root, e.g. http://localhost:8000/v1"
            )
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.model_id = config.served_model or config.model  # the served name once loaded (vLLM's default: -m)
        self.context_window = config.context_window or 131072
        self.tokenizer: Any = None
        self.stop_ids: list[int] = []
        self.load_notes: list[str] = []
        # One AsyncOpenAI per event loop (its connection pool is bound to it), gone with its loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._reports_cache = False  # the server has reported cached prompt tokens (and omits them at zero)

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self, progress: Progress | None = None) -> None:
        """Load the tokenizer of -m (no weights), then ask the server what it serves and how long its context is."""
        say = progress or (lambda line: None)
        if self.tokenizer is not None:
            return
        self.load_notes = []
        say(f"loading the tokenizer of {self.config.model}")
        tokenizer = load_tokenizer(self.config.model)
        try:
            self.stop_ids = stop_token_ids(tokenizer)
        except BackendError:  # not GLM's tokenizer (a judge model): the server stops on the model's own EOS
            self.stop_ids = []
            self.load_notes.append(f"{self.config.model} is not a GLM-4-0414 tokenizer: the server's own stops apply")
        say(f"asking {self.base_url} which models it serves")
        served = self._served_models()
        self.model_id = self._pick_model(served)
        self._fit_context(served[self.model_id])
        if self.config.openai_mode == "chat":
            self.load_notes.append(CHAT_NOTE)
        self.tokenizer = tokenizer

    def _client_options(self) -> dict[str, Any]:
        import openai

        key = self.config.openai_api_key
        return {
            "base_url": self.base_url,
            # Never fall back to OPENAI_API_KEY: that account's key must not go to an arbitrary server.
            "api_key": key.get_secret_value() if key else "EMPTY",
            "timeout": openai.Timeout(self.config.server_timeout, connect=CONNECT_SECONDS),
            "max_retries": self.config.server_retries,
            # Nor the account's organisation and project, which the SDK would read from the environment.
            "default_headers": {"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()},
        }

    def _served_models(self) -> dict[str, dict[str, Any]]:
        import openai

        with openai.OpenAI(**self._client_options()) as client:
            try:
                models = list(client.models.list())
            except openai.OpenAIError as exc:
                raise self._error(exc) from None
        if not models:
            raise BackendError(f"the server at {self.base_url} serves no model")
        return {m.id: {**(m.model_extra or {})} for m in models}

    def _pick_model(self, served: dict[str, dict[str, Any]]) -> str:
        names = ", ".join(sorted(served))
        wanted = self.config.served_model
        if wanted is None:
            if len(served) == 1:
                return next(iter(served))
            raise ConfigError(
                f"the server at {self.base_url} serves several models ({names}): pick one with --served-model"
            )
        if wanted not in served:
            raise ConfigError(f"the server at {self.base_url} does not serve {wanted!r}; it serves: {names}")
        return wanted

    def _fit_context(self, model: dict[str, Any]) -> None:
        """Never promise the loop more context than the server holds (vLLM and SGLang report max_model_len)."""
        reported = model.get("max_model_len")
        if not isinstance(reported, int) or reported <= 0:
            return
        if self.config.context_window is None:
            self.context_window = min(self.context_window, reported)
        if reported < self.context_window:
            self.load_notes.append(
                f"the server's context is {reported:,} tokens (max_model_len), less than the {self.context_window:,} "
                f"configured: research is capped at {reported:,}"
            )
            self.context_window = reported
        else:
            self.load_notes.append(f"{self.context_window:,}-token context window (the server holds {reported:,})")

    # --- generating ----------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        import openai

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = openai.AsyncOpenAI(**self._client_options())
        return client

    async def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Stream one generation; a connection lost mid-stream is retried once from the start."""
        import openai

        ids = prompt.token_ids(self.tokenizer)
        room = self.context_window - len(ids) - 1  # SGLang refuses prompt + max_tokens == its context length
        if room < 1:
            raise PromptTooLong(f"the prompt ({len(ids):,} tokens) fills the {self.context_window:,}-token window")
        params = replace(params, max_new_tokens=min(params.max_new_tokens, room))
        start = time.perf_counter()
        for attempt in (1, 2):
            got = _Attempt()
            stream, params = await self._open(prompt, ids, params)
            try:
                async with stream:
                    async for event in stream:
                        for piece in self._pieces(event, got):
                            got.first = got.first if got.first is not None else time.perf_counter() - start
                            piece = _until_stop(got, piece)
                            if piece:
                                yield Chunk(text=piece)
                        if got.stopped:  # the server went past a stop token: closing the stream aborts it
                            break
                lost = None if got.finish in FINISHED else f"the generation ended with {got.finish or 'nothing'}"
            except openai.APIConnectionError as exc:
                lost = None if got.finish in FINISHED else _reason(exc)  # lost after the end: nothing lost
            except openai.OpenAIError as exc:  # an error event inside the stream
                raise self._error(exc) from None
            if lost is None:
                break
            if attempt == 2:
                raise BackendError(f"lost the connection to {self.base_url} mid-generation twice ({lost})")
            yield Chunk(restart=f"lost the connection to {self.base_url} mid-generation ({lost})")
        yield Chunk(outcome=self._outcome(got, ids, time.perf_counter() - start))

    async def _open(self, prompt: Prompt, ids: list[int], params: SamplingParams) -> tuple[Any, SamplingParams]:
        """Start the streamed request; a server whose window is smaller than it said (or never said) is believed."""
        import openai

        for _ in range(2):
            try:
                return await self._request(prompt, ids, params), params
            except openai.BadRequestError as exc:
                stated = re.search(r"maximum context length is (\d+)", _message(exc))
                if stated is None or int(stated[1]) >= self.context_window:
                    raise self._error(exc) from None
                self.context_window = int(stated[1])  # the loop's budgets follow from the next turn on
                room = self.context_window - len(ids) - 1
                if room < 1:
                    raise self._error(exc) from None
                params = replace(params, max_new_tokens=min(params.max_new_tokens, room))
            except openai.OpenAIError as exc:
                raise self._error(exc) from None
        raise BackendError(f"the model server at {self.base_url} keeps refusing the prompt's length")

    async def _request(self, prompt: Prompt, ids: list[int], params: SamplingParams) -> Any:
        extra: dict[str, Any] = {
            "top_k": params.top_k or -1,  # vLLM and SGLang: -1 is no limit (SGLang refuses 0)
            # Special tokens stay in the text: a server that ignores stop_token_ids still shows where the turn
            # ended, and cut_at_stop drops the rest (vLLM and SGLang leave the matched stop token out anyway).
            "skip_special_tokens": False,
        }
        if self.stop_ids and self.config.openai_mode == "completions":
            # Chat mode may drive another model (a judge): its ids are its own, and the string stops still hold.
            extra["stop_token_ids"] = self.stop_ids
        sampling: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": extra,
        }
        if self.stop_ids:
            sampling["stop"] = list(STOP_TOKENS)  # for servers that only stop on strings
        if params.seed is not None:
            sampling["seed"] = params.seed
        client = self._client()
        if self.config.openai_mode == "chat":
            return await client.chat.completions.create(messages=_chat_messages(prompt), **sampling)
        # The ids go in extra_body: the SDK's typed transform walks a list prompt item by item (0.76 s for 100K
        # ids, on the event loop, every turn); extra_body is merged into the JSON body as it is.
        sampling["extra_body"]["prompt"] = ids
        return await client.completions.create(prompt="", **sampling)

    def _pieces(self, event: Any, got: _Attempt) -> list[str]:
        """The text in one streamed event; a reasoning parser's separate thinking is put back inside <think>."""
        if event.usage is not None:
            got.usage = event.usage
        pieces = []
        for choice in (event.choices or [])[:1]:
            got.finish = choice.finish_reason or got.finish
            if self.config.openai_mode == "completions":
                pieces.append(choice.text or "")
                continue
            delta = choice.delta
            extra = delta.model_extra or {}
            thinking = next((value for k in REASONING if (value := getattr(delta, k, None) or extra.get(k))), None)
            if thinking:
                pieces.append(thinking if got.thinking else f"\n{THINK_OPEN}\n{thinking}")
                got.thinking = True
            if delta.content:
                pieces.append(f"\n{THINK_CLOSE}{delta.content}" if got.thinking else delta.content)
                got.thinking = False
        return [p for p in pieces if p]

    def _outcome(self, got: _Attempt, ids: list[int], seconds: float) -> Outcome:
        text = cut_at_stop("".join(got.text))  # a server that ignores stop_token_ids still never adds a turn
        usage = got.usage
        counted = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + (got.finish == "stop")
        generated = usage.completion_tokens if usage is not None and usage.completion_tokens else counted
        details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        if cached is not None:
            self._reports_cache = True
        elif self._reports_cache:  # vLLM and SGLang leave the details out when nothing was cached
            cached = 0
        prompt_tokens = usage.prompt_tokens if usage is not None and usage.prompt_tokens else len(ids)
        first = got.first
        return Outcome(
            text=text,
            finish_reason=got.finish,
            prompt_tokens=prompt_tokens,
            generated_tokens=generated,
            prefilled_tokens=prompt_tokens - cached if cached is not None else None,
            reused_tokens=cached,
            seconds=seconds,
            first_token_seconds=first,
            prefill_seconds=first,  # the server's queueing and prefill, as seen from here
            decode_seconds=seconds - first if first is not None else None,
        )

    def _error(self, exc: Exception) -> BackendError:
        """A clear message for what the server or the network said."""
        import openai

        url = self.base_url
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(f"the model server at {url} sent nothing for {self.config.server_timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            if self.tokenizer is not None:  # it answered before: it went away
                return BackendError(f"lost the model server at {url} ({_reason(exc)}): is it still running?")
            return BackendError(
                f"cannot reach the model server at {url} ({_reason(exc)}): is it running? "
                "See the README's serving engines section"
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            had = "refused the API key" if self.config.openai_api_key else "needs an API key"
            return BackendError(
                f"the model server at {url} {had} ({exc.status_code}): set RUMINATION_OPENAI_API_KEY or pass --api-key"
            )
        if isinstance(exc, openai.BadRequestError) and "context length" in _message(exc).lower():
            return PromptTooLong(f"the model server at {url} refused the prompt as too long ({_message(exc)})")
        if isinstance(exc, openai.NotFoundError):
            return BackendError(
                f"the model server at {url} answered 404 ({_message(exc)}): is --base-url the API root?"
            )
        if isinstance(exc, openai.APIStatusError):
            return BackendError(f"the model server at {url} refused the request ({exc.status_code}: {_message(exc)})")
        return BackendError(f"the model server at {url} failed: {_message(exc)}")

    async def aclose(self) -> None:
        """Close the connection pools."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RuntimeError):  # its event loop is gone
                await client.close()


def _until_stop(got: _Attempt, piece: str) -> str:
    """What of `piece` to stream: all of it, or what comes before a stop token's text (begun here or just before)."""
    seen = "".join(got.text[-2:]) + piece
    got.text.append(piece)  # the Outcome's text is cut again from the whole, so a token split across pieces goes too
    cut = cut_at_stop(seen)
    if len(cut) == len(seen):
        return piece
    got.stopped, got.finish = True, "stop"
    return cut[len(seen) - len(piece) :]


def _chat_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The conversation for a chat endpoint: thinking stripped from history, as the model's template does."""
    out = []
    for message in prompt.messages:
        content = message["content"]
        if message["role"] == "assistant":
            content = split_thinking(content)[1].strip()
        out.append({"role": message["role"], "content": content})
    return out


def _message(exc: Exception) -> str:
    import openai

    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        if text:
            return " ".join(str(text).split())[:300]
    if isinstance(exc, openai.APIError):
        return " ".join(exc.message.split())[:300]
    return str(exc)[:300]


def _reason(exc: Exception) -> str:
    """The network-level cause of a connection error, in a few words."""
    cause = exc.__cause__ or exc.__context__
    return " ".join(str(cause or exc).split())[:200] or type(cause or exc).__name__
