"""The decode loop on the tiny Glm4 model: every cache kind, chunked prefill and the compiled step match generate()."""

from __future__ import annotations

import pytest
import torch
from conftest import greedy_reference as reference
from conftest import varied_model
from transformers import AutoModelForCausalLM

from rumination.backends import attention
from rumination.backends.decode import Decoder, sampler, window_for

GREEDY = sampler(0.0, 1.0)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    attention.register()
    loaded = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation=attention.PACKED_SDPA
    )
    return loaded.eval()


def run(decoder: Decoder, ids: list[int], new: int):
    with torch.inference_mode():
        return decoder.generate(ids, new, GREEDY, stop_ids=[])


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("chunk", [5, 4096])
def test_multi_turn_output_matches_generate_for_every_cache_and_chunking(model, prompt, kind, chunk):
    decoder = Decoder(model, kind, 1024, prefill_chunk=chunk, first_window=32)
    ids = prompt
    for turn in range(3):
        decoded = run(decoder, ids, 40)
        assert decoded.ids == reference(model, ids, 40), f"turn {turn}"
        assert decoder.cached_tokens == len(ids) + 39  # the last token is sampled, never fed back
        # The next prompt keeps part of this answer and appends an observation: a crop, then a prefill.
        kept = len(ids) + 10
        assert decoder.ids[:kept] == (ids + decoded.ids)[:kept]
        ids = ids + decoded.ids[:10] + prompt[:25]
        if turn:
            assert decoded.reused > 0
    final = run(decoder, ids, 5)
    assert final.reused == len(ids) - 25  # everything but the new observation came from the cache


def test_static_window_grows_fourfold_as_the_context_grows(model, prompt):
    decoder = Decoder(model, "static", 1024, prefill_chunk=16, first_window=32)
    run(decoder, prompt, 1)  # prefill only: it attends over exactly the tokens there are
    assert {layer.window for layer in decoder.cache.layers} == {len(prompt)}
    run(decoder, prompt, 100)  # decode steps use the compiled-friendly window sizes
    held = decoder.cached_tokens
    assert {layer.window for layer in decoder.cache.layers} == {window_for(held, 1024, 32)} == {512}
    sizes = (1, 32, 33, 128, 129, 512, 513, 5000)
    assert [window_for(n, 1024, 32) for n in sizes] == [32, 32, 128, 128, 512, 512, 1024, 1024]
    assert decoder.cache.layers[0].keys.shape[2] == 1024  # allocated once for the whole context
    halving = Decoder(model, "static", 1024, prefill_chunk=16, first_window=32, growth=2)
    assert halving.windows() == [32, 64, 128, 256, 512, 1024]  # at most 2x read past the used cache
    assert run(halving, prompt, 100).ids == reference(model, prompt, 100)
    (window,) = {layer.window for layer in halving.cache.layers}
    assert window // 2 < halving.cached_tokens <= window  # the last step read at most twice what was there


def test_without_reuse_everything_is_prefilled_and_the_output_is_the_same(model, prompt):
    reuse, fresh = Decoder(model, "static", 1024), Decoder(model, "static", 1024, reuse=False)
    first = run(reuse, prompt, 12)
    run(fresh, prompt, 12)
    ids = prompt + first.ids + prompt[:20]
    with_reuse, without = run(reuse, ids, 12), run(fresh, ids, 12)
    assert with_reuse.ids == without.ids
    assert with_reuse.reused == len(prompt) + 11 and without.reused == 0


def test_compiled_decode_step_is_one_graph_per_window_all_made_at_warm_up(model, prompt):
    # fullgraph=True fails on any graph break; a counting backend (running the traced graph as is) checks
    # the trace without a C++ compiler, and counts compilations.
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    decoder = Decoder(model, "static", 512, first_window=48, compile_step=True, compile_options={"backend": counting})
    assert decoder.windows() == [48, 192, 512]
    assert decoder.warm_up() is None and decoder.cached_tokens == 0 and int(decoder.cache.get_seq_length()) == 0
    assert len(graphs) == 3  # one static graph per window, never a dynamic-shape one
    assert run(decoder, prompt, 90).ids == reference(model, prompt, 90)  # the prompt fits 192; decoding needs 512
    assert len(graphs) == 3 and decoder._step is not None and decoder.compile_error is None
    # The model thread calls generate() without an inference_mode of its own, after warm_up made the cache.
    assert decoder.generate(prompt, 5, GREEDY, []).ids == reference(model, prompt, 5)


def test_a_step_that_cannot_be_compiled_falls_back_to_eager_and_stays_exact(model, prompt):
    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    decoder = Decoder(model, "static", 512, compile_step=True, compile_options={"backend": broken})
    assert "no C++ compiler" in decoder.warm_up()
    assert run(decoder, prompt, 30).ids == reference(model, prompt, 30)


