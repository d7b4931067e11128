"""CUDA-only checks of the fast decode path (marked `gpu`; skipped, with the reason shown, without a CUDA GPU)."""

from __future__ import annotations

import pytest
import torch
from test_tools import GPU_FIGURES, bench_gpu_tiny

from rumination.backends.base import SamplingParams, render
from rumination.backends.local import LocalBackend
from rumination.config import Config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


async def _answers(model_dir, **settings) -> tuple[list[list[int]], list[str]]:
    said: list[str] = []
    backend = LocalBackend(Config(model=str(model_dir), device="cuda", dtype="float32", **settings))
    backend.load(said.append)
    messages, answers = [{"role": "user", "content": "Who printed the Aldine editions?"}], []
    for _ in range(3):
        prompt = render(backend.tokenizer, messages)
        chunks = [c async for c in backend.generate(prompt, SamplingParams(max_new_tokens=40, temperature=0.0))]
        answers.append(chunks[-1].outcome.text)
        messages += [{"role": "assistant", "content": answers[-1]}, {"role": "observation", "content": "a page"}]
    return answers, said


async def test_compiled_static_decode_matches_eager_dynamic_decode(tiny_model_dir):
    fast, said = await _answers(tiny_model_dir)  # the CUDA defaults: static cache, compiled step
    assert any("static KV cache, compiled decode" in line for line in said)
    assert any("GiB free" in line and "context fits" in line for line in said)
    slow, _ = await _answers(tiny_model_dir, kv_cache="dynamic", compile="off")
    assert fast == slow


async def test_fp8_cache_runs_on_cuda(tiny_model_dir):
    answers, said = await _answers(tiny_model_dir, kv_cache="fp8")
    assert any("fp8 KV cache" in line for line in said) and all(isinstance(a, str) for a in answers)


def test_bench_gpu_mode_runs_on_the_gpu():
    figures = bench_gpu_tiny()
    assert figures["device"] != "cpu"
    for name in GPU_FIGURES:  # a tiny model's roofline fractions round to 0.000: only rates must be positive
        assert float(figures[name]) > 0 or (name.endswith("fraction") and float(figures[name]) >= 0), name
