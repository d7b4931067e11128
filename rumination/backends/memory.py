"""How much context fits: weights plus KV cache against free accelerator memory, from the model config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

GIB = 2**30
RESERVE_BYTES = 2 * GIB  # activations of one prefill chunk, the CUDA context and allocator slack
Quantize = Literal["none", "8bit", "4bit"]
KvDtype = Literal["bf16", "fp8"]
# Bytes per parameter of the quantised linear layers (bitsandbytes int8; NF4 with double-quantised scales).
LINEAR_BYTES: dict[str, float] = {"none": 2, "8bit": 1, "4bit": 0.53}


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


def scratch_bytes_per_token(hf_config: Any) -> int:
    """Transient prefill memory per context token: one layer's K and V repeated for every query head."""
    heads, _, head_dim = _heads(hf_config)
    return 2 * heads * head_dim * 2


@dataclass(frozen=True)
class Fit:
    """The context that fits beside the weights, and a plain sentence saying so."""

    tokens: int
    message: str


def fitting_tokens(hf_config: Any, free_bytes: int, wanted: int, kv_dtype: KvDtype, quantize: Quantize) -> int:
    """Tokens of context that fit in `free_bytes` beside the weights and a reserve, capped at `wanted`."""
    room = free_bytes - estimate_weight_bytes(hf_config, quantize) - RESERVE_BYTES
    per_token = kv_bytes_per_token(hf_config, kv_dtype) + scratch_bytes_per_token(hf_config)
    return max(0, min(wanted, room // per_token))


def context_fit(
    hf_config: Any, free_bytes: int, wanted: int, kv_dtype: KvDtype = "bf16", quantize: Quantize = "none"
) -> Fit:
    """What fits, said plainly, with the options that would fit the whole `wanted` context."""
    tokens = fitting_tokens(hf_config, free_bytes, wanted, kv_dtype, quantize)
    weights = "bf16" if quantize == "none" else f"{quantize} weights"
    setup = f"{free_bytes / GIB:.0f} GiB free, {weights}, {kv_dtype} KV cache"
    need = estimate_weight_bytes(hf_config, quantize) / GIB
    if tokens == 0:
        hint = _options(hf_config, free_bytes, wanted, kv_dtype, quantize)
        hint = f"use {hint}" if hint else "add a GPU (--device-map auto spreads the model over all of them)"
        return Fit(0, f"{setup}: the weights alone need {need:.1f} GiB; no room for context: {hint}")
    if tokens >= wanted:
        return Fit(tokens, f"{setup}: the full {_k(wanted)}-token context fits")
    hint = _options(hf_config, free_bytes, wanted, kv_dtype, quantize) or "a second GPU (--device-map auto)"
    return Fit(tokens, f"{setup}: about {tokens // 1000}K tokens of context fit; for {_k(wanted)} use {hint}")


def one_gpu(
    hf_config: Any, free_per_gpu: list[int], wanted: int, kv_dtype: KvDtype = "bf16", quantize: Quantize = "none"
) -> int | None:
    """The GPU (the one with most free memory) that holds the weights and all `wanted` tokens alone, if any.

    A model on one GPU decodes with the compiled step; split by layers over several, it runs them one after
    another (no faster than one GPU) and eagerly, so several GPUs are used only when no single one is enough.
    """
    if not free_per_gpu:
        return None
    best = max(range(len(free_per_gpu)), key=lambda i: (free_per_gpu[i], -i))
    return best if fitting_tokens(hf_config, free_per_gpu[best], wanted, kv_dtype, quantize) >= wanted else None


SPLIT_NOTE = (
    "the model does not fit one GPU, so its layers are split over {gpus} GPUs and run one after another: no faster "
    "than one GPU, and decoded without the compiled step. For tensor parallelism over several GPUs, serve the model "
    "with vLLM or SGLang and use --backend openai (README: Serving engines)"
)


def _options(hf_config: Any, free_bytes: int, wanted: int, kv_dtype: KvDtype, quantize: Quantize) -> str:
    """Up to two changes of flags, smallest first, with which the whole context fits."""
    hints = []
    for kv, q in [("fp8", quantize), (kv_dtype, "8bit"), ("fp8", "8bit"), (kv_dtype, "4bit"), ("fp8", "4bit")]:
        if (kv, q) != (kv_dtype, quantize) and fitting_tokens(hf_config, free_bytes, wanted, kv, q) >= wanted:
            flags = ([f"--kv-cache {kv}"] if kv != kv_dtype else []) + ([f"--quantize {q}"] if q != quantize else [])
            hints.append(" ".join(flags))
    return " or ".join(dict.fromkeys(hints[:2]))


def _k(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else f"{tokens:,}"
