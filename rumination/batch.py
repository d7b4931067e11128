"""Research a file of questions, appending one JSON line per finished question; a rerun skips those done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rumination.agent import Researcher
from rumination.backends.base import ModelBackend
from rumination.config import Config
from rumination.errors import ConfigError, RuminationError
from rumination.factory import make_engine, make_fetcher
from rumination.registry import backends
from rumination.results import ResearchResult, Source, StopReason, Usage
from rumination.sanitize import terminal_safe
from rumination.search.base import SearchEngine
from rumination.web.base import Fetcher

logger = logging.getLogger(__name__)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
STOP_AFTER = 5  # failed questions in a row that stop a batch (at least; see stop_after)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class BatchQuestion(BaseModel):
    """One question of a batch and its id (unique within the batch)."""

    id: Text
    question: Text


Q = TypeVar("Q", bound=BatchQuestion)


class BatchRecord(BaseModel):
    """One line of a results file: a finished question, answered or failed."""

    id: str
    question: str
    report: str
    sources: list[Source]
    stop_reason: StopReason | None = Field(description="None when the run raised")
    usage: Usage | None
    error: str | None = Field(description="why there is no report: the run's error, or the exception's type and text")
    seconds: float
    turns: int


class BatchSummary(BaseModel):
    """What one batch did."""

    done: int = Field(description="questions answered by this batch")
    failed: int = Field(description="questions that failed in this batch")
    skipped: int = Field(description="questions already in the results file")
    failed_before: int = Field(0, description="skipped questions whose record is a failure (see retry_failed)")
    seconds: float


class BatchStopped(RuminationError):
    """A batch stopped early: question after question failed (the model server went down, say)."""

    def __init__(self, message: str, summary: BatchSummary):
        super().__init__(message)
        self.summary = summary


def stop_after(concurrency: int) -> int:
    """How many questions in a row may fail before a batch stops: 5, or 2 more than run at once."""
    # Every run in flight can fail at once when the server blinks; two more show it is still failing afterwards.
    return max(STOP_AFTER, concurrency + 2)


def read_questions(path: Path) -> list[BatchQuestion]:
    """The questions of a JSONL file or a JSON array (objects or strings), or a text file (one a line, by number)."""
    lines = read_lines(path, "questions file")
    first = next((line.lstrip() for line in lines if line.strip()), "")
    if Path(path).suffix.lower() in JSONL_SUFFIXES or first.startswith(("{", "[")):
        return numbered(path, lines, _json_question)
    return numbered(path, lines, lambda line, number: BatchQuestion(id=str(number), question=line))


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a questions or dataset file; a missing or unreadable file is a ConfigError naming `what`."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


def numbered(path: Path, lines: list[str], parse: Callable[[str, int], Q]) -> list[Q]:
    """Each non-blank line parsed with its number, or each item of a file that is one JSON array (as JSON text).

    A bad line or item, or a repeated id, is a ConfigError naming its line or item number (counted from 1).
    """
    unit, entries = _entries(path, lines)
    items: list[Q] = []
    seen: dict[str, int] = {}
    for number, text in entries:
        try:
            item = parse(text, number)
        except ValueError as exc:
            raise ConfigError(f"{path}, {unit} {number}: {exc}") from None
        if item.id in seen:
            where = f"on line {seen[item.id]}" if unit == "line" else f"by item {seen[item.id]}"
            raise ConfigError(f"{path}, {unit} {number}: id {item.id!r} is already used {where}")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise ConfigError(f"{path} holds no questions")
    return items


def _entries(path: Path, lines: list[str]) -> tuple[str, list[tuple[int, str]]]:
    """("item", each item of a whole-file JSON array as JSON text), or ("line", each non-blank line)."""
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("["):
        try:
            data = json.loads("\n".join(lines))
        except ValueError as exc:
            try:
                json.loads(first)
            except ValueError:  # neither JSON lines nor a whole array: a pretty-printed array with a mistake
                raise ConfigError(f"{path}: not a valid JSON array ({exc})") from None
        else:
            if isinstance(data, list):
                return "item", [(n, json.dumps(value, ensure_ascii=False)) for n, value in enumerate(data, 1)]
    # Blank lines are skipped but still counted: a text file's ids are line numbers.
    return "line", [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def json_object(line: str) -> dict[str, Any]:
    """One JSONL line's (or JSON array item's) object."""
    data = _json(line)
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object such as {"id": "q1", "question": "..."}')
    return data


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None


def _json_question(line: str, number: int) -> BatchQuestion:
    """A JSONL line's or JSON array item's question: an object, or a string (its id is its number)."""
    data = _json(line)
    if isinstance(data, str):
        data = {"question": data}
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object such as {"id": "q1", "question": "..."}, or a string')
    return question_of(data, number)


def question_of(data: dict[str, Any], number: int) -> BatchQuestion:
    """A JSONL line's question; other keys are ignored, a missing id is the line (or item) number."""
    question, id_ = data.get("question"), data.get("id")
    if id_ is None:
        id_ = number
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" must be a non-empty string')
    if isinstance(id_, bool) or not isinstance(id_, str | int) or not str(id_).strip():
        raise ValueError('"id" must be a non-empty string or an integer')
    return BatchQuestion(id=str(id_), question=question)


