"""Streaming detokenisation per token: transformers' TextStreamer against ours, side by side on one long line.

    python tools/bench_detokenize.py [--tokens 4000]

TextStreamer decodes everything since the last newline on every token, so its cost grows with the line; the
Detokenizer decodes a few tokens each time. Both run on the model thread between decode steps. Prints
`name=value` lines, the ratio last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import AutoTokenizer, TextStreamer

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.detokenize import Detokenizer


class Quiet(TextStreamer):
    """A TextStreamer that drops what it would print."""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Nothing."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4000)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
    line = " ".join(["the printing press and movable type spread across Europe within fifty years"] * 2000)
    ids = tokenizer(line, add_special_tokens=False)["input_ids"][: args.tokens]
    streamer = Quiet(tokenizer, skip_special_tokens=True)
    started = time.perf_counter()
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    textstreamer = time.perf_counter() - started
    detokenizer = Detokenizer(tokenizer)
    started = time.perf_counter()
    text = "".join(detokenizer.add(token) for token in ids) + detokenizer.flush()
    ours = time.perf_counter() - started
    print(f"tokens={len(ids)}")
    print(f"same_text={text == tokenizer.decode(ids, skip_special_tokens=True)}")
    print(f"textstreamer_us_per_token={textstreamer / len(ids) * 1e6:.0f}")
    print(f"detokenizer_us_per_token={ours / len(ids) * 1e6:.1f}")
    print(f"speedup={textstreamer / ours:.1f}")


if __name__ == "__main__":
    main()
