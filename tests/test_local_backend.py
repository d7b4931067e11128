"""The local transformers backend on the tiny random Glm4ForCausalLM fixture (CPU)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import closed_port

from rumination import events as ev
from rumination.agent import Researcher
from rumination.backends.base import Prompt, SamplingParams, stop_token_ids
from rumination.backends.local import LocalBackend
from rumination.backends.memory import estimate_weight_bytes
from rumination.config import Config
from rumination.errors import BackendError
from rumination.protocol import ARCHITECTURE, DEFAULT_MODEL, STOP_TOKENS

MESSAGES = [{"role": "user", "content": "Who printed the first book in Europe?"}]

# The real model's shape, from PROTOCOL.md.
REAL_CONFIG = {"architectures": ["Glm4ForCausalLM"], "model_type": "glm4", **ARCHITECTURE}


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> LocalBackend:
    b = LocalBackend(Config(model=str(tiny_model_dir), device="cpu"))
    b.load()
    return b


async def _generate(backend: LocalBackend, prompt: Prompt, **params):
    chunks = [c async for c in backend.generate(prompt, SamplingParams(**params))]
    return chunks[:-1], chunks[-1].outcome


def test_loads_from_a_directory_and_renders_with_its_template(backend, tiny_model_dir):
    assert backend.model_id == str(tiny_model_dir)
    assert backend.context_window == 4096  # from the checkpoint's config
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    assert prompt.text.startswith("[gMASK]<sop><|system|>\n") and prompt.text.endswith(
        "<|user|>\nWho printed the first book in Europe?<|assistant|>"
    )
    ids = backend.tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert ids[0] == backend.tokenizer.convert_tokens_to_ids("[gMASK]")  # no BOS added
    assert backend.stop_ids == [backend.tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]


async def test_generates_streams_and_reports_length(backend):
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    chunks, outcome = await _generate(backend, prompt, max_new_tokens=12, temperature=0.0)
    assert outcome.finish_reason == "length" and outcome.generated_tokens == 12
    assert "".join(c.text for c in chunks) == outcome.text
    assert len(chunks) >= 2  # streamed, not delivered in one piece
    assert outcome.prompt_tokens == len(backend.tokenizer(prompt.text, add_special_tokens=False)["input_ids"])
    again = (await _generate(backend, prompt, max_new_tokens=12, temperature=0.0))[1]
    assert again.text == outcome.text  # greedy is deterministic


async def test_top_k_one_is_greedy_at_the_cards_temperature(backend):
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    greedy = (await _generate(backend, prompt, max_new_tokens=12, temperature=0.0))[1]
    for seed in (1, 2):
        top1 = (await _generate(backend, prompt, max_new_tokens=12, temperature=0.95, top_k=1, seed=seed))[1]
        assert top1.text == greedy.text


async def test_sampling_with_a_seed_is_reproducible(backend):
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    a = (await _generate(backend, prompt, max_new_tokens=10, temperature=0.95, top_p=0.7, seed=3))[1]
    b = (await _generate(backend, prompt, max_new_tokens=10, temperature=0.95, top_p=0.7, seed=3))[1]
    assert a.text == b.text and a.generated_tokens == 10


@pytest.mark.parametrize("stop_token", STOP_TOKENS)
async def test_stops_on_each_stop_id(tiny_model_dir, stop_token):
    backend = LocalBackend(Config(model=str(tiny_model_dir), device="cpu"))
    backend.load()
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    _, free = await _generate(backend, prompt, max_new_tokens=6, temperature=0.0)
    ids = backend.tokenizer(free.text, add_special_tokens=False)["input_ids"]
    # Make the stop token outscore whatever greedy decoding picks at the third step.
    stop_id = backend.tokenizer.convert_tokens_to_ids(stop_token)
    head = backend.model.lm_head.weight
    with torch.no_grad():
        head[stop_id] = head[ids[2]] * 4
    chunks, outcome = await _generate(backend, prompt, max_new_tokens=20, temperature=0.0)
    assert outcome.finish_reason == "stop"
    assert outcome.generated_tokens <= 3
    assert stop_token not in outcome.text and outcome.text == "".join(c.text for c in chunks)


async def test_cancelled_generation_releases_the_model(backend):
    prompt = Prompt.of(backend.tokenizer, MESSAGES)
    gen = backend.generate(prompt, SamplingParams(max_new_tokens=2000, temperature=0.0))
    first = await gen.__anext__()
    assert first.text
    await gen.aclose()  # stops the model thread at its next token
    prompt_tokens = len(backend.tokenizer(prompt.text, add_special_tokens=False)["input_ids"])
    assert backend.cached_tokens < prompt_tokens + 20  # it did not run on to 2000 tokens
    _, outcome = await _generate(backend, prompt, max_new_tokens=3, temperature=0.0)
    assert outcome.generated_tokens == 3


async def test_a_failed_load_leaves_nothing_behind_and_a_retry_loads_cleanly(tiny_model_dir, monkeypatch):
    import gc
    import weakref

    from rumination.backends.decode import Decoder

    backend = LocalBackend(Config(model=str(tiny_model_dir), device="cpu", compile="on", kv_cache="static"))

    def broken_warm_up(self):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Decoder, "warm_up", broken_warm_up)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        backend.load()
    assert backend.model is None and backend.decoder is None and backend.tokenizer is None
    monkeypatch.undo()
    backend.load()
    first_model = weakref.ref(backend.model)
    assert backend.load_notes.count(backend.load_notes[-1]) == 1  # notes are not repeated by the retry
    _, outcome = await _generate(backend, Prompt.of(backend.tokenizer, MESSAGES), max_new_tokens=3, temperature=0.0)
    assert outcome.generated_tokens == 3
    await backend.aclose()  # frees the model; a later load() brings it back
    gc.collect()
    assert first_model() is None and backend.tokenizer is None
    backend.load()
    _, outcome = await _generate(backend, Prompt.of(backend.tokenizer, MESSAGES), max_new_tokens=2, temperature=0.0)
    assert outcome.generated_tokens == 2


async def test_full_run_on_the_real_backend_ends_with_a_report(web, tiny_model_dir):
    # A random model never writes a valid call: every turn is cut off, and the run must still end cleanly.
    cfg = Config(
        backend="local",
        model=str(tiny_model_dir),
        device="cpu",
        max_new_tokens=16,
        temperature=0.0,
        search="searxng",
        searxng_url=web.base,
    )
    events = [e async for e in Researcher(cfg).stream("Who printed the first book in Europe?")]
    result = events[-1].result
    assert result.stop_reason == "format_errors"
    assert [s.error for s in result.steps] == ["cut_off"] * 3
    assert len(result.usage.generations) == 4 and all(t.generated_tokens == 16 for t in result.usage.generations)
    statuses = [e.message for e in events if isinstance(e, ev.StatusEvent)]
    assert statuses[1:4] == [
        "reading the model configuration",
        "loading the tokenizer",
        "loading 0.0 GiB of weights onto cpu (dynamic KV cache, eager decode, SDPA, prompt-lookup drafts of 6)",
    ]
    assert statuses[-2].startswith("model loaded in")
    assert statuses[-1].startswith("a 4,096-token context window leaves 4,080 tokens for research")  # a tiny model
    kept = [e.message for e in events if isinstance(e, ev.StatusEvent) and not e.transient]
    assert kept[-3:-2] == [
        "4,096-token context window; dynamic KV cache, eager decode, SDPA, prompt-lookup drafts of 6"
    ]
    drafts = [(t.drafted_tokens, t.accepted_tokens) for t in result.usage.generations]
    assert all(d is None or 0 <= a <= d for d, a in drafts) and any(d for d, _ in drafts)
    assert web.hits["/search"] == 0


def test_weight_estimate_matches_the_real_model():
    from transformers import Glm4Config

    cfg = Glm4Config(**{k: v for k, v in REAL_CONFIG.items() if k not in ("architectures", "model_type")})
    assert abs(estimate_weight_bytes(cfg) / 2**30 - 61.7) < 0.3  # 61.7 GiB of bf16 weights


def test_big_model_without_a_gpu_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIG))
    backend = LocalBackend(Config(model=str(tmp_path)))
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")  # the message is only given without one
    with pytest.raises(BackendError, match="no CUDA GPU found.*62 GiB.*--device cpu"):
        backend.load()


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="model directory not found: .*nope"):
        LocalBackend(Config(model=str(tmp_path / "nope"))).load()
    with pytest.raises(BackendError, match="(?s)model not found: 'no-such-org/no-such-model'.*-m DIR"):
        LocalBackend(Config(model="no-such-org/no-such-model")).load()


# Runs in a fresh interpreter: the hub client reads HF_HUB_OFFLINE, HF_HOME and HF_ENDPOINT when imported.
_OFFLINE_LOADS = """
import json, sys, time
import torch, transformers
from rumination.backends.base import load_tokenizer
from rumination.backends.local import LocalBackend
from rumination.config import Config
from rumination.errors import BackendError
for name, tokenizer_only in json.loads(sys.argv[1]):
    started = time.monotonic()
    try:
        load_tokenizer(name) if tokenizer_only else LocalBackend(Config(model=name, device="cpu")).load()
        outcome = "loaded"
    except BackendError as exc:
        outcome = str(exc)
    print(json.dumps([name, outcome, time.monotonic() - started]), flush=True)
