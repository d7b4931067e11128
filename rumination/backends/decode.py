"""Prefill and decode on a KV cache kept between turns: prefix reuse, chunked prefill, a compiled decode step."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import (
    Cache,
    DynamicCache,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import Fp8QuantizedLayer, StaticLayer

from rumination.backends import attention
from rumination.backends.lookup import Drafter, PromptLookup, SpeculationMeter
from rumination.neterrors import brief

CacheKind = Literal["static", "dynamic", "fp8"]
FIRST_WINDOW = 8192  # a static cache's first attention window
GROWTH = 4  # each larger window is 4x the last: at most three compiled graphs up to 128K
COMPILED_GRAPHS = 64  # graphs of one step function kept in a process (a Decoder compiles one per window)


class WindowedLayer(StaticLayer):
    """Allocated once for the whole context; attention reads only the first `window` positions.

    A plain static cache attends over every preallocated position on every step, so a 1K-token decode
    with a 64K cache would read 64K positions of K/V per layer. The window grows 8K, 32K, 128K: a
    compiled decode step is recompiled once per window, and reads at most 4x the K/V in use.
    """

    def __init__(self, max_cache_len: int, first_window: int = FIRST_WINDOW):
        super().__init__(max_cache_len=max_cache_len)
        self.window = min(first_window, max_cache_len)

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        return keys[:, :, : self.window], values[:, :, : self.window]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.window, 0


class SpanLayer(WindowedLayer):
    """A windowed layer whose window is the length of a shared `span` tensor: compiled, a size the graph takes as an
    input, so one graph serves every window (one CUDA graph recorded per size) and windows can be fine-grained."""

    span: Any = None

    @property  # type: ignore[override]
    def window(self) -> int:
        return self.span.shape[0]

    @window.setter
    def window(self, size: int) -> None:
        if self.span is None or self.span.shape[0] != size:
            self.span = torch.empty(size, dtype=torch.uint8, device=self.device if self.is_initialized else "cpu")


class Fp8Layer(Fp8QuantizedLayer):
    """transformers' FP8 cache layer (half the memory of bf16), made croppable so turns can share a prefix."""

    is_croppable = True

    def crop(self, max_length: int) -> None:
        keep = self.cumulative_length + max_length if max_length < 0 else max_length
        if self.is_initialized and keep < self.cumulative_length:
            (keys, key_scale), (values, value_scale) = self._quantized_keys, self._quantized_values
            self._quantized_keys = (keys[..., :keep, :], key_scale)
            self._quantized_values = (values[..., :keep, :], value_scale)
        self.cumulative_length = min(self.cumulative_length, keep)


def make_cache(
    model: Any, kind: CacheKind, max_tokens: int, first_window: int = FIRST_WINDOW, span: bool = False
) -> Any:
    """A KV cache of the given kind for `model`, holding at most `max_tokens` (static caches preallocate them)."""
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    if kind == "static":
        layer = SpanLayer if span else WindowedLayer
        return Cache(layers=[layer(max_tokens, first_window) for _ in range(layers)])
    if kind == "fp8":
        return Cache(layers=[Fp8Layer() for _ in range(layers)])
    return DynamicCache(config=model.config)


def window_for(tokens: int, max_tokens: int, first: int = FIRST_WINDOW, growth: int = GROWTH) -> int:
    """The smallest `first` * growth**k that covers `tokens`, capped at the cache size."""
    window = first
    while window < tokens:
        window *= growth
    return min(window, max_tokens)


def sampler(temperature: float, top_p: float, top_k: int = 0) -> Callable[[Any], Any]:
    """Pick the next token from last-position logits: argmax at temperature 0, else transformers' warpers.

    The warpers run in `generate`'s order: temperature, top-k (0: none), top-p.
    """
    if temperature <= 0:
        return lambda logits: logits.argmax(-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    warpers.append(TopPLogitsWarper(top_p))

    def sample(logits: Any) -> Any:
        scores = warpers(None, logits.float())
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]

    return sample