@dataclass
class _Results:
    """A results file as read: its records (the last line of an id wins), their lines, and a cut-off last line."""

    records: dict[str, BatchRecord] = field(default_factory=dict)
    lines: list[tuple[str, bytes]] = field(default_factory=list)
    torn: bool = False


def _scan(path: Path) -> _Results:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Results()
    except OSError as exc:
        raise ConfigError(f"cannot read the results file {path}: {exc.strerror}") from None
    *complete, tail = data.split(b"\n")
    results = _Results(torn=bool(tail))  # a write cut short by a crash: dropped, that question is asked again
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = BatchRecord.model_validate_json(line)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise ConfigError(
                f"{path}, line {number}: not a batch record ({problem}); remove that line or write to another file"
            ) from None
        results.records[record.id] = record
        results.lines.append((record.id, line + b"\n"))
    return results


def read_records(path: Path) -> dict[str, BatchRecord]:
    """The records a results file already holds, by id (none if it does not exist; a cut-off last line is ignored)."""
    return _scan(Path(path)).records


def _plan(questions: list[BatchQuestion], results: _Results, output: Path, retry_failed: bool) -> list[BatchQuestion]:
    """The questions still to research; refuses a results file that answers an id with another question."""
    ids = [q.id for q in questions]
    if len(set(ids)) < len(ids):
        raise ConfigError(f"duplicate question ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    changed = [q.id for q in questions if q.id in results.records and results.records[q.id].question != q.question]
    if changed:
        raise ConfigError(
            f"{output} answers {len(changed)} of these ids with another question (ids: {', '.join(changed[:5])}); "
            "a text file's ids are its line numbers, so inserting a line shifts them: write to another results file"
        )
    return [
        q
        for q in questions
        if q.id not in results.records or (retry_failed and results.records[q.id].error is not None)
    ]


class _Writer:
    """Appends records to the results file, each flushed and fsynced at once, so a crash keeps every finished line."""

    def __init__(self, path: Path, results: _Results, retry: set[str]):
        self.path = path
        try:
            if results.torn or retry & results.records.keys():
                self._rewrite([line for id_, line in results.lines if id_ not in retry])
            self.file = path.open("ab")
        except OSError as exc:
            raise RuminationError(f"cannot write the results to {path}: {exc.strerror}") from None

    def _rewrite(self, lines: list[bytes]) -> None:
        """Replace the file with `lines` at once: a crash leaves the old file or the new one."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        os.chmod(tmp, stat.S_IMODE(self.path.stat().st_mode))  # not mkstemp's 0600
        with os.fdopen(fd, "wb") as file:
            file.writelines(lines)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)

    def write(self, record: BatchRecord) -> None:
        self.file.write(record.model_dump_json().encode() + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class _Progress:
    """A tqdm bar on a terminal; otherwise one plain line per finished question; nothing when off."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self.done = self.failed = self.running = 0
        interactive = enabled and sys.stderr is not None and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="batch", unit="question", file=sys.stderr, disable=not interactive)
        self._show()

    def started(self) -> None:
        self.running += 1
        self._show()

    def finished(self, record: BatchRecord) -> None:
        self.running -= 1
        if record.error is None:
            self.done += 1
            turns = f"{record.turns} tool turn" + ("" if record.turns == 1 else "s")
            outcome = f"{record.stop_reason} after {turns}, {record.seconds:.1f} s"
        else:
            self.failed += 1
            outcome = f"failed: {record.error}"
        self.bar.update(1)
        self._show()
        line = f"[{self.done + self.failed}/{self.total}] question {record.id}: {outcome}"
        if self.enabled and (self.bar.disable or record.error is not None):
            say(line)

    def _show(self) -> None:
        self.bar.set_postfix_str(f"{self.done} done, {self.failed} failed, {self.running} running")

    def close(self) -> None:
        self.bar.close()


