"""An evaluation: research every question in K runs (resumable), score each report, summarise over the runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from rumination.backends.base import ModelBackend
from rumination.batch import BatchQuestion, BatchRecord, read_records, run_batch, say
from rumination.config import Config
from rumination.errors import ConfigError
from rumination.eval import scoring
from rumination.eval.dataset import EvalItem
from rumination.eval.judge import Grading, Judge
from rumination.eval.short_answer import short_answer
from rumination.eval.summary import EvalSummary, ScoreRecord, summarize, write_summary
from rumination.registry import backends
from rumination.search.base import SearchEngine
from rumination.web.base import Fetcher

SCORES = "scores.jsonl"
_NO_REPORT = hashlib.sha256(b"").hexdigest()


def run_path(out_dir: Path, run: int) -> Path:
    """The batch results file of run `run` (from 1)."""
    return out_dir / f"run-{run}.jsonl"


async def evaluate(
    dataset_items: list[EvalItem],
    config: Config,
    out_dir: Path,
    *,
    runs: int = 1,
    judge: Judge | None = None,
    dataset: str = "dataset",
    progress: bool = True,
    retry_failed: bool = False,
    backend: ModelBackend | None = None,
    engine: SearchEngine | None = None,
    fetcher: Fetcher | None = None,
) -> EvalSummary:
    """Research the items `runs` times into out_dir/run-{r}.jsonl, score them into scores.jsonl, write the summary.

    Rerunning with the same out_dir resumes: the batch skips questions already answered, and a judge's grade
    is reused for the same report and judge. The judge is checked first, so that a bad judge setting fails before
    the research. One research backend serves every run (made here unless given, and then closed before a local
    judge loads); with a seed, run r samples with seed + r - 1 so the runs differ. The summary names the model the
    score records name: a backend that researched nothing this time is never loaded and cannot tell its own.
    """
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, not {runs}")
    if judge is not None:
        # Two local models would share the accelerator: the judge's weights wait for the research to end.
        research_backend = backend.name if backend is not None else config.backend
        await judge.check(load=not (judge.backend.name == "local" and research_backend == "local"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    questions = [BatchQuestion(id=item.id, question=item.question) for item in dataset_items]
    note = say if progress else lambda line: None
    researched: set[tuple[int, str]] = set()  # (run, id) of the records this call's backend wrote
    async with contextlib.AsyncExitStack() as stack:
        if backend is None:
            backend = backends.get(config.backend)(config)
            stack.push_async_callback(backend.aclose)  # frees the accelerator before the judge loads
        for run in range(1, runs + 1):
            note(f"run {run} of {runs}")
            run_config = config if config.seed is None else config.model_copy(update={"seed": config.seed + run - 1})
            before = read_records(run_path(out_dir, run))
            await run_batch(
                questions,
                run_config,
                run_path(out_dir, run),
                progress=progress,
                retry_failed=retry_failed,
                backend=backend,
                engine=engine,
                fetcher=fetcher,
            )
            after = read_records(run_path(out_dir, run))
            researched |= {(run, id_) for id_, record in after.items() if before.get(id_) != record}
        # Unloaded, a served model's backend knows only a stand-in for its name.
        model = backend.model_id if backend.tokenizer is not None else None
        placeholder = backend.model_id
    records = await score_runs(
        dataset_items,
        out_dir,
        runs,
        judge,
        concurrency=config.concurrency,
        progress=progress,
        model=model,
        researched=researched,
    )
    models = sorted({record.model for record in records if record.model is not None})
    summary = summarize(
        records, dataset=dataset, model=", ".join(models) or placeholder, judge=judge.name if judge else None
    )
    path = write_summary(summary, records, out_dir)
    for warning in judge_warnings(records, out_dir / SCORES):
        say(warning)
    note(f"scores: {out_dir / SCORES}; summary: {path}")
    return summary


def judge_warnings(records: list[ScoreRecord], path: Path) -> list[str]:
    """What is wrong with the judge's grades: none parsed, or some not made (the backend failed)."""
    warnings = []
    failed = [r for r in records if r.grading is not None and r.grading.error is not None]
    asked = [r for r in records if r.grading is not None and r.grading.error is None and r.report_sha256 != _NO_REPORT]
    if asked and all(r.grade == "unparsed" for r in asked):
        warnings.append(
            f"the judge named no grade (A, B or C) in any of its {len(asked)} replies: they are scored as no grade; "
            f"read them (grading.output) in {path}, and check that --judge-model is the judge's own tokenizer"
        )
    if failed:
        warnings.append(
            f"the judge failed to grade {len(failed)} report{'s' * (len(failed) != 1)} (grading.error in {path}): "
            "run the same command again to grade them"
        )
    return warnings