"""


@pytest.mark.slow
def test_without_a_network_a_missing_model_fails_fast_and_a_cached_one_loads(tmp_path, tiny_model_dir):
    # The hub endpoint is a closed port: the hub client alone would retry it for ~25 s per file.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    hub = tmp_path / "hf" / "hub"
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(hub), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, hub / "models--tiny--glm" / "snapshots" / commit)  # as `hf download` leaves it
    (hub / "models--tiny--glm" / "refs").mkdir()
    (hub / "models--tiny--glm" / "refs" / "main").write_text(commit)
    loads = [[DEFAULT_MODEL, False], [DEFAULT_MODEL, True], ["tiny/glm", False], ["tiny/glm", True]]
    run = subprocess.run(
        [sys.executable, "-c", _OFFLINE_LOADS, json.dumps(loads)], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r[0] for r in results] == [name for name, _ in loads]
    for (name, outcome, seconds), only in zip(results[:2], ["", " --include 'tokenizer*'"], strict=True):
        assert outcome == (
            f"model not found: {name!r} is not in the Hugging Face cache ({hub}) and the hub "
            f"({env['HF_ENDPOINT']}) cannot be reached.\n"
            f"Download it first (hf download {DEFAULT_MODEL}{only}) or pass -m DIR."  # a tokenizer needs no weights
        )
        assert seconds < 4
    assert [r[1] for r in results[2:]] == ["loaded", "loaded"]  # from the cache, never asking the hub
    assert all(seconds < 15 for _, _, seconds in results[2:])


def test_tokenizer_without_glm_tokens_is_refused():
    class Plain:
        unk_token_id = 0

        def convert_tokens_to_ids(self, token):
            return 0

    with pytest.raises(BackendError, match="not a GLM-4-0414 tokenizer"):
        stop_token_ids(Plain())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
async def test_runs_on_cuda(tiny_model_dir):
    backend = LocalBackend(Config(model=str(tiny_model_dir), device="cuda"))
    backend.load()
    assert backend.model.device.type == "cuda"
    _, outcome = await _generate(backend, Prompt.of(backend.tokenizer, MESSAGES), max_new_tokens=5, temperature=0.0)
    assert outcome.generated_tokens == 5


def test_default_model_without_a_gpu_fails_fast_without_the_hub():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")  # the message is only given without one
    with pytest.raises(BackendError, match="no CUDA GPU found.*62 GiB"):
        LocalBackend(Config()).load()


def test_cli_trace_shows_each_turns_prefill_reuse_and_decode_speed(tiny_model_dir, web, capsys):
    from rumination.cli import main

    args = ["ask", "Who printed the first book?", "-m", str(tiny_model_dir), "--device", "cpu", "--temperature", "0"]
    args += ["--max-new-tokens", "16", "--max-turns", "2", "--search", "searxng", "--searxng-url", web.base]
    main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("· prefilled ")]
    assert len(lines) >= 3  # two research turns and the report
    assert "reused" not in lines[0] and all("reused" in line for line in lines[1:])
    assert all(re.search(r" tokens .*tok/s( \(\d+ of \d+ drafted tokens accepted\))?$", line) for line in lines)
    assert any("drafted tokens accepted" in line for line in lines)
