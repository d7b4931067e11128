"""The attention kernel choice, and an SDPA variant whose single-token decode never repeats K/V per query head."""

from __future__ import annotations

import importlib.util
from typing import Any

from rumination.errors import BackendError

PACKED_SDPA = "rumination_sdpa"


def packed_sdpa(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None, **kwargs: Any
) -> tuple[Any, None]:
    """SDPA that folds the query heads of a one-token step onto their K/V head, inside compiled graphs too.

    transformers' own SDPA path does this fold only outside torch.compile; compiled, it copies every K/V
    head once per query head (6x for Rumination's 48/8 heads), which dominates decode at long context.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    folded = query.reshape(batch, heads // groups, groups, dim)  # query head k*groups+g reads K/V head k
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


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
