"""`rumination eval DATASET`: its own arguments, and the command (the settings flags come from cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rumination.config import Config


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """DATASET, -o/--output-dir, --sample, --runs, --retry-failed, -q (--seed is Config's; it also draws the sample)."""
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help='a JSONL file of {"id", "question", "answer"} (or "answers": [...]) lines, or a public set: '
        "simpleqa, hotpotqa (downloaded once into the cache directory)",
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where the runs, scores and summary go (default: eval-DATASET); run again to resume",
    )
    group.add_argument(
        "--sample", type=int, metavar="N", help="evaluate N questions drawn at random (the draw follows --seed, or 0)"
    )
    group.add_argument(
        "--runs", type=int, default=1, metavar="K", help="research every question K times; mean ± std over runs"
    )
    group.add_argument("--retry-failed", action="store_true", help="research again the questions that failed before")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace, config: Config) -> int:
    """Run the evaluation; the summary table goes to stdout, progress to stderr; 1 if a question failed."""
    import asyncio

    from rumination.batch import say
    from rumination.eval.dataset import PUBLIC_SETS, load_dataset, sample
    from rumination.eval.judge import make_judge
    from rumination.eval.run import evaluate
    from rumination.eval.summary import RETRY_HINT, EvalSummary, failures, text_table

    progress = not args.quiet
    items = load_dataset(
        args.dataset, config.cache_dir, user_agent=config.user_agent, progress=say if progress else None
    )
    items = sample(items, args.sample, config.seed or 0)
    name = args.dataset.lower() if args.dataset.lower() in PUBLIC_SETS else Path(args.dataset).stem
    out_dir = args.output_dir or Path(f"eval-{name}")

    async def run() -> EvalSummary:
        judge = make_judge(config, say if progress else None)
        try:
            return await evaluate(
                items,
                config,
                out_dir,
                runs=args.runs,
                judge=judge,
                dataset=name,
                progress=progress,
                retry_failed=args.retry_failed,
            )
        finally:
            if judge is not None:
                await judge.aclose()

    summary = asyncio.run(run())
    sys.stdout.write(text_table(summary))
    if summary.failed:
        say(f"the evaluation is incomplete: {failures(summary)} (scored as wrong); {RETRY_HINT}")
        return 1
    return 0
