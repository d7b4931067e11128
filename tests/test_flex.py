"""--attention flex: a compiled step reads only the cache blocks in use, one graph serves every length, and its greedy
output is generate()'s. Compiled with inductor on the CPU (torch's C++ flex kernel), the kernel a GPU runs in Triton."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import greedy_reference as reference
from conftest import varied_model

from rumination.backends import attention
from rumination.backends.attention import KV_BLOCK, causal_by_position, decode_block_mask, flex_decode
from rumination.backends.decode import Decoder, sampler
from rumination.backends.plan import plan_load
from rumination.config import Config
from rumination.errors import BackendError

inductor = pytest.mark.skipif(shutil.which("g++") is None, reason="inductor's CPU kernels need a C++ compiler (g++)")
GREEDY = sampler(0.0, 1.0)


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Earlier tests' Decoders keep their graphs of the same step functions, which count against dynamo's limit."""
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("start", "queries", "keys"),
    [(0, 1, 512), (126, 1, 512), (127, 1, 512), (128, 1, 512), (300, 7, 1000), (250, 7, 1000), (992, 7, 1000)],
)
def test_the_block_mask_lists_exactly_the_blocks_the_queries_reach(start, queries, keys):
    mask = decode_block_mask(torch.tensor(start), queries, keys)
    used, blocks = -(-(start + queries) // KV_BLOCK), -(-keys // KV_BLOCK)
    assert mask.to_dense()[0, 0, 0].tolist() == [1] * used + [0] * (blocks - used)
    assert int(mask.full_kv_num_blocks) == (start + 1) // KV_BLOCK  # every query sees all of these: no rule applied
    folded = causal_by_position(mask, torch.arange(start, start + queries), 6 * queries)  # 6 query heads per K/V
    assert folded.seq_lengths == (6 * queries, keys)
    zero, last = torch.tensor(0), torch.tensor(start + queries - 1)
    assert bool(folded.mask_mod(zero, zero, torch.tensor(6 * queries - 1), last))  # the last head's last query
    assert not bool(folded.mask_mod(zero, zero, torch.tensor(queries), torch.tensor(start + 1)))  # a first query


@pytest.mark.parametrize("queries", [1, 7])
def test_query_heads_folded_onto_their_kv_head_attend_as_their_own(monkeypatch, queries):
    monkeypatch.setattr(attention, "folds_heads", lambda query: True)  # what CUDA does, here run eagerly
    torch.manual_seed(0)
    key, value = torch.randn(1, 2, 1000, 16), torch.randn(1, 2, 1000, 16)
    for start in (0, 300, 1000 - queries):
        query, positions = torch.randn(1, 12, queries, 16), torch.arange(start, start + queries)
        allowed = torch.arange(1000)[None, :] <= positions[:, None]
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=allowed, scale=0.25, enable_gqa=True
        )
        mask = decode_block_mask(torch.tensor(start), queries, 1000)
        got, _ = flex_decode(None, query, key, value, mask, 0.25, position_ids=positions[None])
        assert torch.allclose(got.transpose(1, 2), expected, atol=1e-5), start


