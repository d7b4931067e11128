"""Long pages: how often a planted fact reaches the model, head cut against the query-aware cut; and the cut's time.

    python tools/bench_reading.py [--pages 60] [--budget 8000]

Each page is Markdown prose in sections (a few times the budget long) with one fact planted at a depth from 5 % to
95 % of the way through; the question asks for the fact in words of its own, sharing the subject's name with
the planted sentence. Every figure is printed as a `name=value` line; the fractions are measured side by side on the
same pages. The time is for one cut of a 1 MB page with the bundled tokenizer (the model's own is faster).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rumination import reading
from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import load_tokenizer
from rumination.tokens import truncate_tokens

VOCABULARY = [
    "printing",
    "press",
    "paper",
    "ink",
    "guild",
    "merchants",
    "Venice",
    "Mainz",
    "scholars",
    "trade",
    "harbour",
    "letters",
    "workshop",
    "type",
    "metal",
    "binding",
    "vellum",
    "monastery",
    "bishop",
    "council",
    "university",
    "market",
    "river",
    "bridge",
    "tax",
    "tariff",
    "ship",
    "cargo",
    "wool",
    "grain",
]
FACTS = [
    ("How many copies of the Hypnerotomachia did the Aldine Press print?", "Hypnerotomachia", "1,234 copies"),
    ("When did the Frankfurt book fair move to Leipzig?", "Frankfurt fair", "moved to Leipzig in 1632"),
    ("What did a Gutenberg Bible cost in florins?", "Gutenberg Bible", "cost 30 florins"),
    ("Who printed the first book in Hungary?", "Hungary", "András Hess printed the Chronica Hungarorum"),
    ("How many presses ran in Venice by 1500?", "presses in Venice", "about 150 presses"),
]


def say(name: str, value: object) -> None:
    print(f"{name}={value}", flush=True)


def page(rng: random.Random, tokens: int, depth: float, subject: str, fact: str) -> tuple[str, str]:
    """A page of about `tokens` tokens of English-like prose, and the planted sentence."""
    parts, size = [], 0
    while size < tokens * 4:  # about 4 characters a token
        if len(parts) % 6 == 0:
            parts.append(f"## The {rng.choice(VOCABULARY)} and the {rng.choice(VOCABULARY)}")
        paragraph = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(40, 120))).capitalize() + "."
        parts.append(paragraph)
        size += len(paragraph)
    sentence = f"Records of the {subject} show it: {fact}, as the ledgers of the time confirm."
    parts.insert(max(1, int(len(parts) * depth)), sentence)
    return "\n\n".join(parts), sentence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--budget", type=int, default=8000)
    args = parser.parse_args()
    tokenizer = load_tokenizer(str(bundled_tokenizer_dir()))
    truncate = partial(truncate_tokens, tokenizer)
    rng = random.Random(0)
    head_hits: dict[str, list[bool]] = {"shallow": [], "middle": [], "deep": []}
    query_hits: dict[str, list[bool]] = {"shallow": [], "middle": [], "deep": []}
    kept: list[float] = []
    for i in range(args.pages):
        depth = 0.05 + 0.9 * i / max(args.pages - 1, 1)
        question, subject, fact = FACTS[i % len(FACTS)]
        text, sentence = page(rng, args.budget * 4, depth, subject, fact)
        band = "shallow" if depth < 1 / 3 else "middle" if depth < 2 / 3 else "deep"
        head = reading.cut(text, args.budget, truncate, Counter())
        asked = reading.cut(text, args.budget, truncate, reading.query_terms(question, "", ""))
        head_hits[band].append(sentence in head.text)
        query_hits[band].append(sentence in asked.text)
        kept.append(asked.kept_tokens / args.budget)
    say("pages", args.pages)
    say("budget_tokens", args.budget)
    for band in head_hits:
        say(f"facts_reached_head_cut_{band}", f"{sum(head_hits[band]) / len(head_hits[band]):.2f}")
        say(f"facts_reached_query_cut_{band}", f"{sum(query_hits[band]) / len(query_hits[band]):.2f}")
    head_all = sum(sum(v) for v in head_hits.values()) / args.pages
    query_all = sum(sum(v) for v in query_hits.values()) / args.pages
    say("facts_reached_head_cut", f"{head_all:.2f}")
    say("facts_reached_query_cut", f"{query_all:.2f}")
    say("budget_used_median", f"{statistics.median(kept):.3f}")

    big, _ = page(random.Random(1), 250_000, 0.5, "Gutenberg Bible", "cost 30 florins")
    big = big[:1_000_000]
    query = reading.query_terms("What did a Gutenberg Bible cost?", "Gutenberg Bible price", "")
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        reading.cut(big, args.budget, truncate, query)
        timings.append(time.perf_counter() - started)
    say("page_chars", len(big))
    say("cut_1mb_s", f"{statistics.median(timings):.3f}")


if __name__ == "__main__":
    main()