def test_fp8_cache_crops_and_a_prompt_sharing_nothing_starts_a_fresh_cache(model, prompt):
    decoder = Decoder(model, "fp8", 1024)
    first = run(decoder, prompt, 20)
    layer = decoder.cache.layers[0]
    assert layer._quantized_keys[0].dtype == torch.float8_e4m3fn
    assert layer._quantized_keys[0].shape[2] == decoder.cached_tokens == len(prompt) + 19
    second = run(decoder, prompt + first.ids[:5] + prompt[:9], 10)
    assert second.reused == len(prompt) + 5
    assert layer._quantized_keys[0].shape[2] == decoder.cached_tokens == len(prompt) + 5 + 9 + 9
    run(decoder, prompt[::-1], 3)  # nothing in common: a new cache, with a scale calibrated on this prompt
    assert decoder.cache.layers[0] is not layer and decoder.cached_tokens == len(prompt) + 2


def test_stop_ids_max_tokens_and_cancel(model, prompt):
    decoder = Decoder(model, "dynamic", 1024)
    expected = reference(model, prompt, 30)
    with torch.inference_mode():
        stopped = decoder.generate(prompt, 30, GREEDY, stop_ids=[expected[7]])
        assert stopped.ids == expected[: expected.index(expected[7]) + 1]
        seen: list[int] = []
        cancelled = decoder.generate(prompt, 30, GREEDY, [], on_token=lambda t: seen.append(t) or len(seen) < 4)
    assert cancelled.ids == expected[:4] == seen


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_each_token_is_fed_before_the_host_reads_it_and_the_cache_ends_exact(tiny_model_dir, prompt, kind):
    model = varied_model(tiny_model_dir, attention.PACKED_SDPA)
    events: list[tuple[str, int]] = []

    def fed(module, args, kwargs):
        events.append(("fed", int(kwargs["input_ids"][0, -1])))

    def read(token):
        events.append(("read", token))
        return True

    expected = reference(model, prompt, 40)
    stop = next(t for i, t in enumerate(expected) if i > 5 and t not in expected[:i])
    decoder = Decoder(model, kind, 1024, first_window=32)
    handle = model.register_forward_pre_hook(fed, with_kwargs=True)
    try:
        with torch.inference_mode():
            stopped = decoder.generate(prompt, 40, GREEDY, [stop], on_token=read)
            held = int(decoder.cache.get_seq_length())
            events.append(("turn", 0))
            capped = decoder.generate(prompt, 12, GREEDY, [])
    finally:
        handle.remove()
    out = expected[: expected.index(stop) + 1]
    assert stopped.ids == out and capped.ids == expected[:12]
    first = events[1:][: 2 * len(out)]  # after the prefill: each token's step starts before the host sees it
    assert first == [event for token in out for event in (("fed", token), ("read", token))]
    # The stop token's step ran (the host could not know it yet), and was cropped from the cache.
    assert held == len(prompt) + len(out) - 1 and capped.reused == len(prompt) - 1
    assert decoder.ids == prompt + expected[:11] and int(decoder.cache.get_seq_length()) == len(decoder.ids)
    assert events[events.index(("turn", 0)) + 1 :][-11:] == [("fed", token) for token in expected[:11]]


@pytest.mark.parametrize("kind", ["static", "dynamic", "fp8"])
def test_a_failure_inside_a_forward_pass_empties_every_layer_and_the_next_turn_is_exact(model, prompt, kind):
    decoder = Decoder(model, kind, 1024, prefill_chunk=64)
    run(decoder, prompt, 5)
    last = model.model.layers[-1]

    def fail(module, args):  # the first layers have already stored this chunk when the last one fails
        raise torch.cuda.OutOfMemoryError("simulated")

    handle = last.register_forward_pre_hook(fail)
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            run(decoder, [*prompt, 5, 6, 7], 10)
    finally:
        handle.remove()
    assert decoder.cached_tokens == 0
    assert decoder.cache is None or all(int(layer.get_seq_length()) == 0 for layer in decoder.cache.layers)
    again = run(decoder, prompt, 15)
    assert again.reused == 0
    if kind != "fp8":  # FP8 is lossy: only the bf16/fp32 caches must match generate() exactly
        assert again.ids == reference(model, prompt, 15)


def test_an_error_in_the_consumer_forgets_the_cache(model, prompt):
    decoder = Decoder(model, "static", 1024)

    def explode(token: int) -> bool:
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError):
        decoder.generate(prompt, 10, GREEDY, [], on_token=explode)
    assert decoder.cached_tokens == 0 and int(decoder.cache.get_seq_length()) == 0
    assert run(decoder, prompt, 15).ids == reference(model, prompt, 15)


def test_cancel_during_prefill_stops_between_chunks(model, prompt):
    decoder = Decoder(model, "dynamic", 1024, prefill_chunk=16)
    checks = []
    decoded = decoder.generate(prompt, 10, GREEDY, [], cancelled=lambda: checks.append(1) or len(checks) > 3)
    assert decoded.ids == [] and decoder.cached_tokens == 48  # three chunks of 16 went in before the stop
    assert run(decoder, prompt, 8).reused == 48


