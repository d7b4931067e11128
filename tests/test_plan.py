"""Load choices of the local backend (cache, compile, kernel, quantisation, YaRN), checked before weights load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from rumination.backends.base import Prompt, SamplingParams
from rumination.backends.local import LocalBackend
from rumination.backends.plan import plan_load
from rumination.config import Config
from rumination.errors import BackendError


def _plan(tiny_model_dir, device: str = "cpu", gpus: int = 1, **settings):
    said: list[str] = []
    hf_config = AutoConfig.from_pretrained(tiny_model_dir)
    plan = plan_load(Config(model=str(tiny_model_dir), **settings), hf_config, device, said.append, gpus)
    return plan, hf_config, said


def test_defaults_static_compiled_on_cuda_dynamic_eager_on_cpu(tiny_model_dir):
    cuda, _, _ = _plan(tiny_model_dir, "cuda")
    assert (cuda.kv_cache, cuda.compile, cuda.load_arguments("cuda")["device_map"]) == ("static", True, "auto")
    cpu, _, _ = _plan(tiny_model_dir)
    assert (cpu.kv_cache, cpu.compile) == ("dynamic", False) and "device_map" not in cpu.load_arguments("cpu")
    assert cpu.load_arguments("cpu")["attn_implementation"] == "rumination_sdpa"
    split, _, _ = _plan(tiny_model_dir, "cuda", gpus=2)  # CUDA graphs are per device: eager over two GPUs
    assert (split.kv_cache, split.compile) == ("static", False)


def test_quantised_weights_load_through_bitsandbytes_and_decode_eagerly(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "bitsandbytes" else real(name))
    quantized, _, _ = _plan(tiny_model_dir, "cuda", quantize="4bit")
    assert quantized.compile is False and "4bit weights" in quantized.describe()
    settings = quantized.load_arguments("cuda")["quantization_config"]
    assert settings.load_in_4bit and settings.bnb_4bit_quant_type == "nf4"


def test_int8_and_fp8_weights_load_through_torchao_and_keep_the_compiled_step(tiny_model_dir, monkeypatch):
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    int8, _, _ = _plan(tiny_model_dir, "cuda", quantize="int8")
    assert int8.compile is True and "int8 weights" in int8.describe()
    assert int8.draft == 0 and "drafts" not in int8.describe()  # a verify step would de-quantise every weight
    assert _plan(tiny_model_dir, "cuda", quantize="int8", speculate="on")[0].draft == 6
    assert isinstance(int8.load_arguments("cuda")["quantization_config"].quant_type, Int8WeightOnlyConfig)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))  # Hopper
    fp8, _, _ = _plan(tiny_model_dir, "cuda", quantize="fp8")
    quant_type = fp8.load_arguments("cuda")["quantization_config"].quant_type
    assert fp8.compile is True and isinstance(quant_type, Float8WeightOnlyConfig)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(BackendError, match=r"Hopper or newer GPU \(not NVIDIA A100-SXM4-80GB\); use --quantize int8"):
        _plan(tiny_model_dir, "cuda", quantize="fp8")


def test_int8_weights_run_on_the_cpu_and_trace_as_one_graph(tiny_model_dir):
    from torchao.quantization import Int8Tensor

    from rumination.backends.decode import Decoder, sampler
    from rumination.backends.memory import LINEAR_BYTES

    backend = LocalBackend(Config(model=str(tiny_model_dir), device="cpu", quantize="int8"))
    backend.load()
    assert "int8 weights" in backend.load_notes[-1]
    linears = [m for m in backend.model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.weight, Int8Tensor) for m in linears)
    stored = sum(m.weight.qdata.numel() + m.weight.scale.numel() * m.weight.scale.element_size() for m in linears)
    params = sum(m.weight.qdata.numel() for m in linears)
    assert LINEAR_BYTES["int8"] <= stored / params < LINEAR_BYTES["int8"] * 1.1  # one byte a weight, plus scales
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    options = {"backend": counting}
    decoder = Decoder(backend.model, "static", 256, compile_step=True, compile_options=options, draft=3)
    assert decoder.warm_up() is None and len(graphs) == 2  # fullgraph: int8 weights break no graph
    eager = Decoder(backend.model, "static", 256)
    with torch.inference_mode():
        ids = list(range(40, 90))
        assert decoder.generate(ids, 30, sampler(0, 1), []).ids == eager.generate(ids, 30, sampler(0, 1), []).ids


def test_yarn_only_past_the_native_context(tiny_model_dir):
    plan, hf_config, said = _plan(tiny_model_dir, context_window=16384)  # the fixture is 4096 native
    assert hf_config.rope_parameters["rope_type"] == "yarn" and hf_config.rope_parameters["factor"] == 4.0
    assert hf_config.rope_parameters["original_max_position_embeddings"] == 4096
    assert hf_config.max_position_embeddings == 16384 and plan.context == 16384
    assert "YaRN RoPE scaling x4" in said[-1] and "YaRN x4" in plan.describe()
    plan, hf_config, said = _plan(tiny_model_dir, context_window=2048)
    assert hf_config.rope_parameters["rope_type"] == "default" and plan.context == 2048 and not said


@pytest.mark.parametrize(
    ("settings", "device", "message"),
    [
        ({"quantize": "8bit"}, "cpu", "--quantize 8bit needs a CUDA GPU"),
        ({"quantize": "fp8"}, "cpu", "--quantize fp8 needs a CUDA GPU; --quantize int8 runs on any device"),
        ({"attention": "flash_attention_2"}, "cuda", "needs the flash-attn package"),
        ({"compile": "on", "kv_cache": "dynamic"}, "cpu", "--compile on needs --kv-cache static"),
    ],
)
def test_impossible_combinations_are_refused_with_the_fix(tiny_model_dir, settings, device, message):
    with pytest.raises(BackendError, match=message):
        _plan(tiny_model_dir, device, **settings)


def test_quantize_without_its_package_says_how_to_install(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    missing = {"bitsandbytes", "torchao"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in missing else real(name))
    with pytest.raises(BackendError, match="pip install bitsandbytes"):
        _plan(tiny_model_dir, "cuda", quantize="4bit")
    with pytest.raises(BackendError, match=r"--quantize int8 needs torchao: pip install 'rumination\[quant\]'"):
        _plan(tiny_model_dir, "cpu", quantize="int8")


async def test_the_backend_with_a_static_cache_matches_the_dynamic_one_with_yarn_too(tiny_model_dir):
    async def answers(**settings) -> list[str]:
        backend = LocalBackend(Config(model=str(tiny_model_dir), device="cpu", **settings))
        backend.load()
        messages = [{"role": "user", "content": "Where was movable type first used in Europe?"}]
        out = []
        for _ in range(3):
            params = SamplingParams(max_new_tokens=24, temperature=0.0)
            chunks = [c async for c in backend.generate(Prompt.of(backend.tokenizer, messages), params)]
            outcome = chunks[-1].outcome
            assert "".join(c.text for c in chunks[:-1]) == outcome.text  # streamed text is the whole answer
            assert outcome.prefill_seconds > 0 and outcome.decode_seconds > 0
            out.append(outcome.text)
            messages += [{"role": "assistant", "content": outcome.text}, {"role": "observation", "content": "page"}]
        return out

    assert await answers(kv_cache="static", prefill_chunk=16) == await answers(kv_cache="dynamic")
    yarn = await answers(kv_cache="static", context_window=8192)
    assert yarn == await answers(kv_cache="dynamic", context_window=8192)


def test_a_context_past_the_native_one_loads_with_yarn_frequencies(tiny_model_dir):
    loaded = {}
    for window in (4096, 8192):
        backend = LocalBackend(Config(model=str(tiny_model_dir), device="cpu", context_window=window))
        backend.load()
        loaded[window] = backend
    yarn = loaded[8192]
    assert yarn.load_notes == [
        "8,192 tokens asked for, 4,096 native: YaRN RoPE scaling x2",
        "8,192-token context window; dynamic KV cache, eager decode, SDPA, prompt-lookup drafts of 6, YaRN x2",
    ]
    assert yarn.model.config.rope_parameters["rope_type"] == "yarn" and yarn.context_window == 8192
    assert yarn.model.model.rotary_emb.rope_type == "yarn"
    assert not torch.equal(yarn.model.model.rotary_emb.inv_freq, loaded[4096].model.model.rotary_emb.inv_freq)


def test_loading_with_torchao_installed_writes_nothing_to_stderr(tiny_model_dir):
    import subprocess
    import sys

    code = (
        "from rumination.backends.local import LocalBackend; from rumination.config import Config; "
        f"LocalBackend(Config(model={str(tiny_model_dir)!r}, device='cpu', quantize='int8')).load()"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr == ""  # torchao's import logs each kernel library it cannot load: a TUI would tear
