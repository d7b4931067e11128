"""Prompt-lookup drafts on a copy-heavy synthetic report: acceptance, tokens per forward pass, host cost.

    python tools/bench_lookup.py [--report-tokens 1500]

The prompt is pages of real English (the project's own README and docs, and the test site: the figures move a
little as those change); the report mixes sentences copied from them (with the citation marks and URLs a report
carries) and sentences found nowhere in the prompt, each used once, at several copy fractions. Text is split into
words and punctuation marks, one token each, which is close to how a 150K-token vocabulary splits English (a small
BPE would split words into pieces whose endings are easy to guess, and flatter the drafter). Decoding is simulated
with the runtime's own PromptLookup and acceptance rule as if the model wrote exactly this report (a draft token is
kept while it equals the report's next token), so the figures describe the drafter, independent of any model: the
share of draft tokens accepted, and the tokens each forward pass yields (1.0 without drafts). A verify step pays
when it yields more tokens than it costs in one-token steps; `tools/bench_local.py --gpu` measures that cost on a
card. Then the drafter's host time per token and its index build for a 100K-token prompt, and the tiny model on CPU
decoding with and without drafts: right as often as the lookup makes them, and never right (what `--speculate on`
and `auto` lose when drafts do not pay). Every figure is printed as a `name=value` line.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rumination.backends.lookup import PromptLookup  # noqa: E402

WORD = re.compile(r"\w+|[^\w\s]")


class Words:
    """Word-level token ids: each distinct word or punctuation mark one id."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.ids.setdefault(word, len(self.ids)) for word in WORD.findall(text)]


def say(name: str, value: object) -> None:
    print(f"{name}={value}", flush=True)


def sentences() -> list[str]:
    """Sentences of real English prose from the repository's documents, markup stripped."""
    text = " ".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    text += " ".join(re.sub(r"<[^>]+>", " ", p.read_text()) for p in sorted((ROOT / "tests/site").glob("*.html")))
    text = re.sub(r"[`|#*\[\]()]+", " ", text)
    found = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    return [s for s in dict.fromkeys(found) if 40 <= len(s) <= 400]


def report(
    rng: random.Random, copied: list[str], novel: list[str], fraction: float, tokens: int, tok: Words
) -> list[int]:
    """A report of about `tokens` tokens: copied sentences (cited, with a page's URL now and then) and novel ones."""
    copied, novel = rng.sample(copied, len(copied)), rng.sample(novel, len(novel))
    text: list[int] = []
    while len(text) < tokens and copied and novel:
        if rng.random() < fraction:
            source = len(copied)
            url = f" (https://example.org/page/{source})" if rng.random() < 0.3 else ""
            text += tok.encode(f"{copied.pop()}【{source % 9}†source】{url} ")
        else:
            text += tok.encode(novel.pop())
    return text


def simulate(prompt: list[int], text: list[int], draft: int) -> tuple[int, int, int]:
    """Forward passes, draft tokens verified and accepted when the model writes exactly `text` after `prompt`."""
    lookup, done, passes, drafted, accepted = PromptLookup(prompt), 0, 0, 0, 0
    lookup.add(text[0])  # the first token comes from the prefill
    done = 1
    while done < len(text):
        guess = lookup.draft(draft)
        passes += 1
        kept = next((i for i, t in enumerate(guess) if done + i >= len(text) or text[done + i] != t), len(guess))
        drafted, accepted = drafted + len(guess), accepted + kept
        for token in text[done : done + kept + 1]:
            lookup.add(token)
        done += kept + 1
    return passes, drafted, accepted


class Wrong:
    """Drafts that are (almost) never right: the vocabulary's last id, a special token."""

    token = 0

    def __init__(self, ids: list[int]) -> None:
        pass

    def add(self, token: int) -> None:
        pass

    def draft(self, most: int) -> list[int]:
        return [self.token] * most


def tiny_model_side_by_side(tokens: int) -> None:
    """Decode tokens/s on the tiny model (CPU) without drafts, and with lookup or never-right drafts, on and auto."""
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rumination.backends import attention
    from rumination.backends.decode import Decoder, sampler
    from rumination.backends.lookup import SpeculationMeter

    sys.path.insert(0, str(ROOT / "tools"))
    from build_tiny_model import build

    attention.register()
    with tempfile.TemporaryDirectory() as folder:
        config = AutoConfig.from_pretrained(build(Path(folder)), attn_implementation=attention.PACKED_SDPA)
    config.initializer_range = 0.2  # varied greedy text, not one token repeated
    Wrong.token = config.vocab_size - 1
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    prompt = [random.Random(1).randrange(700) for _ in range(400)]
    rates = {}
    cases = [("off", 0, False, PromptLookup), ("on", 6, True, PromptLookup), ("auto", 6, False, PromptLookup)]
    cases += [("on_wrong", 6, True, Wrong), ("auto_wrong", 6, False, Wrong)]
    for name, draft, always, drafter in cases:
        meter = SpeculationMeter(always=always)
        decoder = Decoder(model, "static", 2048, draft=draft, meter=meter, drafter=drafter)
        decoder.generate(prompt, 20, sampler(0, 1), [])  # warm up
        started = time.perf_counter()
        decoded = decoder.generate([*prompt[:-1], 1], tokens, sampler(0, 1), [])
        rates[name] = len(decoded.ids) / (time.perf_counter() - started)
        say(f"tiny_cpu_{name}_accepted_of_drafted", f"{decoded.accepted}/{decoded.drafted}")
    for name in ("on", "auto", "on_wrong", "auto_wrong"):
        say(f"tiny_cpu_{name}_over_off", f"{rates[name] / rates['off']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report-tokens", type=int, default=1500)
    parser.add_argument("--cpu-tokens", type=int, default=600, help="tokens decoded by the tiny model (0: skip)")
    args = parser.parse_args()
    tok = Words()
    rng = random.Random(0)
    pool = sentences()
    rng.shuffle(pool)
    copied, novel = pool[: len(pool) * 2 // 3], pool[len(pool) * 2 // 3 :]
    prompt = tok.encode(" ".join(copied))
    say("prompt_tokens", len(prompt))
    say("sentences_copied_pool", len(copied))
    say("sentences_novel_pool", len(novel))
    for fraction in (0.0, 0.25, 0.5, 0.75):
        text = report(random.Random(int(fraction * 100)), copied, novel, fraction, args.report_tokens, tok)
        for draft in (2, 4, 6, 8, 12):
            passes, drafted, accepted = simulate(prompt, text, draft)
            tag = f"copy{int(fraction * 100)}_k{draft}"
            say(f"{tag}_accepted_of_drafted", f"{accepted / max(drafted, 1):.2f}")
            say(f"{tag}_tokens_per_pass", f"{(len(text) - 1) / passes:.2f}")

    long_prompt = (prompt * (100_000 // len(prompt) + 1))[:100_000]
    started = time.perf_counter()
    lookup = PromptLookup(long_prompt)
    say("index_build_100k_ms", f"{(time.perf_counter() - started) * 1000:.1f}")
    text = report(random.Random(5), copied, novel, 0.5, args.report_tokens, tok)
    started = time.perf_counter()
    for token in text:
        lookup.add(token)
        lookup.draft(6)
    say("host_us_per_token", f"{(time.perf_counter() - started) / len(text) * 1e6:.1f}")
    if args.cpu_tokens:
        tiny_model_side_by_side(args.cpu_tokens)


if __name__ == "__main__":
    main()
