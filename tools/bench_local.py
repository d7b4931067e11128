"""Benchmark the local backend, side by side in one run; every figure is printed as a `name=value` line.

    python tools/bench_local.py                # CPU mode: prefix-cache reuse on the tiny fixture model
    python tools/bench_local.py --gpu          # GPU mode: the real 32B architecture, random bf16 weights
    python tools/bench_local.py --gpu --decode-only   # decode at 1K and 32K only (a short device lease)
    python tools/bench_local.py --gpu --verify-only   # a verify step of k+1 tokens against a one-token step
    python tools/bench_local.py --gpu --growth 2      # windows 8K, 16K, 32K, 64K, 128K: less read past the cache
    python tools/bench_local.py --gpu --window-step 2048   # a window every 2K, one graph (its size dynamic)
    python tools/bench_local.py --gpu --attention flex     # flex attention: exactly the blocks in use, one graph
    python tools/bench_local.py --gpu --decode-only --attention both   # the decode figures with each, and ratios
    python tools/bench_local.py --gpu --tiny   # GPU mode's code on a tiny config (a smoke run, any device)

CPU mode plays the same synthetic 20-turn research run twice, with and without reuse, where each turn
appends an assistant call and an observation; its last line is `prefill_reuse_ratio=` (tokens prefilled
with reuse / without).

GPU mode builds Glm4ForCausalLM from the model's configuration (protocol.ARCHITECTURE) with random bf16 weights
allocated on the device (no checkpoint), measures the copy bandwidth, then decode tok/s at 1K, 32K, 33K (just
past the 32K attention window) and 100K of context in a 128K static cache (ours: compiled step), and
transformers' generate at 1K (default, and with its own static cache), each with its fraction of the bandwidth
roofline (bytes read per token: the weights less the embedding table, plus the KV in use) at the measured copy
bandwidth and, for known cards, at the spec's; beside each decode figure the same decode with every token read
before its step is fed (`_fed_ahead_over_read_first`: what feeding tokens ahead of the host gains); prefill tok/s;
a multi-turn run with and without reuse. It needs about 100 GB of GPU memory and 8-10 minutes on one H200 (three
decode graphs to compile; one with `--attention flex`).

`--verify-only` times the speculative verify step (the last token and `--draft` draft tokens, compiled) against
the one-token step at 1K and 32K in a 32K cache: a verify step pays when it yields more tokens than this ratio
(`tools/bench_lookup.py` gives the tokens a verify step yields on a copy-heavy report). Four graphs to compile.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rumination.protocol import ARCHITECTURE

WORDS = [
    "printing",
    "press",
    "movable",
    "type",
    "Mainz",
    "Venice",
    "Aldine",
    "books",
    "ink",
    "paper",
    "Gutenberg",
    "Bible",
    "spread",
    "Europe",
]

REAL = ARCHITECTURE  # GLM-Z1-Rumination-32B-0414's published config
SPEC_BANDWIDTH = {"NVIDIA H200": 4.8e12, "NVIDIA H100 80GB HBM3": 3.35e12, "NVIDIA H100 PCIe": 2.0e12}
TINY = {**REAL, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 12, "num_key_value_heads": 2}
TINY.update(head_dim=16, intermediate_size=128, vocab_size=1024, max_position_embeddings=8192, pad_token_id=0)


def say(name: str, value: object) -> None:
    print(f"{name}={value}", flush=True)


# --- CPU mode -------------------------------------------------------------------------------------


async def play(model_dir: Path, reuse: bool, turns: int, words: int) -> tuple[int, float, list[str]]:
    """Run the synthetic conversation through LocalBackend; return (tokens prefilled, seconds, outputs)."""
    from rumination.backends.base import SamplingParams
    from rumination.backends.local import LocalBackend
    from rumination.config import Config
    from rumination.system_prompt import PromptRenderer

    config = Config(model=str(model_dir), device="cpu", prefix_cache=reuse)
    backend = LocalBackend(config)
    backend.load()
    prompts = PromptRenderer.for_run(backend.tokenizer, config)  # as the loop renders
    messages = [{"role": "user", "content": "How did printing spread across Europe?"}]
    prefilled, outputs, started = 0, [], time.perf_counter()
    for turn in range(turns):
        prompt = prompts.render(messages)
        chunks = [c async for c in backend.generate(prompt, SamplingParams(max_new_tokens=16, temperature=0.0))]
        outcome = chunks[-1].outcome
        prefilled += outcome.prefilled_tokens
        outputs.append(outcome.text)
        call = json.dumps({"name": "search", "arguments": {"query": f"printing {turn}"}})
        observation = " ".join(WORDS[(turn + i) % len(WORDS)] for i in range(words))
        messages += [
            {"role": "assistant", "content": f"\n<think>\n{outcome.text}\n</think>{call}"},
            {"role": "observation", "content": f"【0†Result {turn}†https://example.org/{turn}\n{observation}】"},
        ]
    return prefilled, time.perf_counter() - started, outputs


async def cpu_mode(args: argparse.Namespace) -> None:
    from build_tiny_model import build

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp) / "tiny")
        with_tokens, with_s, with_out = await play(model_dir, True, args.turns, args.observation_words)
        without_tokens, without_s, without_out = await play(model_dir, False, args.turns, args.observation_words)
    say("mode", "cpu-tiny")
    say("turns", args.turns)
    say("identical_greedy_outputs", with_out == without_out)
    say("prefilled_tokens_with_reuse", with_tokens)
    say("prefilled_tokens_without_reuse", without_tokens)
    say("wall_s_with_reuse", f"{with_s:.2f}")
    say("wall_s_without_reuse", f"{without_s:.2f}")
    say("wall_ratio", f"{with_s / without_s:.3f}")
    say("prefill_reuse_ratio", f"{with_tokens / without_tokens:.3f}")


# --- GPU mode -------------------------------------------------------------------------------------


def gpu_mode(args: argparse.Namespace) -> None:
    import torch

    from rumination.backends.plan import import_quantizers

    import_quantizers()  # before the model classes import torchao (when installed), which logs between the figures
    from transformers import Glm4Config, Glm4ForCausalLM

    from rumination.backends import attention
    from rumination.backends.decode import Decoder, sampler
    from rumination.backends.memory import kv_bytes_per_token

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    scale = 8 if tiny else 1  # the tiny smoke run shrinks every context by this factor
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    say("mode", "gpu-tiny" if tiny else "gpu")
    say("device", torch.cuda.get_device_name() if device.type == "cuda" else "cpu")

    bandwidth = copy_bandwidth(torch, device, sync, 2**26 if tiny else 2**31)
    say("copy_bandwidth_gb_s", f"{bandwidth / 1e9:.0f}")

    config = Glm4Config(**(TINY if tiny else REAL))
    kernels = ["auto", "flex"] if args.attention == "both" else [args.attention]
    kernel = attention.choose(kernels[0])
    say("attention", args.attention)
    started = time.perf_counter()
    with torch.device(device):
        model = Glm4ForCausalLM._from_config(config, dtype=torch.bfloat16, attn_implementation=kernel)
    model.eval()
    sync()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    # A decode step reads one row of the embedding table, not all of it (unless the output head shares it).
    read_per_token = weight_bytes - (0 if config.tie_word_embeddings else embedding.numel() * embedding.element_size())
    say("build_s", f"{time.perf_counter() - started:.1f}")
    say("weights_gib", f"{weight_bytes / 2**30:.1f}")
    say("weights_read_per_token_gib", f"{read_per_token / 2**30:.1f}")
    spec = SPEC_BANDWIDTH.get(torch.cuda.get_device_name() if device.type == "cuda" else "")
    if spec:
        say("spec_bandwidth_gb_s", f"{spec / 1e9:.0f}")
    kv = kv_bytes_per_token(config)

    def report(name: str, context: int, tokens_per_s: float) -> None:
        """Tokens/s against the roofline at the measured copy bandwidth and, where known, the card's spec."""
        roofline = bandwidth / (read_per_token + context * kv)
        say(f"{name}_tok_s", f"{tokens_per_s:.1f}")
        say(f"{name}_roofline_tok_s", f"{roofline:.1f}")
        say(f"{name}_roofline_fraction", f"{tokens_per_s / roofline:.3f}")
        if spec:
            say(f"{name}_spec_roofline_fraction", f"{tokens_per_s * (read_per_token + context * kv) / spec:.3f}")

    def prompt(tokens: int, seed: int = 0) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, config.vocab_size, (tokens,), generator=generator).tolist()

    greedy, new = sampler(0.0, 1.0), 16 if tiny else 128
    short, long = 1024 // scale, 32000 // scale
    compile_options = {"backend": "eager"} if device.type != "cuda" else None
    if args.verify_only:
        verify_cost(model, prompt, args.draft, [("1k", short), ("32k", long)], compile_options, sync)
        return
    # 33K sits just past the 32K window: its step attends over the 128K one (the read amplification, measured).
    contexts = [("decode_1k", short), ("decode_32k", long)]
    if not args.decode_only:
        contexts += [("decode_33k", 33000 // scale), ("decode_100k", 100000 // scale)]
    largest = max(context for _, context in contexts)
    cache = max(largest + 2 * new, 131072 // scale if not args.decode_only else 0)
    rates: dict[tuple[str, str], float] = {}
    for wanted in kernels:  # with --attention both, the same weights decode with each kernel in turn
        label = "" if wanted == "auto" else f"{wanted}_"
        model.set_attn_implementation(attention.choose(wanted))
        decoder = Decoder(
            model,
            "static",
            cache,
            compile_step=True,
            compile_options=compile_options,
            growth=args.growth,
            window_step=args.window_step,
        )
        started = time.perf_counter()
        failed = decoder.warm_up()  # compiles and records one graph per attention window
        say(f"{label}compile_windows", len(decoder.windows()))
        say(f"{label}compile_s", f"{time.perf_counter() - started:.1f}")
        if failed:
            say(f"{label}compile_error", failed)  # the figures below are then eager decoding
        with torch.inference_mode():
            for name, context in contexts:
                decoder.generate(prompt(context, 1), new, greedy, [])  # warms the allocator for this context
                decoded = decoder.generate(prompt(context, 2), new, greedy, [])
                rates[wanted, name] = tok_s(decoded)
                report(f"{label}{name}", context + new // 2, rates[wanted, name])
                decoder.ahead = False  # each token read before its step is fed, as before issue 14 item 4
                behind = decoder.generate(prompt(context, 2), new, greedy, [])
                decoder.ahead = True
                say(f"{label}{name}_read_first_tok_s", f"{tok_s(behind):.1f}")
                say(f"{label}{name}_fed_ahead_over_read_first", f"{behind.decode_seconds / decoded.decode_seconds:.3f}")
                if name == "decode_32k":
                    say(f"{label}prefill_32k_tok_s", f"{context / decoded.prefill_seconds:.0f}")
        del decoder
        empty(torch, device)  # the ~8 GiB static cache, before the next one or transformers' generate
    if len(kernels) > 1:
        for name, _ in contexts:
            say(f"{name}_flex_over_auto", f"{rates['flex', name] / rates['auto', name]:.3f}")
    if args.decode_only:
        return
    with torch.inference_mode():
        model.set_attn_implementation("sdpa")  # transformers' own kernel path, as `generate` users get it
        ids = torch.tensor([prompt(short, 3)], device=device)
        timings = {}
        for name, run in (
            ("prefill", lambda: model(ids, logits_to_keep=1)),
            ("generate", lambda: model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)),
            (  # like for like: generate with its own static cache (which transformers compiles on CUDA)
                "generate_static",
                lambda: model.generate(
                    ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, cache_implementation="static"
                ),
            ),
        ):
            for _ in range(2):  # the first call warms up
                sync()
                started = time.perf_counter()
                run()
                sync()
                timings[name] = time.perf_counter() - started
        generate_decode = timings["generate"] - timings["prefill"]  # generate's time includes one prefill
        report("generate_default_1k", short + new // 2, (new - 1) / generate_decode)
        static_decode = timings["generate_static"] - timings["prefill"]
        report("generate_static_1k", short + new // 2, (new - 1) / static_decode)
        model.set_attn_implementation(kernel)
        empty(torch, device)

        multi_turn(model, prompt, greedy, scale, sync)


def tok_s(decoded) -> float:
    """Decode tokens per second (the first token comes from the prefill)."""
    return (len(decoded.ids) - 1) / decoded.decode_seconds


def verify_cost(model, prompt, draft: int, contexts: list[tuple[str, int]], compile_options, sync) -> None:
    """A compiled verify step of draft + 1 tokens against a compiled one-token step, at each context."""
    import torch

    from rumination.backends.decode import Decoder

    cache = 1 << (max(context for _, context in contexts) + draft + 1).bit_length()  # two windows: 8K and this
    decoder = Decoder(model, "static", cache, compile_step=True, compile_options=compile_options, draft=draft)
    started = time.perf_counter()
    failed = decoder.warm_up()
    say("verify_compile_s", f"{time.perf_counter() - started:.1f}")
    if failed:
        say("compile_error", failed)
    say("draft_tokens", draft)
    rounds = 20
    with torch.inference_mode():
        for name, context in contexts:
            verify_at(decoder, prompt(context, 4), name, draft, rounds, sync)


def verify_at(decoder, ids: list[int], name: str, draft: int, rounds: int, sync) -> None:
    """The median times of a one-token step and a verify step with `ids` in the cache."""
    decoder.generate(ids, 1, lambda logits: logits.argmax(-1), [])  # prefill: the cache holds the prompt
    seconds = {}
    for kind, feed in (("step", lambda: decoder.step(0)), ("verify", lambda: decoder.verify([0] * (draft + 1)))):
        times = []
        for _ in range(rounds + 2):  # the first two warm up
            sync()
            started = time.perf_counter()
            feed()
            sync()
            times.append(time.perf_counter() - started)
            decoder.reuse(ids)  # back to the prompt (less its last token)
        seconds[kind] = sorted(times[2:])[rounds // 2]
    say(f"step_ms_{name}", f"{seconds['step'] * 1e3:.2f}")
    say(f"verify_ms_{name}", f"{seconds['verify'] * 1e3:.2f}")
    say(f"verify_over_step_{name}", f"{seconds['verify'] / seconds['step']:.3f}")


def copy_bandwidth(torch, device, sync, size: int) -> float:
    """Device memory bandwidth in bytes/s, from timed copies of `size` bytes (each reads and writes them)."""
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    sync()
    started, rounds = time.perf_counter(), 20
    for _ in range(rounds):
        target.copy_(source)
    sync()
    seconds = time.perf_counter() - started
    del source, target
    return 2 * size * rounds / seconds


def empty(torch, device) -> None:
    gc.collect()  # a Decoder and its compiled step refer to each other: only the collector frees them
    if device.type == "cuda":
        torch.cuda.empty_cache()


def multi_turn(model, prompt, greedy, scale: int, sync) -> None:
    """A synthetic research run: a 2K prompt, then 8 turns that each append 64 generated + 1.5K observed tokens."""
    import torch

    from rumination.backends.decode import Decoder

    first, observation, turns, new = 2048 // scale, 1536 // scale, 8, 64 // min(scale, 4)
    results = {}
    for reuse in (True, False):
        decoder = Decoder(model, "static", first + turns * (observation + new) + new, reuse=reuse)
        ids, prefilled, per_turn, outputs = prompt(first, 99), 0, [], []
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.inference_mode():
            for _ in range(turns):
                decoded = decoder.generate(ids, new, greedy, [])
                prefilled += len(ids) - decoded.reused
                per_turn.append(decoded.prefill_seconds)
                outputs.append(decoded.ids)
                # A re-rendered tail (half the answer is kept) and an observation that is the same in both runs.
                ids = ids + decoded.ids[: new // 2] + prompt(observation, seed=100 + len(outputs))
        sync()
        results[reuse] = (prefilled, sum(per_turn), time.perf_counter() - started, per_turn, outputs)
        del decoder
        gc.collect()
    (with_tokens, with_prefill, with_wall, with_turns, with_out) = results[True]
    (without_tokens, without_prefill, without_wall, without_turns, without_out) = results[False]
    say("multi_turn_turns", turns)
    say("multi_turn_final_context", len(ids))
    say("multi_turn_identical_greedy_outputs_bf16", with_out == without_out)  # exact only in fp32 (tests)
    say("multi_turn_prefilled_tokens_with_reuse", with_tokens)
    say("multi_turn_prefilled_tokens_without_reuse", without_tokens)
    say("multi_turn_prefill_s_with_reuse", f"{with_prefill:.2f}")
    say("multi_turn_prefill_s_without_reuse", f"{without_prefill:.2f}")
    # With reuse each turn prefills about the same number of new tokens, so its time should stay flat.
    say("multi_turn_last_over_second_turn_prefill_with_reuse", f"{with_turns[-1] / with_turns[1]:.2f}")
    say("multi_turn_last_over_second_turn_prefill_without_reuse", f"{without_turns[-1] / without_turns[1]:.2f}")
    say("multi_turn_wall_ratio", f"{with_wall / without_wall:.3f}")
    say("multi_turn_prefill_reuse_ratio", f"{with_tokens / without_tokens:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="GPU mode: the real architecture, random weights")
    parser.add_argument("--tiny", action="store_true", help="with --gpu: a tiny config, for a smoke run anywhere")
    parser.add_argument("--decode-only", action="store_true", help="with --gpu: decode at 1K and 32K only")
    parser.add_argument("--growth", type=int, default=4, help="with --gpu: window size ratio")
    parser.add_argument("--window-step", type=int, default=0, help="with --gpu: windows every N tokens, one graph")
    parser.add_argument(
        "--attention", choices=["auto", "flex", "both"], default="auto", help="with --gpu: decode kernel (both: each)"
    )
    parser.add_argument("--verify-only", action="store_true", help="with --gpu: verify step against one-token step")
    parser.add_argument("--draft", type=int, default=6, help="with --verify-only: draft tokens per verify step")
    parser.add_argument("--turns", type=int, default=20, help="CPU mode: turns of the synthetic run")
    parser.add_argument("--observation-words", type=int, default=25, help="CPU mode: words per observation")
    args = parser.parse_args()
    if args.gpu:
        gpu_mode(args)
    else:
        asyncio.run(cpu_mode(args))


if __name__ == "__main__":
    main()
