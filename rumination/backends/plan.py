"""Turn the local backend's settings into concrete load choices: cache, kernel, quantisation, context, RoPE."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rumination.backends import attention
from rumination.backends.base import Progress
from rumination.backends.memory import Footprint
from rumination.config import TORCHAO, Config, Quantize
from rumination.errors import BackendError


@dataclass
class LoadPlan:
    """What the local backend will load and how it will decode."""

    kv_cache: str  # static, dynamic or fp8 (see decode.make_cache)
    compile: bool
    attention: str  # a transformers attn_implementation
    quantize: Quantize
    context: int  # tokens asked for (the GPU may fit fewer)
    device_map: str | dict[str, int]  # "auto" and the like, or {"": i}: all of it on GPU i
    draft: int = 0  # prompt-lookup draft tokens per verify step; 0: no speculative decoding
    notes: list[str] = field(default_factory=list)

    def load_arguments(self, device: str) -> dict[str, Any]:
        """Keyword arguments for from_pretrained."""
        arguments: dict[str, Any] = {"attn_implementation": self.attention}
        if device == "cuda":
            arguments["device_map"] = self.device_map
        if self.quantize in TORCHAO:
            arguments["quantization_config"] = _torchao_config(self.quantize)
        elif self.quantize != "none":
            from transformers import BitsAndBytesConfig

            arguments["quantization_config"] = (
                BitsAndBytesConfig(load_in_8bit=True)
                if self.quantize == "8bit"
                else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
            )
        return arguments

    def footprint(self, chunk: int) -> Footprint:
        """What decides this load's memory besides the context length."""
        return Footprint("fp8" if self.kv_cache == "fp8" else "bf16", self.quantize, chunk, self.compile)

    def describe(self) -> str:
        """One line: the choices that matter for speed and memory."""
        kernel = {attention.PACKED_SDPA: "SDPA", attention.FLEX: "flex attention"}.get(self.attention, self.attention)
        parts = [f"{self.kv_cache} KV cache", "compiled decode" if self.compile else "eager decode", kernel]
        if self.quantize != "none":
            parts.append(f"{self.quantize} weights")
        if self.draft:
            parts.append(f"prompt-lookup drafts of {self.draft}")
        return ", ".join(parts + self.notes)


def plan_load(config: Config, hf_config: Any, device: str, say: Progress, gpus: int = 1) -> LoadPlan:
    """Check the settings against the device and what is installed; apply YaRN to `hf_config` when needed."""
    kernel = attention.choose(config.attention)
    flash, flex = kernel == "flash_attention_2", kernel == attention.FLEX
    if flash and config.kv_cache == "static":
        raise BackendError("--attention flash_attention_2 runs with --kv-cache dynamic or fp8, not static")
    if flex and config.kv_cache in ("dynamic", "fp8"):
        raise BackendError(f"--attention flex reads the static KV cache, not --kv-cache {config.kv_cache}")
    kv_cache = config.kv_cache
    if kv_cache == "auto":
        kv_cache = "static" if (device == "cuda" or flex) and not flash else "dynamic"
    _check_quantize(config.quantize, device)
    # CUDA graphs are recorded per device: a model split over several GPUs decodes eagerly unless asked.
    compile_step = config.compile == "on" or (
        config.compile == "auto"
        and device == "cuda"
        and gpus == 1
        and kv_cache == "static"
        and config.quantize in ("none", *TORCHAO)
    )
    if compile_step and kv_cache != "static":
        raise BackendError("--compile on needs --kv-cache static (a compiled step wants fixed shapes)")
    # torchao converts the whole weight in each matmul; the compiled one-token step is expected to fuse that away,
    # a verify step of several rows may not (unmeasured, so drafts with int8/fp8 weights only when asked for).
    auto_off = config.speculate == "auto" and config.quantize in TORCHAO
    draft = 0 if config.speculate == "off" or auto_off else config.draft_tokens
    plan = LoadPlan(kv_cache, compile_step, kernel, config.quantize, 0, config.device_map, draft)
    if flex and not compile_step:
        plan.notes.append("flex attention runs in compiled steps only: SDPA here")
    plan.context = _context(config, hf_config, plan, say)
    return plan


def _check_quantize(quantize: Quantize, device: str) -> None:
    """Refuse a weight quantisation the device or the installed packages cannot run, saying what would."""
    if quantize in TORCHAO:
        if importlib.util.find_spec("torchao") is None:
            raise BackendError(f"--quantize {quantize} needs torchao: pip install 'rumination[quant]'")
        if quantize == "fp8" and device != "cuda":
            raise BackendError("--quantize fp8 needs a CUDA GPU; --quantize int8 runs on any device")
        if quantize == "fp8":
            import torch

            if torch.cuda.get_device_capability() < (8, 9):
                name = torch.cuda.get_device_name()
                fix = "use --quantize int8"
                raise BackendError(f"--quantize fp8 needs an Ada, Hopper or newer GPU (not {name}); {fix}")
    elif quantize != "none":
        if device != "cuda":
            raise BackendError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes)")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise BackendError(f"--quantize {quantize} needs bitsandbytes: pip install bitsandbytes")


@contextlib.contextmanager
def quiet_torchao() -> Iterator[None]:
    """Importing torchao (transformers does whenever it is installed) logs each kernel library it cannot load."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def import_quantizers() -> None:
    """Import transformers' quantizers (and torchao, if installed) now, without their log lines on stderr."""
    with quiet_torchao():
        import transformers.quantizers.auto  # noqa: F401


def _torchao_config(quantize: Quantize) -> Any:
    """transformers' TorchAoConfig for weight-only int8 or FP8 (per-channel scales; activations stay bf16)."""
    from transformers import TorchAoConfig

    with quiet_torchao():
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig() if quantize == "int8" else Float8WeightOnlyConfig())


def _context(config: Config, hf_config: Any, plan: LoadPlan, say: Progress) -> int:
    """The context asked for; past the checkpoint's native length, switch its RoPE to YaRN."""
    native = int(getattr(hf_config, "max_position_embeddings", 0) or 131072)
    wanted = config.context_window or native
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    if wanted > native and rope.get("rope_type", "default") == "default":
        factor = wanted / native
        hf_config.rope_parameters = {
            **rope,
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": native,
        }
        hf_config.max_position_embeddings = wanted
        say(f"{wanted:,} tokens asked for, {native:,} native: YaRN RoPE scaling x{factor:g}")
        plan.notes.append(f"YaRN x{factor:g}")
    elif wanted > native:
        say(f"{wanted:,} tokens asked for; the checkpoint's own {rope.get('rope_type')} scaling covers {native:,}")
    return wanted
