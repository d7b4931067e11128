"""CUDA-only checks of the fast decode path (marked `gpu`; skipped, with the reason shown, without a CUDA GPU)."""

from __future__ import annotations

import pytest
import torch
from test_tools import GPU_FIGURES, bench_gpu_tiny

from rumination.backends.base import Prompt, SamplingParams
from rumination.backends.local import LocalBackend
from rumination.config import Config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


async def _answers(model_dir, **settings) -> tuple[list[str], list[str], LocalBackend]:
    said: list[str] = []
    backend = LocalBackend(Config(model=str(model_dir), device="cuda", dtype="float32", **settings))
    backend.load(said.append)
    messages, answers = [{"role": "user", "content": "Who printed the Aldine editions?"}], []
    for _ in range(3):
        prompt = Prompt.of(backend.tokenizer, messages)
        chunks = [c async for c in backend.generate(prompt, SamplingParams(max_new_tokens=40, temperature=0.0))]
        answers.append(chunks[-1].outcome.text)
        messages += [{"role": "assistant", "content": answers[-1]}, {"role": "observation", "content": "a page"}]
    return answers, said, backend


async def test_compiled_static_decode_matches_eager_dynamic_decode(tiny_model_dir):
    fast, said, backend = await _answers(tiny_model_dir)  # the CUDA defaults: static cache, compiled step
    assert any("static KV cache, compiled decode" in line for line in said)
    assert any("GiB free" in line and "context fits" in line for line in said)
    assert not any("could not be compiled" in line for line in said)
    assert backend.decoder._step is not None and backend.decoder.compile_error is None
    slow, _, _ = await _answers(tiny_model_dir, kv_cache="dynamic", compile="off")
    assert fast == slow


def test_cuda_graphs_across_window_growth_match_eager(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rumination.backends import attention
    from rumination.backends.decode import Decoder, sampler

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation=attention.PACKED_SDPA
    ).to("cuda")
    prompt = list(range(40, 240))
    outputs = []
    for compiled, draft in ((True, 0), (False, 0), (True, 5)):
        decoder = Decoder(model, "static", 1024, first_window=64, compile_step=compiled, draft=draft)
        assert decoder.warm_up() is None
        decoded = decoder.generate(prompt, 120, sampler(0.0, 1.0), [])  # windows 256, then 1024
        outputs.append(decoded.ids)
        assert compiled is (decoder._step is not None) and (draft > 0) is (decoder._verify is not None)
        assert (decoded.drafted > 0) is (draft > 0)  # the tiny model repeats itself: lookup drafts find it
    assert outputs[0] == outputs[1] == outputs[2]  # CUDA graphs of the verify step replayed, from both windows


@pytest.mark.parametrize("heads", [4, 12])  # 2 and 6 query heads per K/V head (6: folded for the split-KV kernel)
def test_flex_decode_under_cuda_graphs_matches_generate(tiny_model_dir, prompt, heads):
    from conftest import greedy_reference, varied_model

    from rumination.backends import attention
    from rumination.backends.decode import Decoder, sampler

    model = varied_model(tiny_model_dir, attention.FLEX, num_attention_heads=heads).to("cuda")
    expected = greedy_reference(model, prompt, 120)  # transformers' generate: eager SDPA on a dynamic cache
    for draft in (0, 5):
        decoder = Decoder(model, "static", 1000, compile_step=True, draft=draft)
        assert decoder.warm_up() is None
        decoded = decoder.generate(prompt, 120, sampler(0.0, 1.0), [])  # past the first 128-position block
        assert decoded.ids == expected and (decoded.drafted > 0) is (draft > 0)


async def test_fp8_cache_holds_float8_keys_on_cuda(tiny_model_dir):
    answers, said, backend = await _answers(tiny_model_dir, kv_cache="fp8")
    assert any("fp8 KV cache" in line for line in said) and len(answers) == 3
    keys = backend.decoder.cache.layers[0]._quantized_keys[0]
    assert keys.dtype == torch.float8_e4m3fn and keys.device.type == "cuda"


def test_bench_gpu_mode_runs_on_the_gpu():
    figures = bench_gpu_tiny()
    assert figures["device"] != "cpu"
    for name in GPU_FIGURES:  # a tiny model's roofline fractions round to 0.000: only rates must be positive
        assert float(figures[name]) > 0 or (name.endswith("fraction") and float(figures[name]) >= 0), name