@inductor
@pytest.mark.parametrize("queries", [1, 7])
def test_compiled_flex_reads_nothing_past_the_blocks_in_use(queries):
    keys, heads, kv_heads, dim = 1000, 12, 2, 16  # 6 query heads per K/V head, as in the real model

    def attend(query, key, value, start, positions):
        mask = decode_block_mask(start, queries, keys)
        out, _ = flex_decode(None, query, key, value, mask, 0.25, position_ids=positions[None])
        return out.transpose(1, 2)

    compiled = torch.compile(attend, fullgraph=True, dynamic=False)
    torch.manual_seed(0)
    key, value = torch.randn(1, kv_heads, keys, dim), torch.randn(1, kv_heads, keys, dim)
    for start in (0, 127 - queries, 128, 500, keys - queries):
        end = start + queries
        poisoned = value.clone()
        poisoned[:, :, -(-end // KV_BLOCK) * KV_BLOCK :] = float("nan")  # read, even masked, it would spread
        query = torch.randn(1, heads, queries, dim)
        allowed = torch.arange(keys)[None, :] <= torch.arange(start, end)[:, None]
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=allowed, scale=0.25, enable_gqa=True
        )
        positions = torch.arange(start, end)
        got = compiled(query, key, poisoned, torch.tensor(start), positions)
        assert torch.allclose(got, expected, atol=1e-5), start


@inductor
@pytest.mark.parametrize("draft", [0, 4])
def test_flex_decode_is_one_graph_for_every_length_and_matches_generate(tiny_model_dir, prompt, draft):
    from torch._inductor.compile_fx import compile_fx

    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return compile_fx(graph, example_inputs)

    model = varied_model(tiny_model_dir, attention.FLEX)
    options = {"backend": counting}
    decoder = Decoder(model, "static", 1000, prefill_chunk=7, compile_step=True, compile_options=options, draft=draft)
    assert decoder.windows() == [1000]
    assert decoder.warm_up() is None and len(graphs) == 1 + (draft > 0)
    with torch.inference_mode():  # never reached by these turns: a step that read the window would spread it
        for layer in decoder.cache.layers:
            layer.keys[:, :, 640:] = layer.values[:, :, 640:] = float("nan")
    ids, drafted = prompt, 0
    for turn in range(3):
        with torch.inference_mode():
            decoded = decoder.generate(ids, 120, GREEDY, [])
        assert decoded.ids == reference(model, ids, 120), f"turn {turn}"
        assert {layer.window for layer in decoder.cache.layers} == {1000}  # the block mask limits the read
        ids, drafted = ids + decoded.ids[:10] + prompt[:25], drafted + decoded.drafted
    assert len(ids) + 120 < 640
    assert len(graphs) == 1 + (draft > 0) and decoder._step is not None and decoder.compile_error is None
    assert (decoder._verify is not None) == (draft > 0) == (drafted > 0)


def test_flex_without_compiling_decodes_through_sdpa_windows_exactly(tiny_model_dir, prompt):
    model = varied_model(tiny_model_dir, attention.FLEX)
    decoder = Decoder(model, "static", 1000, prefill_chunk=16, first_window=64)
    with torch.inference_mode():
        decoded = decoder.generate(prompt, 60, GREEDY, [])
    assert decoded.ids == reference(model, prompt, 60)
    assert {layer.window for layer in decoder.cache.layers} == {256}  # eager steps keep the SDPA windows


def test_the_plan_takes_flex_to_the_static_cache_and_refuses_the_others(tiny_model_dir):
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(tiny_model_dir)
    plan = plan_load(Config(attention="flex"), hf_config, "cpu", lambda line: None)
    assert (plan.kv_cache, plan.attention, plan.compile) == ("static", attention.FLEX, False)
    assert "flex attention runs in compiled steps only" in plan.describe()
    compiled = plan_load(Config(attention="flex", compile="on"), hf_config, "cpu", lambda line: None)
    assert compiled.compile and "flex attention" in compiled.describe() and "only" not in compiled.describe()
    for kind in ("dynamic", "fp8"):
        with pytest.raises(BackendError, match=f"--attention flex reads the static KV cache, not --kv-cache {kind}"):
            plan_load(Config(attention="flex", kv_cache=kind), hf_config, "cpu", lambda line: None)


@inductor
async def test_the_local_backend_loads_and_decodes_with_flex_like_eager_sdpa(tiny_model_dir, tmp_path):
    import shutil as files

    from rumination.backends.base import Prompt, SamplingParams
    from rumination.backends.local import LocalBackend

    lively = tmp_path / "lively"  # the tiny model with weights whose greedy text varies
    files.copytree(tiny_model_dir, lively)
    varied_model(tiny_model_dir, attention.PACKED_SDPA).save_pretrained(lively)
    texts = {}
    for attention_setting, compile_setting in (("flex", "on"), ("auto", "off")):
        said: list[str] = []
        backend = LocalBackend(
            Config(
                model=str(lively), device="cpu", dtype="float32", attention=attention_setting, compile=compile_setting
            )
        )
        backend.load(said.append)
        messages, texts[attention_setting] = [{"role": "user", "content": "Who printed the Aldine editions?"}], []
        for _ in range(2):
            prompt = Prompt.of(backend.tokenizer, messages)
            chunks = [c async for c in backend.generate(prompt, SamplingParams(max_new_tokens=40, temperature=0.0))]
            texts[attention_setting].append(chunks[-1].outcome.text)
            messages += [{"role": "assistant", "content": texts[attention_setting][-1]}]
            messages += [{"role": "observation", "content": "a page"}]
        if attention_setting == "flex":
            assert any("static KV cache, compiled decode, flex attention" in line for line in said)
            assert any("for every context size at once" in line for line in said)
            assert backend.decoder.flex and backend.decoder._step is not None and backend.decoder.compile_error is None
        await backend.aclose()
    assert texts["flex"] == texts["auto"] and len(set(texts["flex"][0])) > 5
