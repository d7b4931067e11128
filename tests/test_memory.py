"""The memory estimate: what context fits beside the weights on a given card, and what would fit more."""

from __future__ import annotations

import pytest
from transformers import Glm4Config

from rumination.backends.memory import (
    GIB,
    Footprint,
    context_fit,
    estimate_weight_bytes,
    kv_bytes_per_token,
    need_bytes,
    one_gpu,
    scratch_bytes_per_token,
    transient_bytes,
)
from rumination.protocol import ARCHITECTURE

REAL = Glm4Config(**ARCHITECTURE)
# bf16 K/V of 61 layers; one layer's K/V repeated for 48 heads in prefill; a 2048-token chunk's mask, bool and float
PER_TOKEN = 249_856 + 24_576 + 3 * 2048


def test_kv_cache_is_244_kib_per_token_and_half_in_fp8():
    assert kv_bytes_per_token(REAL) == 249_856  # 61 layers x K and V x 8 heads x 128 x 2 bytes
    assert kv_bytes_per_token(REAL, "fp8") == 124_928
    assert scratch_bytes_per_token(REAL) == 24_576 + 6144
    assert scratch_bytes_per_token(REAL, Footprint(kv="fp8", chunk=8192)) == 24_576 + 3 * 8192 + 4096


def test_weights_are_61_7_gib_in_bf16_and_shrink_with_quantisation():
    assert abs(estimate_weight_bytes(REAL) / GIB - 61.7) < 0.1
    assert 32 < estimate_weight_bytes(REAL, "8bit") / GIB < 33.5  # embeddings and head stay bf16 (3.5 GiB)
    assert len({estimate_weight_bytes(REAL, q) for q in ("int8", "fp8", "8bit")}) == 1  # one byte a weight
    assert 18 < estimate_weight_bytes(REAL, "4bit") / GIB < 20


def test_an_80_gb_card_holds_about_60k_tokens_and_names_what_fits_128k():
    free = int(79.2 * GIB)
    fit = context_fit(REAL, free, 131072)
    assert fit.tokens == (free - estimate_weight_bytes(REAL) - transient_bytes(REAL)) // PER_TOKEN
    assert 58_000 < fit.tokens < 63_000
    assert "about 61K tokens of context fit; for 128K use --quantize int8" in fit.message
    # An FP8 cache alone gets to about 108K on this card: not enough, so it is not offered on its own.
    assert "use --kv-cache fp8 " not in fit.message
    fp8 = context_fit(REAL, free, 131072, Footprint(kv="fp8"))
    assert 105_000 < fp8.tokens < 115_000 and "fp8 KV cache" in fp8.message


def test_a_32k_request_fits_an_80_gb_card_whole():
    fit = context_fit(REAL, int(79.2 * GIB), 32768)
    assert fit.tokens == 32768 and "the full 32K-token context fits" in fit.message


def test_a_141_gb_card_holds_the_full_window():
    fit = context_fit(REAL, 139 * GIB, 131072)
    assert fit.tokens == 131072 and "full 128K-token context fits" in fit.message


def test_a_48_gb_card_cannot_hold_bf16_weights_but_4bit_with_fp8_cache_fits():
    fit = context_fit(REAL, 47 * GIB, 131072)
    assert fit.tokens == 0 and "weights alone need 61.7 GiB" in fit.message
    assert "use --kv-cache fp8 --quantize 4bit" in fit.message
    assert context_fit(REAL, 47 * GIB, 131072, Footprint("fp8", "4bit")).tokens == 131072


def test_a_card_too_small_for_anything_says_add_a_gpu():
    fit = context_fit(REAL, 16 * GIB, 131072)
    assert fit.tokens == 0 and "add a GPU" in fit.message


