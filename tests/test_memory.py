"""The memory estimate: what context fits beside the weights on a given card, and what would fit more."""

from __future__ import annotations

import pytest
from transformers import Glm4Config

from rumination.backends.memory import (
    GIB,
    RESERVE_BYTES,
    context_fit,
    estimate_weight_bytes,
    kv_bytes_per_token,
    one_gpu,
    scratch_bytes_per_token,
)
from rumination.protocol import ARCHITECTURE

REAL = Glm4Config(**ARCHITECTURE)
PER_TOKEN = 249_856 + 24_576  # bf16 K/V of 61 layers, plus one layer's K/V repeated for 48 heads in prefill


def test_kv_cache_is_244_kib_per_token_and_half_in_fp8():
    assert kv_bytes_per_token(REAL) == 249_856  # 61 layers x K and V x 8 heads x 128 x 2 bytes
    assert kv_bytes_per_token(REAL, "fp8") == 124_928
    assert scratch_bytes_per_token(REAL) == 24_576


def test_weights_are_61_7_gib_in_bf16_and_shrink_with_quantisation():
    assert abs(estimate_weight_bytes(REAL) / GIB - 61.7) < 0.1
    assert 32 < estimate_weight_bytes(REAL, "8bit") / GIB < 33.5  # embeddings and head stay bf16 (3.5 GiB)
    assert 18 < estimate_weight_bytes(REAL, "4bit") / GIB < 20


def test_an_80_gb_card_holds_about_60k_tokens_and_names_what_fits_128k():
    free = int(79.2 * GIB)
    fit = context_fit(REAL, free, 131072)
    assert fit.tokens == (free - estimate_weight_bytes(REAL) - RESERVE_BYTES) // PER_TOKEN
    assert 58_000 < fit.tokens < 62_000
    assert "about 60K tokens of context fit; for 128K use --quantize 8bit" in fit.message
    # An FP8 cache alone gets to about 111K on this card: not enough, so it is not offered on its own.
    assert "use --kv-cache fp8 " not in fit.message
    fp8 = context_fit(REAL, free, 131072, kv_dtype="fp8")
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
    assert context_fit(REAL, 47 * GIB, 131072, "fp8", "4bit").tokens == 131072


def test_a_card_too_small_for_anything_says_add_a_gpu():
    fit = context_fit(REAL, 16 * GIB, 131072)
    assert fit.tokens == 0 and "add a GPU" in fit.message


@pytest.mark.parametrize(
    ("cards", "wanted", "kv", "expected"),
    [
        ([141, 141], 131072, "bf16", 0),  # one H200 holds the weights and 128K: the other is not used
        ([80, 141], 131072, "bf16", 1),  # the larger card, whatever its place
        ([80, 80], 131072, "bf16", None),  # 61.7 GiB + 128K of bf16 KV fit no 80 GB card: split
        ([80, 80], 131072, "fp8", None),  # nor with an FP8 cache (about 111K fit)
        ([80, 80], 32768, "bf16", 0),  # a 32K context does
        ([48, 48, 48, 48], 32768, "bf16", None),  # the weights alone overflow a 48 GB card
        ([], 32768, "bf16", None),
    ],
)
def test_one_gpu_when_one_is_enough_else_a_split(cards, wanted, kv, expected):
    free = [int(gb * 1e9) - 2 * GIB for gb in cards]  # a card's memory less what the driver and CUDA keep
    assert one_gpu(REAL, free, wanted, kv) == expected
    if expected is not None:
        assert context_fit(REAL, free[expected], wanted, kv).tokens == wanted