def test_prompts_that_cannot_fit_are_refused_before_touching_the_cache(model, prompt):
    decoder = Decoder(model, "static", 200)
    with pytest.raises(ValueError, match="do not fit 200"):
        decoder.generate(prompt, 200 - len(prompt) + 2, GREEDY, [])
    with pytest.raises(ValueError, match="a prompt token and at least one new token"):
        decoder.generate([], 5, GREEDY, [])
    assert decoder.cache is None
    exact = decoder.generate(prompt, 200 - len(prompt) + 1, GREEDY, [])  # the last token is never fed back
    assert decoder.cached_tokens == 200 and len(exact.ids) == 200 - len(prompt) + 1


def test_sampling_is_reproducible_with_a_seed_and_varies_without(model, prompt):
    decoder = Decoder(model, "dynamic", 1024)
    pick = sampler(1.5, 0.95)

    def draw(seed: int) -> list[int]:
        torch.manual_seed(seed)
        with torch.inference_mode():
            return decoder.generate(prompt, 25, pick, []).ids

    assert draw(1) == draw(1)
    assert len({tuple(draw(seed)) for seed in range(2, 6)}) > 1


def test_packed_sdpa_equals_repeated_kv_attention():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        num_key_value_groups = 6
        is_causal = True

    torch.manual_seed(0)
    query, key, value = torch.randn(1, 48, 1, 16), torch.randn(1, 8, 40, 16), torch.randn(1, 8, 40, 16)
    mask = torch.arange(40)[None, None, None, :] <= 29  # a static cache: positions past 29 are stale
    packed, _ = attention.packed_sdpa(Module(), query, key, value, mask, scaling=0.25)
    keys, values = (t.repeat_interleave(6, dim=1) for t in (key, value))
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=0.25)
    assert torch.allclose(packed, expected.transpose(1, 2), atol=1e-5)
    unpacked, _ = sdpa_attention_forward(Module(), query, key, value, mask, scaling=0.25)
    assert torch.allclose(packed, unpacked, atol=1e-5)


def test_top_k_one_samples_the_greedy_tokens_at_any_temperature(model, prompt):
    decoder = Decoder(model, "dynamic", 1024)
    torch.manual_seed(0)
    with torch.inference_mode():
        sampled = decoder.generate(prompt, 30, sampler(1.5, 1.0, top_k=1), []).ids
    assert sampled == reference(model, prompt, 30)


def test_top_k_keeps_the_k_likeliest_tokens_and_zero_disables_it():
    logits = torch.linspace(0.0, 1.0, 50)[None]  # nearly flat: without a limit every token gets drawn

    def drawn(top_k: int) -> set[int]:
        torch.manual_seed(0)
        pick = sampler(1.0, 1.0, top_k)
        return {int(pick(logits)) for _ in range(400)}

    assert drawn(5) == set(range(45, 50))
    assert len(drawn(0)) > 45


@pytest.mark.parametrize(("window", "used", "chunk"), [(64, 17, 16), (64, 64, 16), (48, 1, 64), (128, 100, 32)])
def test_split_kv_decode_attention_matches_sdpa(window, used, chunk):
    from rumination.backends.attention import split_kv_decode

    torch.manual_seed(window + used)
    query = torch.randn(1, 12, 1, 16)
    key, value = torch.randn(1, 2, window, 16), torch.randn(1, 2, window, 16)
    allowed = (torch.arange(window) < used).reshape(1, 1, 1, window)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key[:, :, :used].repeat_interleave(6, 1), value[:, :, :used].repeat_interleave(6, 1), scale=0.25
    )
    got = split_kv_decode(query, key, value, allowed, 0.25, chunk)
    assert got.shape == (1, 12, 1, 16)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(
        split_kv_decode(query, key, value, None, 0.25, chunk),
        split_kv_decode(query, key, value, torch.ones_like(allowed), 0.25, chunk),
    )


@pytest.mark.parametrize("draft", [0, 4])
def test_fine_windows_share_one_graph_whose_window_is_a_dynamic_size(model, prompt, draft):
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    options = {"backend": counting}
    decoder = Decoder(model, "static", 640, 50, True, window_step=64, compile_options=options, draft=draft)
    assert decoder.windows() == [64, 128, 192, 256, 320, 384, 448, 512, 576, 640]
    assert decoder.warm_up() is None and len(graphs) == 1 + (draft > 0)  # ten windows, one graph per step kind
    ids = prompt
    for turn in range(2):
        decoded = run(decoder, ids, 150)
        assert decoded.ids == reference(model, ids, 150), f"turn {turn}"
        (window,) = {layer.window for layer in decoder.cache.layers}
        assert window - 64 < decoder.cached_tokens <= window  # read at most 63 positions past the cache
        ids = ids + decoded.ids[:10] + prompt[:25]
    assert len(graphs) == 1 + (draft > 0) and decoder._step is not None