@pytest.mark.parametrize(
    ("cards", "wanted", "kv", "expected"),
    [
        ([141, 141], 131072, "bf16", 0),  # one H200 holds the weights and 128K: the other is not used
        ([80, 141], 131072, "bf16", 1),  # the larger card, whatever its place
        ([80, 80], 131072, "bf16", None),  # 61.7 GiB + 128K of bf16 KV fit no 80 GB card: split
        ([80, 80], 131072, "fp8", None),  # nor with an FP8 cache (about 63K fit on 80 GB less what CUDA keeps)
        ([80, 80], 32768, "bf16", 0),  # a 32K context does
        ([48, 48, 48, 48], 32768, "bf16", None),  # the weights alone overflow a 48 GB card
        ([], 32768, "bf16", None),
    ],
)
def test_one_gpu_when_one_is_enough_else_a_split(cards, wanted, kv, expected):
    free = [int(gb * 1e9) - 2 * GIB for gb in cards]  # a card's memory less what the driver and CUDA keep
    assert one_gpu(REAL, free, wanted, Footprint(kv)) == expected
    if expected is not None:
        assert context_fit(REAL, free[expected], wanted, Footprint(kv)).tokens == wanted


GRAPHS = {"graphs": True}  # the CUDA defaults: a static cache and a compiled step


@pytest.mark.parametrize(
    ("card", "settings", "tokens", "margin"),
    [
        # (GiB free, flags, tokens of the 128K that fit, GiB left at that context: at least / within)
        (139, GRAPHS, 131072, 41),  # H200: the full window in bf16, 41 GiB to spare
        (139, {**GRAPHS, "chunk": 8192}, 131072, 37),  # a 4x chunk's mask and activations cost 3.4 GiB at 128K
        (79.2, GRAPHS, (59_000, 62_000), 0),  # H100/A100 80 GB: about 60K
        (79.2, {**GRAPHS, "chunk": 8192}, (52_000, 55_000), 0),  # the larger chunk leaves about 8K tokens fewer
        (79.2, {"kv": "fp8"}, (107_000, 109_000), 0),  # an FP8 cache is dynamic: no CUDA graphs
        (79.2, {**GRAPHS, "quantize": "int8"}, 131072, 10),  # int8 weights, compiled: the full window
        (79.2, {"quantize": "fp8", "kv": "fp8"}, 131072, 22),
        (47, {**GRAPHS, "quantize": "int8"}, (45_000, 48_000), 0),  # a 48 GB card
        (47, {"kv": "fp8", "quantize": "4bit"}, 131072, 7),
        (23, {"kv": "fp8", "quantize": "4bit"}, (17_000, 19_000), 0),  # a 24 GB card: NF4 and an FP8 cache
        (23, {**GRAPHS, "quantize": "int8"}, 0, 0),  # int8 weights alone (33 GiB) overflow it
    ],
)
def test_cards_and_flags_against_what_fits_with_margins(card, settings, tokens, margin):
    setup, free = Footprint(**settings), int(card * GIB)
    fit = context_fit(REAL, free, 131072, setup)
    if isinstance(tokens, tuple):
        assert tokens[0] < fit.tokens < tokens[1] and f"about {fit.tokens // 1000}K tokens" in fit.message
    else:
        assert fit.tokens == tokens
    if fit.tokens == 131072:
        assert free - need_bytes(REAL, fit.tokens, setup) >= margin * GIB  # what is left with the whole window


def test_every_transient_grows_the_need():
    base = need_bytes(REAL, 32768)
    assert need_bytes(REAL, 32768, Footprint(graphs=True)) - base == GIB // 4  # the CUDA graphs' pool
    assert need_bytes(REAL, 32768, Footprint(chunk=4096)) > base  # a larger chunk: mask and activations
    int8 = need_bytes(REAL, 32768, Footprint(quantize="int8"))
    # int8 weights halve the linear layers, less one de-quantised bf16 copy of the largest (gate/up, 540 MiB)
    assert int8 - (base - estimate_weight_bytes(REAL) + estimate_weight_bytes(REAL, "int8")) == 2 * 6144 * 2 * 23040
    # FP8 is de-quantised through an fp32 copy too: 10 bytes a weight of gate/up, 2.6 GiB
    assert need_bytes(REAL, 32768, Footprint(quantize="fp8")) - int8 == 8 * 6144 * 2 * 23040