async def score_runs(
    items: list[EvalItem],
    out_dir: Path,
    runs: int,
    judge: Judge | None,
    *,
    concurrency: int = 1,
    progress: bool = True,
    model: str | None = None,
    researched: set[tuple[int, str]] | None = None,
) -> list[ScoreRecord]:
    """Score every item of every run file into out_dir/scores.jsonl (each line written as it is scored).

    A judge on a serving engine grades `concurrency` reports at once; any other, one at a time. `model` researched
    the (run, id) records in `researched`; any other record keeps the model its earlier score named.
    """
    path = out_dir / SCORES
    previous = read_scores(path)
    jobs = []
    for run in range(1, runs + 1):
        records = read_records(run_path(out_dir, run))
        jobs += [(run, item, records.get(item.id)) for item in items]
    limit = asyncio.Semaphore(concurrency if judge is not None and judge.concurrent else 1)
    graded = [0]
    with path.open("a", encoding="utf-8") as file:

        async def one(run: int, item: EvalItem, record: BatchRecord | None) -> ScoreRecord:
            now = model if researched is not None and (run, item.id) in researched else None
            async with limit:
                score = await score_record(run, item, record, judge, previous.get((run, item.id)), model=now)
            file.write(score.model_dump_json() + "\n")
            file.flush()
            if judge is not None and progress:
                graded[0] += 1
                if graded[0] % 50 == 0 or graded[0] == len(jobs):
                    say(f"judged {graded[0]} of {len(jobs)} reports")
            return score

        scores = await asyncio.gather(*(one(*job) for job in jobs))
    _rewrite(path, scores)  # one line per (run, question), in order: a resumed file kept earlier lines too
    return list(scores)


async def score_record(
    run: int,
    item: EvalItem,
    record: BatchRecord | None,
    judge: Judge | None,
    previous: ScoreRecord | None = None,
    *,
    model: str | None = None,
) -> ScoreRecord:
    """One report's scores; the judge is asked unless `previous` graded this very report with this judge.

    `model` researched the report; without it, `previous` names the model if it scored this very report.
    """
    report = record.report if record else ""
    digest = hashlib.sha256(report.encode()).hexdigest()
    if model is None and previous is not None and previous.report_sha256 == digest:
        model = previous.model
    answer = short_answer(report)
    grading: Grading | None = None
    if judge is not None:
        if (
            previous is not None
            and previous.report_sha256 == digest
            and previous.judge == judge.name
            and previous.grading is not None
            and previous.grading.error is None
        ):
            grading = previous.grading
        elif not report.strip():
            grading = Grading(grade="not_attempted", output="(no report)")
        else:
            grading = await judge.grade(item.question, item.answers, report)
    return ScoreRecord(
        run=run,
        id=item.id,
        question=item.question,
        answers=item.answers,
        short_answer=answer,
        exact_match=bool(scoring.best(scoring.exact_match, answer, item.answers)),
        f1=scoring.best(scoring.f1, answer, item.answers),
        contained=bool(scoring.best(scoring.contained, report, item.answers)),
        grading=grading,
        judge=judge.name if judge else None,
        model=model,
        error=(record.error if record else "no record in the run's results file"),
        stop_reason=record.stop_reason if record else None,
        turns=record.turns if record else 0,
        generated_tokens=record.usage.generated_tokens if record and record.usage else None,
        seconds=record.seconds if record else 0.0,
        report_sha256=digest,
    )


def read_scores(path: Path) -> dict[tuple[int, str], ScoreRecord]:
    """The scores a file already holds by (run, id), the last line of each winning; unreadable lines are skipped."""
    scores: dict[tuple[int, str], ScoreRecord] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return scores
    for line in lines:
        with contextlib.suppress(ValidationError, ValueError):  # a line cut short by an interruption
            score = ScoreRecord.model_validate_json(line)
            scores[(score.run, score.id)] = score
    return scores


def _rewrite(path: Path, scores: list[ScoreRecord]) -> None:
    """Replace the file with exactly `scores`, at once."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.writelines(score.model_dump_json() + "\n" for score in scores)
    os.replace(tmp, path)
