"""How much context fits: weights, KV cache and the transients of a load, against free accelerator memory."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from rumination.config import TORCHAO, Quantize

GIB = 2**30
BASE_RESERVE = GIB  # allocator slack, cuBLAS and compiler workspaces (the CUDA context is already out of "free")
GRAPH_POOL = GIB // 4  # the CUDA graphs' private pool: a decode and a verify step's activations per window
KvDtype = Literal["bf16", "fp8"]
# Bytes per parameter of the quantised linear layers (int8/FP8 with per-channel scales; NF4 with double-quantised
# scales).
LINEAR_BYTES: dict[str, float] = {"none": 2, "int8": 1, "fp8": 1, "8bit": 1, "4bit": 0.53}


@dataclass(frozen=True)
class Footprint:
    """The settings that decide a load's memory besides the context length."""

    kv: KvDtype = "bf16"
    quantize: Quantize = "none"
    chunk: int = 2048  # prefill tokens per forward pass
    graphs: bool = False  # a compiled decode step with CUDA graphs


def _heads(hf_config: Any) -> tuple[int, int, int]:
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return heads, getattr(hf_config, "num_key_value_heads", None) or heads, head_dim


def estimate_weight_bytes(hf_config: Any, quantize: Quantize = "none") -> int:
    """Weight bytes of a Llama/GLM-shaped decoder; embeddings and the output head stay bf16 when quantised."""
    h, layers = hf_config.hidden_size, hf_config.num_hidden_layers
    heads, kv_heads, head_dim = _heads(hf_config)
    per_layer = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim + 3 * h * hf_config.intermediate_size
    embeddings = hf_config.vocab_size * h * (1 if getattr(hf_config, "tie_word_embeddings", False) else 2)
    return int(layers * per_layer * LINEAR_BYTES[quantize] + embeddings * 2)


def kv_bytes_per_token(hf_config: Any, kv_dtype: KvDtype = "bf16") -> int:
    """Key and value vectors of every layer for one token."""
    _, kv_heads, head_dim = _heads(hf_config)
    return hf_config.num_hidden_layers * 2 * kv_heads * head_dim * (1 if kv_dtype == "fp8" else 2)


def scratch_bytes_per_token(hf_config: Any, setup: Footprint = Footprint()) -> int:
    """Transient bytes per context token while a prefill chunk attends over the whole context.

    One layer's K and V repeated for every query head (transformers' masked SDPA path), the chunk's boolean mask
    and the additive copy SDPA makes of it, and with an FP8 cache one layer's K and V de-quantised to bf16.
    """
    heads, kv_heads, head_dim = _heads(hf_config)
    fp8_cache = 2 * kv_heads * head_dim * 2 if setup.kv == "fp8" else 0
    return 2 * heads * head_dim * 2 + 3 * setup.chunk + fp8_cache


def transient_bytes(hf_config: Any, setup: Footprint = Footprint()) -> int:
    """Memory a load needs besides weights and cache that does not grow with the context."""
    heads, kv_heads, head_dim = _heads(hf_config)
    h, inner = hf_config.hidden_size, hf_config.intermediate_size
    per_chunk_token = 2 * (4 * h + (heads + 2 * kv_heads) * head_dim + 3 * inner)  # activations of one layer, bf16
    # The largest weight de-quantised at a time: bf16 from int8; from FP8 through an fp32 copy as well (10 bytes).
    dequantised = h * 2 * inner * (10 if setup.quantize == "fp8" else 2) if setup.quantize in TORCHAO else 0
    return BASE_RESERVE + (GRAPH_POOL if setup.graphs else 0) + dequantised + setup.chunk * per_chunk_token


def need_bytes(hf_config: Any, tokens: int, setup: Footprint = Footprint()) -> int:
    """Accelerator memory for the weights, `tokens` of context and every transient."""
    per_token = kv_bytes_per_token(hf_config, setup.kv) + scratch_bytes_per_token(hf_config, setup)
    return estimate_weight_bytes(hf_config, setup.quantize) + transient_bytes(hf_config, setup) + tokens * per_token


