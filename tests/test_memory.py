"""The memory estimate: what context fits beside the weights on a given card."""

from __future__ import annotations

from transformers import Glm4Config

from rumination.backends.local import estimate_weight_bytes
from rumination.backends.memory import GIB, RESERVE_BYTES, context_fit, kv_bytes_per_token

REAL = Glm4Config(
    hidden_size=6144,
    num_hidden_layers=61,
    num_attention_heads=48,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=23040,
    vocab_size=151552,
    max_position_embeddings=131072,
    tie_word_embeddings=False,
)


def test_kv_cache_is_244_kib_per_token():
    assert kv_bytes_per_token(REAL) == 249_856  # 61 layers x K and V x 8 heads x 128 x 2 bytes


def test_an_80_gb_card_holds_about_66k_tokens():
    weights, free = estimate_weight_bytes(REAL), int(79.2 * GIB)
    fit = context_fit(REAL, weights, free, 131072)
    assert fit.tokens == (free - weights - RESERVE_BYTES) // 249_856
    assert 60_000 < fit.tokens < 70_000
    assert "about 66K tokens of context fit" in fit.message and "128K needs" in fit.message


def test_a_141_gb_card_holds_the_full_window():
    fit = context_fit(REAL, estimate_weight_bytes(REAL), 139 * GIB, 131072)
    assert fit.tokens == 131072 and "full 128K-token context fits" in fit.message


def test_a_48_gb_card_cannot_hold_the_weights():
    fit = context_fit(REAL, estimate_weight_bytes(REAL), 47 * GIB, 131072)
    assert fit.tokens == 0 and "weights alone need 61.7 GiB" in fit.message
