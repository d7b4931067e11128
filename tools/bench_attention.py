"""Decode attention, one layer of the real model's shape, kernel by kernel: which one reads the KV cache fastest.

    python tools/bench_attention.py            # on the GPU: H=48 query heads, 8 K/V heads, head dim 128, bf16
    python tools/bench_attention.py --smoke    # a tiny shape on any device, to check the script itself
    python tools/bench_attention.py --queries 7   # a verify step: the last token and a 6-token draft

For each case (cache window W, positions used L) every variant computes one decode step's attention (one query
token, or with --queries N a verify step's N tokens, each seeing the cache and the draft tokens before it) and is
timed with CUDA events (median of many). Printed per variant: microseconds, the bandwidth over the
bytes it must read (the L used positions of K and V), its largest difference from the exact-length reference, and
the decode rate the whole model would reach with it (61 layers, plus the weights read at the measured copy
bandwidth) as a fraction of the roofline. Variants:

  packed_sdpa   what the decode step ran before: query heads folded onto their K/V head, SDPA with the window mask
  sdpa_gqa      SDPA with enable_gqa and the mask (what the decode step runs now)
  cudnn         SDPA on the cuDNN backend with the mask
  split_kv      attention.split_kv_decode compiled (the window read in 1,024-position splits, in parallel)
  flex          what --attention flex runs: flex_attention compiled, the blocks in use from a device-side length
                (attention.decode_block_mask, flex_decode: query heads folded per K/V head), the rest never read
  flash_exact   SDPA's flash kernel on exactly the L used positions (the ideal, but a new shape every step)

With several queries, packed_sdpa folds the N queries of each head group into one row block (the mask repeated)
and split_kv, which takes one query, is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from bench_local import copy_bandwidth

from rumination.backends.attention import decode_block_mask, flex_decode, split_kv_decode
from rumination.protocol import ARCHITECTURE

LAYERS = ARCHITECTURE["num_hidden_layers"]
WEIGHT_BYTES = 66.2e9  # the 32B model in bf16 less its embedding table (measured: 61.7 GiB with it)


def say(name: str, value: object) -> None:
    print(f"{name}={value}", flush=True)


def timed(fn: Callable[[], Any], device: torch.device, rounds: int) -> float:
    """Median seconds of `fn` after warm-up."""
    for _ in range(3):
        fn()
    if device.type != "cuda":
        import time

        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def variants(
    heads: int, kv_heads: int, queries: int, scale: float, device: torch.device
) -> dict[str, Callable[..., Any]]:
    """name -> fn(query, key, value, allowed, length_tensor, used) returning [1, H, N, D]."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    groups = heads // kv_heads

    def packed_sdpa(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        folded = q.reshape(1, kv_heads, groups * queries, q.shape[-1])
        mask = allowed.repeat(1, 1, groups, 1)  # row g*N + i is query i of head g in the group
        out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask, scale=scale)
        return out.reshape(1, heads, queries, q.shape[-1])

    def sdpa_gqa(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=True)

    def cudnn(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(
                q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=allowed, scale=scale
            )

    split = torch.compile(lambda q, k, v, a: split_kv_decode(q, k, v, a, scale), dynamic=False)

    def split_kv(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        return split(q, k, v, allowed)

    def blocks(q: Any, k: Any, v: Any, start: Any, positions: Any) -> Any:
        mask = decode_block_mask(start, queries, k.shape[2])
        return flex_decode(None, q, k, v, mask, scale, position_ids=positions[None])[0].transpose(1, 2)

    compiled_flex = torch.compile(blocks, fullgraph=True, dynamic=False)

    def flex(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        start = length - queries  # a device tensor: one graph for every length
        return compiled_flex(q, k, v, start, start + torch.arange(queries, device=q.device))

    def flash_exact(q: Any, k: Any, v: Any, allowed: Any, length: Any, used: int) -> Any:
        backend = SDPBackend.FLASH_ATTENTION if device.type == "cuda" else SDPBackend.MATH
        causal = causal_lower_right(queries, used) if queries > 1 else None  # the draft sees what precedes it
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(
                q, k[:, :, :used], v[:, :, :used], attn_mask=causal, scale=scale, enable_gqa=True
            )

    found = {
        "flash_exact": flash_exact,
        "packed_sdpa": packed_sdpa,
        "sdpa_gqa": sdpa_gqa,
        "cudnn": cudnn,
        "split_kv": split_kv,
        "flex": flex,
    }
    if queries > 1:
        del found["split_kv"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny shape, any device")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--queries", type=int, default=1, help="query tokens: 1 a decode step, k+1 a verify step")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    heads, kv_heads, dim = ARCHITECTURE["num_attention_heads"], ARCHITECTURE["num_key_value_heads"], 128
    cases = [(8192, 1024), (32768, 32000), (131072, 33000)]
    if args.smoke:
        heads, kv_heads, dim, cases = 12, 2, 16, [(2048, 300), (4096, 4000)]
    say("device", torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    bandwidth = copy_bandwidth(torch, device, sync, 2**31 if device.type == "cuda" else 2**26)
    say("copy_bandwidth_gb_s", f"{bandwidth / 1e9:.0f}")
    say("queries", args.queries)
    scale = dim**-0.5
    table = []
    for window, used in cases:
        torch.manual_seed(0)
        queries = args.queries
        q = torch.randn(1, heads, queries, dim, device=device, dtype=dtype)
        k = torch.randn(1, kv_heads, window, dim, device=device, dtype=dtype)
        v = torch.randn(1, kv_heads, window, dim, device=device, dtype=dtype)
        # Query i (the last `queries` of the `used` positions) sees the positions up to its own.
        last = used - queries + torch.arange(queries, device=device)
        allowed = (torch.arange(window, device=device)[None, :] <= last[:, None]).reshape(1, 1, queries, window)
        length = torch.tensor(used, device=device)
        needed = 2 * kv_heads * used * dim * k.element_size()  # K and V of the used positions
        reference = None
        for name, fn in variants(heads, kv_heads, queries, scale, device).items():
            try:
                inputs = (q, k, v, allowed, length, used)
                out = fn(*inputs)
                seconds = timed(lambda fn=fn, inputs=inputs: fn(*inputs), device, args.rounds)
            except Exception as exc:  # a backend this build or card lacks: say so, go on
                say(f"w{window}_l{used}_{name}_error", " ".join(f"{type(exc).__name__}: {exc}".split())[:160])
                continue
            reference = out if reference is None else reference
            error = (out.float() - reference.float()).abs().max().item()
            per_token = WEIGHT_BYTES / bandwidth + LAYERS * seconds
            roofline = 1 / ((WEIGHT_BYTES + LAYERS * needed) / bandwidth)
            prefix = f"w{window}_l{used}_{name}"
            say(f"{prefix}_us", f"{seconds * 1e6:.1f}")
            say(f"{prefix}_gb_s", f"{needed / seconds / 1e9:.0f}")
            say(f"{prefix}_max_error", f"{error:.4f}")
            say(f"{prefix}_model_roofline_fraction", f"{(1 / per_token) / roofline:.3f}")
            table.append((window, used, name, seconds * 1e6, needed / seconds / 1e9, (1 / per_token) / roofline))
    print(f"\n{'window':>7} {'used':>6}  {'variant':12} {'us':>9} {'GB/s':>7} {'model/roofline':>14}")
    for window, used, name, us, gbs, fraction in table:
        print(f"{window:>7} {used:>6}  {name:12} {us:>9.1f} {gbs:>7.0f} {fraction:>14.3f}")


if __name__ == "__main__":
    main()
