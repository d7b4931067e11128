"""What the run journal costs, side by side in one run; every figure is printed as a `name=value` line.

    python tools/bench_journal.py [--turns 30] [--runs 5] [--listing 100]

A scripted research run of `--turns` search turns against a loopback SearXNG-compatible endpoint, with long
thinking streamed in small chunks (as a real model's tokens arrive), is played `--runs` times with the journal
and as often without, alternating; then `--listing` journals are listed as `rumination sessions` does, one is
read back whole, and a run interrupted at its last turn is resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from localweb import LocalWeb  # noqa: E402

from rumination import events as ev  # noqa: E402
from rumination import journal as jr  # noqa: E402
from rumination.agent import Researcher  # noqa: E402
from rumination.backends.scripted import ScriptedBackend  # noqa: E402
from rumination.config import Config  # noqa: E402

THINKING = "I should look at what the sources say about movable type and the spread of presses. " * 40


def say(name: str, value: object) -> None:
    print(f"{name}={value}", flush=True)


def outputs(turns: int) -> list[str]:
    calls = [json.dumps({"name": "search", "arguments": {"query": f"printing press {i}"}}) for i in range(turns)]
    finish = json.dumps({"name": "finish", "arguments": {}})
    return [f"\n<think>\n{THINKING}\n</think>{call}" for call in [*calls, finish]] + ["\n<think>\nr\n</think>Report."]


async def play(config: Config, script: list[str], stop_after: int | None = None) -> tuple[float, str | None]:
    """One run; with `stop_after`, closed after that many events (an interruption). Seconds and the run id."""
    researcher = Researcher(config, backend=ScriptedBackend(config, outputs=script, chunk_chars=4))
    started, run_id, count = time.perf_counter(), None, 0
    async with contextlib.aclosing(researcher.stream("How did printing spread?")) as events:
        async for event in events:
            count += 1
            run_id = event.run_id if isinstance(event, ev.RunStarted) else run_id
            if stop_after is not None and count >= stop_after:
                break
    return time.perf_counter() - started, run_id


async def main(args: argparse.Namespace) -> None:
    script = outputs(args.turns)
    with LocalWeb() as web, tempfile.TemporaryDirectory() as tmp:
        base = {"backend": "scripted", "searxng_url": web.base, "page_cache": False, "search_min_interval": 0}
        base["data_dir"] = Path(tmp)
        on, off = Config(**base), Config(**base, journal=False)
        await play(off, script)  # warm up (tokenizer, imports)
        timings: dict[bool, list[float]] = {True: [], False: []}
        run_id = None
        for _ in range(args.runs):
            for journal in (True, False):
                seconds, rid = await play(on if journal else off, script)
                timings[journal].append(seconds)
                run_id = rid or run_id
        assert run_id is not None
        path = jr.find(Path(tmp), run_id)
        events = sum(1 for _ in path.open("rb"))
        with_s, without_s = statistics.median(timings[True]), statistics.median(timings[False])
        say("turns", args.turns)
        say("journal_records", events)
        say("journal_kib", f"{path.stat().st_size / 1024:.0f}")
        say("web_records", sum(1 for _ in (path.parent / jr.WEB).rglob("*.json")))
        say("run_s_with_journal", f"{with_s:.3f}")
        say("run_s_without_journal", f"{without_s:.3f}")
        say("journal_overhead_ratio", f"{with_s / without_s:.3f}")  # a scripted run: no model time to hide it
        say("journal_us_per_record", f"{(with_s - without_s) / events * 1e6:.1f}")

        for _ in range(args.listing - args.runs):  # more journals to list
            await play(on, script[:2] + script[-1:])
        started = time.perf_counter()
        found, _ = jr.summaries(Path(tmp))
        say("sessions_listed", len(found))
        say("sessions_list_s", f"{time.perf_counter() - started:.3f}")
        started = time.perf_counter()
        jr.read(path)
        say("read_whole_journal_s", f"{time.perf_counter() - started:.3f}")

        _, cut = await play(on, script, stop_after=events - 40)  # interrupted during the report's turn
        assert cut is not None
        started = time.perf_counter()
        researcher = Researcher(on, backend=ScriptedBackend(on, outputs=script, chunk_chars=4))
        result = await researcher.resume(cut)
        say("resume_to_end_s", f"{time.perf_counter() - started:.3f}")
        say("resumed_report_ok", result.report == "Report.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--listing", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
