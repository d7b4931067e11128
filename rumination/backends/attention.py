"""The attention kernel choice, and an SDPA variant whose single-token decode never repeats K/V per query head."""

from __future__ import annotations

import importlib.util
from typing import Any

from rumination.errors import BackendError

PACKED_SDPA = "rumination_sdpa"
PACKED_QUERIES = 32  # up to this many query tokens (a decode step, a verify step) share K/V heads in SDPA


def packed_sdpa(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None, **kwargs: Any
) -> tuple[Any, None]:
    """SDPA whose decode and verify steps read each K/V head once for its query heads (enable_gqa), compiled too.

    transformers' own SDPA path lets SDPA share K/V heads only outside torch.compile; compiled, it copies every K/V
    head once per query head (6x for Rumination's 48/8 heads), which dominates decode at long context.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups, queries = getattr(module, "num_key_value_groups", 1), query.shape[2]
    # Several queries without a mask would need is_causal, which SDPA aligns to the wrong end of a cache.
    if groups == 1 or queries > PACKED_QUERIES or (queries > 1 and attention_mask is None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    # enable_gqa, not the query heads folded onto their K/V head: folded, SDPA sees 6 queries on 8 heads and runs
    # about one thread block per K/V head; measured on an H200 (tools/bench_attention.py), one decode step's
    # attention took 242 us (8K window) and 701 us (32K) folded, 70 us and 88 us with enable_gqa.
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def split_kv_decode(query: Any, key: Any, value: Any, allowed: Any, scale: float, chunk: int = 1024) -> Any:
    """One decode step's attention, the cache read in `chunk`-position splits that run in parallel (flash decoding).

    `query` [B, H, 1, D]; `key`/`value` [B, Hkv, W, D] (W a multiple of `chunk`, or smaller than it); `allowed`
    [B, 1, 1, W] (True: attend) or None. Each split's softmax is taken apart and the splits combined by their
    log-sum-exp, so a long cache is read by many blocks at once rather than by one per K/V head. Returns
    [B, H, 1, D]. Written in plain tensor ops: compiled, it needs no kernel of its own. Not used by the decode step:
    on an H200 it ran 3-6x slower than SDPA with enable_gqa (it reads the cache upcast to fp32).
    """
    import torch

    batch, heads, _, dim = query.shape
    kv_heads, window = key.shape[1], key.shape[2]
    groups, chunk = heads // kv_heads, min(chunk, window)
    splits = window // chunk
    q = query.reshape(batch, kv_heads, groups, dim).float()
    k = key.reshape(batch, kv_heads, splits, chunk, dim).float()
    v = value.reshape(batch, kv_heads, splits, chunk, dim).float()
    scores = torch.einsum("bhgd,bhsnd->bhsgn", q, k) * scale  # [B, Hkv, S, G, N]
    if allowed is not None:
        keep = allowed.reshape(batch, 1, splits, 1, chunk)
        scores = scores.masked_fill(~keep, float("-inf"))
    top = scores.amax(-1, keepdim=True)  # per split
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a split with nothing to attend to
    weights = torch.exp(scores - top)
    total = weights.sum(-1, keepdim=True)  # [B, Hkv, S, G, 1]
    partial = torch.einsum("bhsgn,bhsnd->bhsgd", weights, v)  # [B, Hkv, S, G, D]
    best = top.amax(2, keepdim=True)
    rescale = torch.exp(top - best)
    out = (partial * rescale).sum(2) / (total * rescale).sum(2)  # [B, Hkv, G, D]
    return out.reshape(batch, heads, 1, dim).to(query.dtype)


def register() -> None:
    """Make `rumination_sdpa` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def choose(wanted: str) -> str:
    """The transformers attn_implementation for `--attention`: auto is the packed SDPA, sdpa transformers' own."""
    if wanted == "auto":
        register()
        return PACKED_SDPA
    if wanted == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise BackendError("--attention flash_attention_2 needs the flash-attn package: pip install flash-attn")
    return wanted
