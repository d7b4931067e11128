"""Benchmark prefix-cache reuse in the local backend, side by side in one run (CPU mode, tiny model).

    python tools/bench_local.py [--turns 20] [--observation-words 120]

Builds the tiny Glm4 fixture (tools/build_tiny_model.py), then plays the same synthetic research run
twice — with and without reuse — where each turn appends an assistant call and an observation, as a
real run does. Prints `name=value` lines; the last is `prefill_reuse_ratio=` (tokens prefilled with reuse
divided by tokens prefilled without). GPU mode (the real 32B architecture with random weights) is not
written yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_tiny_model import build

from rumination.backends.base import SamplingParams, render
from rumination.backends.local import LocalBackend
from rumination.config import Config

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


async def play(model_dir: Path, reuse: bool, turns: int, words: int) -> tuple[int, float, list[str]]:
    """Run the synthetic conversation; return (tokens prefilled, seconds, outputs)."""
    backend = LocalBackend(Config(model=str(model_dir), device="cpu", prefix_cache=reuse))
    backend.load()
    messages = [{"role": "user", "content": "How did printing spread across Europe?"}]
    prefilled, outputs, started = 0, [], time.perf_counter()
    for turn in range(turns):
        prompt = render(backend.tokenizer, messages)
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--observation-words", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp) / "tiny")
        with_tokens, with_s, with_out = await play(model_dir, True, args.turns, args.observation_words)
        without_tokens, without_s, without_out = await play(model_dir, False, args.turns, args.observation_words)
    print("mode=cpu-tiny")
    print(f"turns={args.turns}")
    print(f"identical_greedy_outputs={with_out == without_out}")
    print(f"prefilled_tokens_with_reuse={with_tokens}")
    print(f"prefilled_tokens_without_reuse={without_tokens}")
    print(f"wall_s_with_reuse={with_s:.2f}")
    print(f"wall_s_without_reuse={without_s:.2f}")
    print(f"wall_ratio={with_s / without_s:.3f}")
    print(f"prefill_reuse_ratio={with_tokens / without_tokens:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
