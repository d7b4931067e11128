"""Run the model in process with transformers (GPU, or CPU for small models)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from rumination.backends.base import (
    Chunk,
    Outcome,
    OutOfMemory,
    Progress,
    Prompt,
    SamplingParams,
    load_tokenizer,
    stop_token_ids,
)
from rumination.backends.hub import locate
from rumination.backends.lookup import SpeculationMeter
from rumination.backends.memory import SPLIT_NOTE, context_fit, estimate_weight_bytes, one_gpu
from rumination.backends.plan import import_quantizers, plan_load
from rumination.config import Config
from rumination.errors import BackendError
from rumination.protocol import ARCHITECTURE, DEFAULT_MODEL

if TYPE_CHECKING:
    from rumination.backends.decode import Decoder

CPU_WEIGHT_LIMIT = 4e9  # bytes; larger models refuse to start on CPU unless --device cpu is explicit


@contextlib.contextmanager
def _report_gpu_fill(torch: Any, device: str, total_gib: float, say: Progress) -> Iterator[None]:
    """While weights load onto the GPU, report how much has arrived every few seconds."""
    done = threading.Event()

    def poll() -> None:
        while not done.wait(3.0):
            loaded = sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**30
            say(f"loading weights: {loaded:.1f} of {total_gib:.1f} GiB on the GPU")

    if device == "cuda":
        threading.Thread(target=poll, daemon=True).start()
    try:
        yield
    finally:
        done.set()


class _ModelThread:
    """One daemon thread for all work on the model: CUDA graphs are recorded and replayed per thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="rumination-model", daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, job = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)
            del future, job  # an idle thread must not keep a failed job's traceback (and the model) alive

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Queue `job`; its result or exception arrives through the returned future."""
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        return future


class LocalBackend:
    """transformers `generate` in a worker thread, streaming text back to the event loop."""

    name = "local"

    def __init__(self, config: Config):
        self.config = config
        self.model_id = config.model
        self.context_window = config.context_window or 131072
        self.tokenizer: Any = None
        self.model: Any = None
        self.decoder: Decoder | None = None  # owns the KV cache kept between turns
        self.stop_ids: list[int] = []
        self._thread: _ModelThread | None = None  # started with the model
        self.load_notes: list[str] = []  # what loading decided that the user should keep seeing
        self._load_lock = threading.Lock()

    def load(self, progress: Progress | None = None) -> None:
        """Load tokenizer and weights; raise BackendError with a clear message on any user-fixable problem."""
        # An abandoned load (Ctrl-C, "stop" in the TUI) keeps running in its thread: never start a second one.
        with self._load_lock:
            if self.tokenizer is not None:  # published last: a loaded backend
                return
            try:
                self._load(progress or (lambda message: None))
            except BaseException:
                self._drop()  # a retry starts clean, and a half-loaded model frees its memory
                raise

    def _drop(self) -> None:
        compiled = self.decoder is not None and (self.decoder._step or self.decoder._verify) is not None
        self.model = self.decoder = self.tokenizer = None
        torch = sys.modules.get("torch")
        if torch is not None and compiled:
            torch._dynamo.reset()  # the dropped model's compiled graphs and CUDA graph pools go with it
        gc.collect()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, say: Progress) -> None:
        self.load_notes = []

        def note(line: str) -> None:  # a progress line worth keeping on screen
            say(line)
            self.load_notes.append(line)

        try:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise BackendError(
                "the local backend needs PyTorch and transformers: pip install 'rumination[local]'"
            ) from None
        if self.model_id == DEFAULT_MODEL and self.config.device == "auto" and not torch.cuda.is_available():
            known = estimate_weight_bytes(SimpleNamespace(**ARCHITECTURE))  # the size is known: skip the hub
            raise BackendError(self._no_gpu_message(known))
        hf_logging.disable_progress_bar()  # progress comes through `say`; a bar on stderr would tear a TUI screen
        import_quantizers()  # likewise the log lines of torchao's import
        source = locate(self.model_id)  # a cached model never waits on an unreachable hub
        offline = source.local_files_only
        say("reading the model configuration")
        try:
            hf_config = AutoConfig.from_pretrained(self.model_id, local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"model not found: {self.model_id!r} ({' '.join(str(exc).split())[:300]})\n"
                f"Download it first (hf download {self.model_id}) or pass -m DIR."
            ) from None
        from rumination.backends.decode import Decoder

        device = self._pick_device(torch, hf_config)
        gpus = torch.cuda.device_count() if device == "cuda" else 0
        plan = plan_load(self.config, hf_config, device, note, gpus)
        free_per_gpu = [torch.cuda.mem_get_info(i)[0] for i in range(gpus)]
        if gpus > 1 and self.config.device_map == "auto":  # several GPUs: one of them, if one is enough
            alone = replace(plan.footprint(self.config.prefill_chunk), graphs=plan.kv_cache == "static")
            single = one_gpu(hf_config, free_per_gpu, plan.context, alone)
            if single is not None:
                plan = plan_load(self.config, hf_config, device, note, 1)
                plan.device_map, free_per_gpu = {"": single}, [free_per_gpu[single]]
                plan.notes.append(f"on GPU {single} of {gpus}")
            else:
                note(SPLIT_NOTE.format(gpus=gpus))
        say("loading the tokenizer")
        tokenizer = load_tokenizer(self.model_id, offline)  # published as self.tokenizer only once weights are in
        self.stop_ids = stop_token_ids(tokenizer)
        fits = plan.context
        if device == "cuda":
            free = sum(free_per_gpu)
            fit = context_fit(hf_config, free, plan.context, plan.footprint(self.config.prefill_chunk))
            note(fit.message)
            if fit.tokens == 0:
                raise BackendError(fit.message)
            fits = fit.tokens
        total = estimate_weight_bytes(hf_config, plan.quantize) / 2**30
        need = f"about {total:.0f} GiB for its weights alone"
        say(f"loading {total:.1f} GiB of weights onto {device} ({plan.describe()})")
        try:
            with _report_gpu_fill(torch, device, total, say):
                self.model = AutoModelForCausalLM.from_pretrained(
                    self.model_id,
                    config=hf_config,
                    dtype=self._dtype(torch, device),
                    local_files_only=offline,
                    **plan.load_arguments(device),
                ).eval()
        except torch.cuda.OutOfMemoryError:
            raise BackendError(f"out of GPU memory while loading {self.model_id}: it needs {need}") from None
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            cached = f" (from the local cache: complete it with hf download {self.model_id})" if offline else ""
            raise BackendError(f"cannot load {self.model_id}{cached}: {str(exc).splitlines()[0]}") from None
        offloaded = {v for v in (getattr(self.model, "hf_device_map", None) or {}).values() if v in ("cpu", "disk")}
        if device == "cuda" and offloaded:
            raise BackendError(
                f"{self.model_id} does not fit in GPU memory ({need}); part of it would run from "
                f"{' and '.join(sorted(offloaded))}. Free GPU memory, add a GPU, or pass --device cpu."
            )
        self.context_window = min(plan.context, fits)  # never promise the loop more context than the GPU holds
        self.decoder = Decoder(
            self.model,
            plan.kv_cache,
            self.context_window,
            prefill_chunk=self.config.prefill_chunk,
            compile_step=plan.compile,
            reuse=self.config.prefix_cache,
            draft=plan.draft,
            meter=SpeculationMeter(always=self.config.speculate == "on"),
        )
        self._thread = self._thread or _ModelThread()
        if plan.compile:
            windows = len(self.decoder.windows())
            steps = "decode and verify steps" if self.decoder.draft else "decode step"
            sizes = f"{windows} context sizes" if windows > 1 else "every context size at once"
            say(f"compiling the {steps} for {sizes} (once per load; minutes for a 32B model)")
            try:
                failed = self._thread.submit(self.decoder.warm_up).result()
            except torch.cuda.OutOfMemoryError:
                raise BackendError(f"out of GPU memory allocating {self.context_window:,} tokens of cache") from None
            if failed and self.decoder._step is None:
                note(f"the decode step could not be compiled ({failed}); decoding without it")
            elif failed and not self.decoder.draft:
                note(f"no room for the verify step's graphs ({failed}); decoding without prompt-lookup drafts")
            elif failed:
                note(f"the verify step could not be compiled ({failed}); drafts are verified eagerly, while that pays")
        self.load_notes.append(f"{self.context_window:,}-token context window; {plan.describe()}")
        self.tokenizer = tokenizer

    def _pick_device(self, torch: Any, hf_config: Any) -> str:
        wanted = self.config.device
        if torch.cuda.is_available() and wanted in ("auto", "cuda"):
            return "cuda"
        if wanted == "cuda":
            raise BackendError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
        need = estimate_weight_bytes(hf_config)
        if wanted == "auto" and need > CPU_WEIGHT_LIMIT:
            raise BackendError(self._no_gpu_message(need))
        return "cpu"

    def _no_gpu_message(self, need: int) -> str:
        return (
            f"no CUDA GPU found: {self.model_id} needs about {need / 2**30:.0f} GiB of GPU memory for its bf16 "
            "weights (see the README's GPU table). Pass --device cpu to run it on the CPU anyway (very slow), "
            "or try Rumination without a model: python tools/demo.py"
        )

    def _dtype(self, torch: Any, device: str) -> Any:
        if self.config.dtype == "auto":
            return torch.bfloat16 if device == "cuda" else torch.float32
        return getattr(torch, self.config.dtype)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Generate in a worker thread until a stop id, streaming decoded text."""
        import torch

        from rumination.backends.decode import sampler
        from rumination.backends.detokenize import Detokenizer

        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        ids = prompt.token_ids(self.tokenizer)
        if len(ids) >= self.context_window:
            raise BackendError(f"the prompt ({len(ids)} tokens) fills the {self.context_window}-token window")
        max_new = min(params.max_new_tokens, self.context_window - len(ids))
        detokenizer = Detokenizer(self.tokenizer)

        def emit(text: str) -> None:
            if text:
                loop.call_soon_threadsafe(texts.put_nowait, text)

        def on_token(token: int) -> bool:
            if cancel.is_set():
                return False
            if token not in self.stop_ids:
                emit(detokenizer.add(token))
            return True

        def run() -> Any:
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                pick = sampler(params.temperature, params.top_p, params.top_k)
                decoded = self.decoder.generate(ids, max_new, pick, self.stop_ids, on_token, cancel.is_set)
                emit(detokenizer.flush())
                return decoded
            finally:
                loop.call_soon_threadsafe(texts.put_nowait, None)

        start = time.perf_counter()
        first: float | None = None
        future = asyncio.wrap_future(self._thread.submit(run))
        try:
            while (text := await texts.get()) is not None:
                first = first if first is not None else time.perf_counter() - start
                yield Chunk(text=text)
            try:
                decoded = await future
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise OutOfMemory(f"out of GPU memory at {len(ids):,} tokens of context") from None
            except Exception as exc:
                raise BackendError(f"generation failed: {type(exc).__name__}: {exc}") from None
        finally:
            cancel.set()
            with contextlib.suppress(Exception):
                await future
        new_ids = decoded.ids
        stopped = bool(new_ids) and new_ids[-1] in self.stop_ids
        text = self.tokenizer.decode(new_ids[:-1] if stopped else new_ids, skip_special_tokens=True)
        yield Chunk(
            outcome=Outcome(
                text=text,
                finish_reason="stop" if stopped else "length",
                prompt_tokens=len(ids),
                generated_tokens=len(new_ids),
                seconds=time.perf_counter() - start,
                first_token_seconds=first,
                prefilled_tokens=len(ids) - decoded.reused,
                reused_tokens=decoded.reused,
                prefill_seconds=decoded.prefill_seconds,
                decode_seconds=decoded.decode_seconds,
                drafted_tokens=decoded.drafted or None,
                accepted_tokens=decoded.accepted if decoded.drafted else None,
            )
        )

    @property
    def cached_tokens(self) -> int:
        """How many tokens the kept KV cache holds."""
        return 0 if self.decoder is None else self.decoder.cached_tokens

    async def aclose(self) -> None:
        """Drop the model and its cache so their memory can be freed (a later load() loads it again)."""
        self._drop()
