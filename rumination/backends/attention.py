"""The attention kernel choice: an SDPA variant whose decode never repeats K/V per query head, and a flex_attention
decode that reads exactly the cache in use."""

from __future__ import annotations

import importlib.util
from typing import Any

from rumination.errors import BackendError

PACKED_SDPA = "rumination_sdpa"
FLEX = "rumination_flex"
PACKED_QUERIES = 32  # up to this many query tokens (a decode step, a verify step) share K/V heads in SDPA
KV_BLOCK = 128  # cache positions per block of a flex decode's block mask


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


def decode_block_mask(start: Any, queries: int, keys: int) -> Any:
    """The blocks of a `keys`-position cache that `queries` tokens at positions `start`... attend to, as a BlockMask.

    `start` is a device tensor (the cache's length before these tokens), so one compiled graph serves every length:
    the blocks wholly before `start` are full, the one or two after them partial, the rest are never read. The
    partial blocks' causal rule is added per layer by `causal_by_position`.
    """
    import torch
    from torch.nn.attention.flex_attention import BlockMask

    blocks = -(-keys // KV_BLOCK)
    every = torch.arange(blocks, dtype=torch.int32, device=start.device)
    full = ((start + 1) // KV_BLOCK).to(torch.int32)
    partial = (-(-(start + queries) // KV_BLOCK)).to(torch.int32) - full
    return BlockMask.from_kv_blocks(
        partial.view(1, 1, 1),
        torch.clamp(every + full, max=blocks - 1).view(1, 1, 1, blocks),
        full.view(1, 1, 1),
        every.view(1, 1, 1, blocks),
        BLOCK_SIZE=KV_BLOCK,
        seq_lengths=(queries, keys),
        compute_q_blocks=False,
    )


def causal_by_position(mask: Any, positions: Any, rows: int) -> Any:
    """`mask`'s blocks for `rows` query rows, row r being query r % len(positions), which attends to the keys up to
    its position.

    The rule reads the positions passed to the model, not the cache length `mask` was made from: the step also
    updates that length in place, and torch's CPU flex kernel cannot lower a rule that captures it.
    """
    from torch.nn.attention.flex_attention import BlockMask

    queries = positions.shape[0]

    def causal(batch: Any, head: Any, row: Any, key: Any) -> Any:
        return key <= positions[row % queries]

    return BlockMask.from_kv_blocks(
        mask.kv_num_blocks,
        mask.kv_indices,
        mask.full_kv_num_blocks,
        mask.full_kv_indices,
        BLOCK_SIZE=mask.BLOCK_SIZE,
        mask_mod=causal,
        seq_lengths=(rows, mask.seq_lengths[1]),
        compute_q_blocks=False,
    )


def flex_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: Any = 0, attention_mask: Any = None, **kwargs: Any
) -> Any:
    """The mask for FLEX: a block mask in a compiled decode or verify step on a static cache, else SDPA's."""
    import torch
    from transformers.masking_utils import sdpa_mask

    one_step = batch_size == 1 and attention_mask is None and q_length <= PACKED_QUERIES  # of one unpadded sequence
    if one_step and torch.compiler.is_compiling() and isinstance(q_offset, torch.Tensor):
        return decode_block_mask(q_offset, q_length, kv_length)
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        attention_mask=attention_mask,
        **kwargs,
    )


def folds_heads(query: Any) -> bool:
    """Whether flex_decode folds each K/V head's query heads into its query rows: on CUDA, where torch's split-KV
    decode kernel takes grouped heads only in groups of a power of two (Rumination's are 6). Not on the CPU, whose
    flex kernel misreads a folded query (a reshaped view; torch 2.13) and takes any group size."""
    return query.device.type == "cuda"


def flex_decode(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None, **kwargs: Any
) -> tuple[Any, None]:
    """flex_attention over the cache blocks in use where the mask is a block mask, else `packed_sdpa`.

    Compiled, flex_attention skips every block the mask leaves out: a step reads the cache in use rounded up to a
    block, in one graph for any length, each K/V head once for its query heads (folded, row g*queries + i is query
    i of head g, or through enable_gqa; see `folds_heads`).
    """
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if not isinstance(attention_mask, BlockMask):
        return packed_sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, queries, dim = query.shape
    positions = kwargs["position_ids"][0]
    if folds_heads(query):
        rows = heads // key.shape[1] * queries
        mask = causal_by_position(attention_mask, positions, rows)
        folded = query.reshape(batch, key.shape[1], rows, dim)
        out = flex_attention(folded, key, value, block_mask=mask, scale=scaling).reshape(batch, heads, queries, dim)
    else:
        mask = causal_by_position(attention_mask, positions, queries)
        out = flex_attention(query, key, value, block_mask=mask, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `rumination_sdpa` and `rumination_flex` transformers attention implementations (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    AttentionInterface.register(FLEX, flex_decode)
    AttentionMaskInterface.register(FLEX, flex_mask)


def choose(wanted: str) -> str:
    """The transformers attn_implementation for `--attention`: auto is the packed SDPA, sdpa transformers' own."""
    if wanted in ("auto", "flex"):
        register()
        return PACKED_SDPA if wanted == "auto" else FLEX
    if wanted == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise BackendError("--attention flash_attention_2 needs the flash-attn package: pip install flash-attn")
    return wanted