@dataclass
class Decoded:
    """One generation's tokens and where its time went."""

    ids: list[int]
    reused: int
    prefill_seconds: float
    decode_seconds: float
    drafted: int = 0  # prompt-lookup draft tokens verified
    accepted: int = 0  # of which the model's own choice


class Decoder:
    """Owns the model's KV cache across turns: reuse the common prefix, prefill the rest in chunks, then decode.

    With `draft` > 0, decoding is speculative where it measures faster: prompt-lookup drafts of up to `draft`
    tokens are fed with the last sampled token in one verify step, and a draft token is kept only while it
    equals the token the model picks at its position (greedy: the same output; sampling: the same distribution).
    """

    def __init__(
        self,
        model: Any,
        kind: CacheKind,
        max_tokens: int,
        prefill_chunk: int = 2048,
        compile_step: bool = False,
        reuse: bool = True,
        first_window: int = FIRST_WINDOW,
        growth: int = GROWTH,
        window_step: int = 0,
        compile_options: dict[str, Any] | None = None,
        draft: int = 0,
        meter: SpeculationMeter | None = None,
        drafter: Callable[[list[int]], Drafter] = PromptLookup,
    ):
        self.model, self.kind, self.max_tokens = model, kind, max_tokens
        self.prefill_chunk, self.reuse_prefix, self.first_window = prefill_chunk, reuse, first_window
        self.growth = growth  # a smaller growth reads less past the used cache, with more graphs to compile
        # window_step N: windows are multiples of N, the window a dynamic size of one compiled graph (experimental)
        self.window_step, self._spans = window_step, {}
        self.device = next(model.parameters()).device
        # flex attention: a compiled step reads the cache in use through a block mask, over one window of it all
        self.flex = getattr(model.config, "_attn_implementation", None) == attention.FLEX
        self.cache: Any = None
        self.ids: list[int] = []  # the tokens whose keys and values the cache holds
        self.compile_error: str | None = None  # why the decode step runs eagerly although compiling was asked
        self.draft, self.meter, self.drafter = draft, meter or SpeculationMeter(), drafter
        self.drafted = self.accepted = 0  # this generation's draft tokens verified, and accepted
        self.ahead = True  # feed a one-token step its token before reading it (False: read first, for benchmarks)
        self._host: Any = None  # pinned memory a token is copied to while the next step runs (CUDA)
        self._copied: Any = None  # the event that copy completes
        # One graph per window size, never a dynamic-shape one; CUDA graphs make a step one launch.
        # (With window_step, the window's size alone is dynamic: marked so on its span tensor.)
        options = {"dynamic": False, **(compile_options or {"mode": "reduce-overhead"})}
        if compile_step:  # every Decoder's graphs count against dynamo's limit of 8 per function (tests passed it)
            dynamo, limit = torch._dynamo.config, "recompile_limit"
            limit = limit if hasattr(dynamo, limit) else "cache_size_limit"  # its name before torch 2.7
            setattr(dynamo, limit, max(getattr(dynamo, limit), COMPILED_GRAPHS))
        self._step = torch.compile(self._forward, fullgraph=True, **options) if compile_step else None
        self._verify = torch.compile(self._forward_all, fullgraph=True, **options) if compile_step and draft else None

    @property
    def cached_tokens(self) -> int:
        """How many tokens the kept cache holds."""
        return len(self.ids)

    def reset(self) -> None:
        """Empty the cache; after an error mid-forward some layers may hold more than `ids` says."""
        if self.kind == "static" and self.cache is not None:
            self.cache.reset()  # in place: compiled graphs keep pointing at the same buffers
        else:
            self.cache = None  # a fresh one also drops an FP8 cache's frozen scale
        self.ids = []

    def reuse(self, ids: list[int]) -> int:
        """Keep the cached tokens `ids` starts with, crop the rest; return how many are kept.

        The chat template drops earlier thinking, so a new prompt diverges from the cache where the
        previous assistant turn begins. At least one prompt token is always left to compute, so there
        are logits to sample from.
        """
        common, limit = 0, min(len(self.ids), len(ids) - 1) if self.reuse_prefix else 0
        while common < limit and self.ids[common] == ids[common]:
            common += 1
        if common == 0 and self.ids:
            self.reset()
        elif len(self.ids) > common:
            self._keep(common)
        if self.cache is None:
            self.cache = make_cache(self.model, self.kind, self.max_tokens, self.first_window, bool(self.window_step))
        return common

    def _keep(self, count: int) -> None:
        """Crop the cache to its first `count` tokens."""
        if count < len(self.ids):
            self.cache.crop(count - len(self.ids))  # a negative count removes that many tokens
            self.ids = self.ids[:count]

    def _forward(self, input_ids: Any, positions: Any) -> Any:
        """One forward pass over `input_ids` at `positions` on the cache; logits of the last position only."""
        return self._model(input_ids, positions, 1).logits[:, -1]

    def _forward_all(self, input_ids: Any, positions: Any) -> Any:
        """One forward pass over `input_ids` at `positions` on the cache; the logits after each of them."""
        return self._model(input_ids, positions, input_ids.shape[1]).logits[0]

    def _model(self, input_ids: Any, positions: Any, keep: int) -> Any:
        # Positions passed in, not derived from the cache length the step updates: flex attention's rule reads them.
        return self.model(
            input_ids=input_ids, position_ids=positions, cache=self.cache, use_cache=True, logits_to_keep=keep
        )

    def _ids(self, tokens: list[int]) -> Any:
        return torch.tensor([tokens], device=self.device)

    def _positions(self, count: int) -> Any:
        """The positions of `count` tokens fed after the cached ones, made on the device."""
        return torch.arange(len(self.ids), len(self.ids) + count, device=self.device).unsqueeze(0)

    def _window(self, window: int) -> None:
        if self.kind != "static":
            return
        if self.window_step and (window % self.window_step == 0 or window == self.max_tokens):
            span = self._spans.get(window)  # one span per decode window: the same graph input every step
            if span is None:
                span = self._spans[window] = torch.empty(window, dtype=torch.uint8, device=self.device)
                torch._dynamo.mark_dynamic(span, 0)
                torch._dynamo.mark_static_address(span)
            for layer in self.cache.layers:
                layer.span = span
            return
        if self.cache.layers[0].window != window:  # set together: a decode step mostly keeps the last one
            for layer in self.cache.layers:
                layer.window = window

    def prefill(self, ids: list[int], cancelled: Callable[[], bool] = lambda: False) -> Any:
        """Feed the uncached tail of `ids` in chunks; the logits after its last token (None if cancelled)."""
        logits = None
        for start in range(len(self.ids), len(ids), self.prefill_chunk):
            if cancelled():
                return None
            piece = ids[start : start + self.prefill_chunk]
            self._window(start + len(piece))  # prefill is not compiled: attend over exactly what is there
            logits = self._forward(self._ids(piece), self._positions(len(piece)))
            self.ids += piece
        return logits

    def _run(self, compiled: Literal["_step", "_verify"], eager: Callable[..., Any], input_ids: Any) -> Any:
        step = getattr(self, compiled)
        inputs = input_ids, self._positions(input_ids.shape[1])
        if step is not None:
            try:
                torch.compiler.cudagraph_mark_step_begin()
                return step(*inputs).clone()  # the graph's output buffer is rewritten by the next replay
            except torch._dynamo.exc.TorchDynamoException as exc:  # raised while compiling, before the cache moves
                setattr(self, compiled, None)
                self.compile_error = brief(f"{type(exc).__name__}: {exc}", 300)
        return eager(*inputs)

    def step(self, token: int) -> Any:
        """Feed one generated token; return the next logits."""
        logits = self._feed(self._ids([token]))
        self.ids.append(token)
        return logits

    def _step_ahead(self, token: Any) -> tuple[Any, int]:
        """Feed `token`, a [1] tensor maybe still being computed on the GPU, and read it while the step runs: the next
        logits, and the token."""
        if not (isinstance(token, torch.Tensor) and token.is_cuda):
            value = int(token)
            return self.step(value), value
        if self._host is None:
            self._host, self._copied = torch.empty(1, dtype=torch.long, pin_memory=True), torch.cuda.Event()
        self._host.copy_(token, non_blocking=True)
        self._copied.record(torch.cuda.current_stream(token.device))  # the model's GPU, which may not be the current
        logits = self._feed(token.view(1, 1))
        self._copied.synchronize()  # the copy, not the step
        self.ids.append(int(self._host[0]))
        return logits, self.ids[-1]

    def _feed(self, input_ids: Any) -> Any:
        """Feed one token's [1, 1] id tensor, not adding it to `ids`; the next logits."""
        self._window(self._window_for(len(self.ids) + 1, self._step is not None))
        return self._run("_step", self._forward, input_ids)

    def verify(self, tokens: list[int]) -> Any:
        """Feed the last sampled token and a draft in one pass; the logits after each of them."""
        self._window(self._window_for(len(self.ids) + len(tokens), self._verify is not None))
        logits = self._run("_verify", self._forward_all, self._ids(tokens))
        self.ids += tokens
        return logits

    def _window_for(self, tokens: int, compiled: bool = False) -> int:
        if self.flex and compiled:
            return self.max_tokens  # the block mask, not the window, limits what the compiled step reads
        if self.window_step:
            return min(self.max_tokens, -(-max(tokens, 1) // self.window_step) * self.window_step)
        return window_for(tokens, self.max_tokens, self.first_window, self.growth)

    def windows(self) -> list[int]:
        """Every attention window a compiled decode step can use, smallest first."""
        sizes = [self._window_for(1, compiled=True)]
        while sizes[-1] < self.max_tokens:
            sizes.append(self._window_for(sizes[-1] + 1, compiled=True))
        return sizes

    def warm_up(self) -> str | None:
        """Compile and record the decode and verify steps for every window now, not mid-answer; the error if any.

        A step that cannot be compiled runs eagerly; a verify step that cannot leaves the one-token step compiled.
        """
        for name, eager, width in (("_step", self._forward, 1), ("_verify", self._forward_all, self.draft + 1)):
            if getattr(self, name) is None:
                continue
            try:
                with torch.inference_mode():
                    self.reset()
                    self.reuse([0, 0])
                    self.prefill([0])
                    for window in self.windows():
                        self._window(window)
                        for _ in range(3):  # compile, warm up, record the CUDA graph
                            self._run(name, eager, self._ids([0] * width))
                            self.cache.crop(-width)  # keep the warm-up inside the smallest window
            except torch.cuda.OutOfMemoryError as exc:
                if name == "_step":
                    raise
                self._verify, self.draft = None, 0  # no room for the verify graphs: decode without drafts
                self.compile_error = f"out of memory: {brief(str(exc), 200)}"
            except Exception as exc:  # a compiler or CUDA-graph failure: this step runs eagerly instead
                setattr(self, name, None)
                self.compile_error = brief(f"{type(exc).__name__}: {exc}", 300)
            finally:
                with torch.inference_mode():
                    self.reset()
        return self.compile_error

    def _drafted(self, lookup: Drafter | None, wanted: int) -> list[int]:
        """The draft there is now, or none: no match, or no room for it in the cache or in the generation.

        `wanted` is how many more tokens the generation may take after the one about to be fed.
        """
        if lookup is None or wanted < 2 or len(self.ids) + 1 + self.draft > self.max_tokens:
            return []
        return lookup.draft(min(self.draft, wanted - 1))

    def _picked(self, logits: Any, pick: Callable[[Any], Any], prompt: list[int], most: int) -> Iterator[int]:
        """The model's next `most` tokens one by one, from one-token steps or verified drafts (accepted, plus one).

        A one-token step is fed its token while that is still on the device, and the token is read while the step
        runs: the host's work on each token (streaming it, the caller's stop checks) overlaps the next step. While
        drafts are verified (the meter wants them), every token is read first, as its draft depends on it.
        """
        lookup = self.drafter(prompt) if self.draft else None
        picked: list[int] = []  # read, to give before `pending`: accepted draft tokens
        pending: Any = pick(logits)  # the token after them: on the device, or an int after a verify step
        given, arrived, timed = 0, time.perf_counter(), False
        while True:
            wants = lookup is not None and self.meter.wants()  # a draft there would be verified
            more = most - given - len(picked) > 1  # a token after `pending` is wanted
            ahead = self.ahead and more and not wants
            if ahead:
                logits, last = self._step_ahead(pending)
            else:
                last = int(pending)  # waits for the device
            now = time.perf_counter()
            if timed:  # tokens from one-token steps arrive one step apart
                self.meter.stepped(now - arrived)
            arrived = now
            for token in [*picked, last]:
                if lookup is not None:
                    lookup.add(token)
                given += 1
                yield token
            started, draft = time.perf_counter(), self._drafted(lookup, most - given)
            if ahead or not (draft and wants):
                if draft:
                    self.meter.passed_over()
                if not ahead:
                    logits = self.step(last)
                picked, pending = [], pick(logits)
                timed = ahead or not self.ahead  # the steps drafts compete with (all, where none is fed ahead)
                continue
            padded = draft + [draft[-1]] * (self.draft - len(draft)) if self._verify is not None else draft
            # A compiled verify step has one shape; padding is as valid a draft as any. Row i is the model's pick
            # after the first i fed draft tokens, meaningful while they were all accepted.
            targets = pick(self.verify([last, *padded])).tolist()
            accepted = next((i for i, (d, t) in enumerate(zip(padded, targets, strict=False)) if d != t), len(padded))
            picked, pending, timed = targets[:accepted], targets[accepted], False
            self._keep(len(self.ids) - len(padded) + accepted)
            self.meter.verified(time.perf_counter() - started, accepted + 1)
            self.drafted, self.accepted = self.drafted + len(draft), self.accepted + min(accepted, len(draft))

    def generate(
        self,
        ids: list[int],
        max_new_tokens: int,
        pick: Callable[[Any], Any],
        stop_ids: list[int],
        on_token: Callable[[int], bool] = lambda token: True,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Decoded:
        """Reuse, prefill, then decode until a stop id, `max_new_tokens`, or `on_token` returns False."""
        if not ids or max_new_tokens < 1:
            raise ValueError("generation needs a prompt token and at least one new token")
        if len(ids) + max_new_tokens - 1 > self.max_tokens:  # the last new token is never fed back
            raise ValueError(f"{len(ids)} prompt + {max_new_tokens} new tokens do not fit {self.max_tokens}")
        started = time.perf_counter()
        out: list[int] = []
        self.drafted = self.accepted = 0
        try:
            with torch.inference_mode():
                reused = self.reuse(ids)
                logits = self.prefill(ids, cancelled)
                prefilled = time.perf_counter()
                if logits is not None:
                    for token in self._picked(logits, pick, ids, max_new_tokens):
                        if not out:
                            prefilled = time.perf_counter()  # the first pick waited for the device: prefill is real
                        out.append(token)
                        if not on_token(token) or token in stop_ids or len(out) >= max_new_tokens:
                            break
                    # A verified draft, or a step fed ahead (a stop token's), may have gone past the last token kept.
                    self._keep(len(ids) + len(out) - 1)
        except BaseException:
            with torch.inference_mode():
                self.reset()
            raise
        return Decoded(out, reused, prefilled - started, time.perf_counter() - prefilled, self.drafted, self.accepted)