@dataclass(frozen=True)
class Fit:
    """The context that fits beside the weights, and a plain sentence saying so."""

    tokens: int
    message: str


def fitting_tokens(hf_config: Any, free_bytes: int, wanted: int, setup: Footprint = Footprint()) -> int:
    """Tokens of context that fit in `free_bytes` with the weights and transients, capped at `wanted`."""
    room = free_bytes - need_bytes(hf_config, 0, setup)
    per_token = need_bytes(hf_config, 1, setup) - need_bytes(hf_config, 0, setup)
    return max(0, min(wanted, room // per_token))


def context_fit(hf_config: Any, free_bytes: int, wanted: int, setup: Footprint = Footprint()) -> Fit:
    """What fits, said plainly, with the options that would fit the whole `wanted` context."""
    tokens = fitting_tokens(hf_config, free_bytes, wanted, setup)
    weights = "bf16" if setup.quantize == "none" else f"{setup.quantize} weights"
    said = f"{free_bytes / GIB:.0f} GiB free, {weights}, {setup.kv} KV cache"
    need = estimate_weight_bytes(hf_config, setup.quantize) / GIB
    if tokens == 0:
        hint = _options(hf_config, free_bytes, wanted, setup)
        hint = f"use {hint}" if hint else "add a GPU (--device-map auto spreads the model over all of them)"
        return Fit(0, f"{said}: the weights alone need {need:.1f} GiB; no room for context: {hint}")
    if tokens >= wanted:
        return Fit(tokens, f"{said}: the full {_k(wanted)}-token context fits")
    hint = _options(hf_config, free_bytes, wanted, setup) or "a second GPU (--device-map auto)"
    return Fit(tokens, f"{said}: about {tokens // 1000}K tokens of context fit; for {_k(wanted)} use {hint}")


def one_gpu(hf_config: Any, free_per_gpu: list[int], wanted: int, setup: Footprint = Footprint()) -> int | None:
    """The GPU (the one with most free memory) that holds the weights and all `wanted` tokens alone, if any.

    A model on one GPU decodes with the compiled step; split by layers over several, it runs them one after
    another (no faster than one GPU) and eagerly, so several GPUs are used only when no single one is enough.
    """
    if not free_per_gpu:
        return None
    best = max(range(len(free_per_gpu)), key=lambda i: (free_per_gpu[i], -i))
    return best if fitting_tokens(hf_config, free_per_gpu[best], wanted, setup) >= wanted else None


SPLIT_NOTE = (
    "the model does not fit one GPU, so its layers are split over {gpus} GPUs and run one after another: no faster "
    "than one GPU, and decoded without the compiled step. For tensor parallelism over several GPUs, serve the model "
    "with vLLM or SGLang and use --backend openai (README: Serving engines)"
)
# Changes of flags to offer, least lossy first: an FP8 cache, then int8 weights (compiled), then NF4 (eager).
_CHANGES: list[tuple[KvDtype | None, Quantize | None]] = [
    ("fp8", None),
    (None, "int8"),
    ("fp8", "int8"),
    (None, "4bit"),
    ("fp8", "4bit"),
]


def _options(hf_config: Any, free_bytes: int, wanted: int, setup: Footprint) -> str:
    """Up to two changes of flags, smallest first, with which the whole context fits."""
    hints = []
    for kv, quantize in _CHANGES:
        changed = replace(setup, kv=kv or setup.kv, quantize=quantize or setup.quantize)
        if changed != setup and fitting_tokens(hf_config, free_bytes, wanted, changed) >= wanted:
            flags = [f"--kv-cache {changed.kv}"] if changed.kv != setup.kv else []
            flags += [f"--quantize {changed.quantize}"] if changed.quantize != setup.quantize else []
            hints.append(" ".join(flags))
    return " or ".join(dict.fromkeys(hints[:2]))


def _k(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else f"{tokens:,}"
