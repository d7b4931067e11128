"""How much context fits: weights plus KV cache against free accelerator memory, from the model config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30
RESERVE_BYTES = 2 * GIB  # activations, the CUDA context and allocator slack


def kv_bytes_per_token(hf_config: Any, bytes_per_value: int = 2) -> int:
    """Key and value vectors of every layer for one token."""
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    return hf_config.num_hidden_layers * 2 * kv_heads * head_dim * bytes_per_value


@dataclass(frozen=True)
class Fit:
    """The context that fits beside the weights, and a plain sentence saying so."""

    tokens: int
    message: str


def context_fit(hf_config: Any, weight_bytes: int, free_bytes: int, wanted: int) -> Fit:
    """Tokens of bf16 KV cache that fit in `free_bytes` after the weights and a reserve, capped at `wanted`."""
    per_token = kv_bytes_per_token(hf_config)
    room = free_bytes - weight_bytes - RESERVE_BYTES
    tokens = max(0, min(wanted, room // per_token))
    free, weights = free_bytes / GIB, weight_bytes / GIB
    if tokens == 0:
        return Fit(0, f"{free:.0f} GiB free: the bf16 weights alone need {weights:.1f} GiB; no room for context")
    if tokens >= wanted:
        return Fit(tokens, f"{free:.0f} GiB free, bf16: the full {wanted // 1024}K-token context fits")
    short = (wanted - tokens) * per_token / GIB
    return Fit(
        tokens,
        f"{free:.0f} GiB free, bf16: about {tokens // 1000}K tokens of context fit (the full "
        f"{wanted // 1024}K needs {short:.0f} GiB more: a second GPU, or an FP8 KV cache / 8-bit "
        "weights, which are planned)",
    )
