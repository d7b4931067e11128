"""Benchmark `rumination batch` against a served model with a fixed latency per request, side by side in one run.

    python tools/bench_batch.py [--questions 32] [--latency 0.5] [--concurrency 16]

A loopback OpenAI-compatible server (tools/tiny_server.py, in its own process) replays a short research run
for every question (a search of a local index, the finish call, the report), waiting `--latency` seconds
before each answer as a busy engine would. The same batch runs at concurrency 1 and at `--concurrency`;
prints `name=value` lines, the last one `batch_speedup=` (wall time at 1 over wall time at N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rumination.backends.server import ServerBackend
from rumination.batch import BatchQuestion, read_records, run_batch
from rumination.config import Config
from rumination.local.build import build_index

HERE = Path(__file__).resolve().parent


def _turn(call: dict) -> str:
    return f"\n<think>\nLet me think about the next step.\n</think>{json.dumps(call)}"


SCRIPT = [
    _turn({"name": "search", "arguments": {"query": "printing press Europe"}}),
    _turn({"name": "finish", "arguments": {}}),
    "\n<think>\nNow the report.\n</think># Report\n\nThe press spread from Mainz along trade routes.",
]


def _serve(latency: float) -> subprocess.Popen[str]:
    """The server in a process of its own, as an engine would be (never competing for this one's GIL)."""
    script = Path(tempfile.mkdtemp()) / "script.json"
    script.write_text(json.dumps(SCRIPT))
    command = [sys.executable, str(HERE / "tiny_server.py"), "--script", str(script), "--port", "0"]
    return subprocess.Popen([*command, "--latency", str(latency)], stdout=subprocess.PIPE, text=True)


def _index(root: Path) -> None:
    docs = root / "docs"
    docs.mkdir()
    for n in range(20):
        (docs / f"note{n}.md").write_text(f"# Note {n}\n\nThe printing press reached city {n} in 14{n + 50}.\n")
    build_index(docs, "notes", root / "data")


async def _batch(
    config: Config, backend: ServerBackend, questions: list[BatchQuestion], output: Path, concurrency: int
) -> float:
    start = time.perf_counter()
    await run_batch(questions, config, output, concurrency=concurrency, progress=False, backend=backend)
    return time.perf_counter() - start


def main() -> None:
    """Run the batch twice and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the server waits before each answer")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    server = _serve(args.latency)
    questions = [BatchQuestion(id=str(n), question=f"How did printing reach city {n}?") for n in range(args.questions)]
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" at ")[1].split(" ")[0]  # "serving NAME at URL (Ctrl-C stops)"
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            _index(root)
            config = Config(
                base_url=url,
                model=str(HERE.parent / "prompts" / "tokenizer"),
                search="local:notes",
                data_dir=root / "data",
                cache_dir=root / "cache",
            )
            backend = ServerBackend(config)
            backend.load()  # once, outside the timings: both batches share the loaded tokenizer
            asyncio.run(_batch(config, backend, questions[:1], root / "warm-up.jsonl", 1))  # first-use costs
            serial = asyncio.run(_batch(config, backend, questions, root / "serial.jsonl", 1))
            parallel = asyncio.run(_batch(config, backend, questions, root / "parallel.jsonl", args.concurrency))
            for name in ("serial", "parallel"):
                records = read_records(root / f"{name}.jsonl")
                failed = [r for r in records.values() if r.error]
                assert len(records) == args.questions and not failed, f"{name}: {len(failed)} failed"
    finally:
        server.terminate()
        server.wait()
    requests = args.questions * len(SCRIPT)
    print(f"questions={args.questions}")
    print(f"requests_per_run={requests}")
    print(f"latency_s={args.latency}")
    print(f"wall_s_concurrency_1={serial:.2f}")
    print(f"wall_s_concurrency_{args.concurrency}={parallel:.2f}")
    print(f"ideal_speedup={min(args.concurrency, args.questions):.1f}")
    print(f"batch_speedup={serial / parallel:.2f}")


if __name__ == "__main__":
    main()