def say(line: str) -> None:
    """A line on stderr, above the progress bar if one is showing."""
    tqdm.write(terminal_safe(line), file=sys.stderr)


async def run_batch(
    questions: list[BatchQuestion],
    config: Config,
    output: Path,
    *,
    concurrency: int | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    backend: ModelBackend | None = None,
    engine: SearchEngine | None = None,
    fetcher: Fetcher | None = None,
) -> BatchSummary:
    """Research the questions not yet in `output`, appending each record as soon as its question finishes.

    A failed question is recorded with its error and the batch goes on, unless `stop_after(concurrency)` questions
    fail in a row (a success resets the count): then the runs still going are cancelled (their questions stay
    unanswered) and BatchStopped is raised. Records of failed questions are skipped on a rerun unless
    `retry_failed`. One backend, search engine and fetcher serve every run (those given are the caller's to
    close); questions run `concurrency` at a time (config.concurrency) if the backend is `concurrent`, else one
    at a time. Cancelling keeps every finished line.
    """
    start, output = time.monotonic(), Path(output)
    results = _scan(output)
    pending = _plan(questions, results, output, retry_failed)
    wanted = config.concurrency if concurrency is None else concurrency
    if wanted < 1:
        raise ConfigError(f"concurrency must be at least 1, not {wanted}")
    pending_ids = {q.id for q in pending}
    skipped = [results.records[q.id] for q in questions if q.id not in pending_ids]
    summary = BatchSummary(
        done=0, failed=0, skipped=len(skipped), failed_before=sum(r.error is not None for r in skipped), seconds=0.0
    )
    if not pending:
        return summary
    note = say if progress else lambda line: None
    async with contextlib.AsyncExitStack() as stack:
        if backend is None:
            backend = backends.get(config.backend)(config)
            stack.push_async_callback(backend.aclose)
        if engine is None:
            engine = make_engine(config)
            stack.push_async_callback(engine.aclose)
        if fetcher is None:
            fetcher = make_fetcher(config)
            stack.push_async_callback(fetcher.aclose)
        if wanted > 1 and not getattr(backend, "concurrent", False):
            note(f"the {backend.name} backend runs one question at a time; --concurrency applies to --backend openai")
            wanted = 1
        if backend.tokenizer is None:  # loaded once, here: concurrent runs must not race two loads
            async for event in Researcher(config, backend=backend)._load_backend():
                if not getattr(event, "transient", False):
                    note(event.message)
        if results.torn:
            note(f"{output}: its last line was cut off mid-write; it is dropped and its question researched again")
        writer = stack.enter_context(contextlib.closing(_Writer(output, results, pending_ids)))
        workers = min(wanted, len(pending))
        note(f"{len(pending)} of {len(questions)} questions to research, {workers} at a time; results: {output}")
        bar = stack.enter_context(contextlib.closing(_Progress(progress, len(pending))))
        if not bar.bar.disable:
            stack.enter_context(logging_redirect_tqdm([logger]))
        todo = iter(pending)
        limit, in_a_row = stop_after(workers), [0]

        async def work() -> None:
            for question in todo:  # one iterator shared by the workers: each question is taken once
                bar.started()
                record = await _answer(question, config, backend, engine, fetcher)
                writer.write(record)
                bar.finished(record)
                in_a_row[0] = 0 if record.error is None else in_a_row[0] + 1
                if in_a_row[0] >= limit:
                    raise _Failing(record)

        tasks = [asyncio.create_task(work()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except _Failing as failing:
            counts = summary.model_copy(
                update={"done": bar.done, "failed": bar.failed, "seconds": time.monotonic() - start}
            )
            raise BatchStopped(_stopped(counts, limit, failing.record, len(pending), output), counts) from None
        finally:  # a failed write, a cancel or a stop: stop every run
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return summary.model_copy(update={"done": bar.done, "failed": bar.failed, "seconds": time.monotonic() - start})


class _Failing(Exception):
    """Raised by a batch worker when too many questions in a row have failed."""

    def __init__(self, record: BatchRecord):
        super().__init__(record.error)
        self.record = record


def _stopped(counts: BatchSummary, limit: int, last: BatchRecord, pending: int, output: Path) -> str:
    """What BatchStopped says: why, what is kept, and how to go on."""
    left = pending - counts.done - counts.failed
    return (
        f"the batch stopped after {limit} questions in a row failed; the last (question {last.id}): {last.error}\n"
        f"{counts.done} answered and {counts.failed} failed in this batch (kept in {output}), {left} not researched; "
        "fix the cause (is the model server up?) and run the same command again with --retry-failed"
    )


async def _answer(
    question: BatchQuestion, config: Config, backend: ModelBackend, engine: SearchEngine, fetcher: Fetcher
) -> BatchRecord:
    """Research one question; any exception becomes the record's error (unexpected ones are logged with a trace)."""
    start = time.monotonic()
    # A backend that keeps per-run state (the scripted one replays its script from the start) gives a copy per run.
    for_run = getattr(backend, "for_run", None)
    researcher = Researcher(config, backend=for_run() if for_run else backend, engine=engine, fetcher=fetcher)
    result: ResearchResult | None = None
    try:
        result = await researcher.run(question.question)
        error = result.error
    except Exception as exc:
        if not isinstance(exc, RuminationError):
            logger.error("question %s failed unexpectedly", question.id, exc_info=exc)
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return BatchRecord(
        id=question.id,
        question=question.question,
        report=result.report if result else "",
        sources=result.sources if result else [],
        stop_reason=result.stop_reason if result else None,
        usage=result.usage if result else None,
        error=error,
        seconds=round(time.monotonic() - start, 3),
        turns=result.turns if result else 0,
    )


def batch(
    questions: str | os.PathLike[str] | list[BatchQuestion] | list[str],
    output: str | os.PathLike[str],
    *,
    progress: bool = True,
    retry_failed: bool = False,
    **settings: Any,
) -> BatchSummary:
    """Research a questions file, or a list (strings get ids 1, 2, ...), into `output` (blocking); see run_batch."""
    if isinstance(questions, str | os.PathLike):
        items = read_questions(Path(questions))
    else:
        items = [
            q if isinstance(q, BatchQuestion) else BatchQuestion(id=str(i), question=q)
            for i, q in enumerate(questions, 1)
        ]
    config = Config(**settings)
    return asyncio.run(run_batch(items, config, Path(output), progress=progress, retry_failed=retry_failed))


class _CallableModule(types.ModuleType):
    """Makes `rumination.batch(...)` work: once imported, this module is the package's `batch` attribute."""

    def __call__(self, *args: Any, **kwargs: Any) -> BatchSummary:
        return batch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
