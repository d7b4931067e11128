"""The run journal: every event of a run and its state at each turn end, appended to one JSON-lines file."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from rumination import events as ev
from rumination.browser import BrowserState
from rumination.errors import RuminationError
from rumination.results import Message, ResearchResult, Step, StopReason, TurnUsage

# A run lives in <data_dir>/runs/<id>/: journal.jsonl (the records below, one JSON object a line, flushed as written
# and fsynced at every turn end) and web/ (a web snapshot of every search and page the run read, so a resume never
# fetches again and a replay needs no network). The first line is a Header; a Checkpoint closes each tool turn and
# holds what that turn added (messages, step, usage, the model's raw output) plus the browser and budget state, so
# the last complete turn can be rebuilt; events after the last checkpoint belong to a turn cut short. A line cut off
# by a crash (only ever the last) is ignored on reading and removed before the journal is appended to again.
FORMAT = "rumination-journal"
VERSION = 1
RUNS = "runs"
JOURNAL = "journal.jsonl"
WEB = "web"
RunStatus = Literal["running", "finished", "failed", "interrupted"]


class JournalError(RuminationError):
    """A journal that cannot be read or written: not one, damaged, from another version, or in use."""


class Header(BaseModel):
    """The first record: what the run is and the settings it runs under (no secrets)."""

    kind: Literal["header"] = "header"
    format: str = FORMAT
    version: int = VERSION
    id: str
    question: str
    started_at: datetime
    config: dict[str, Any]
    replay_of: str | None = Field(None, description="the run this one replays over its recorded web")


class EventRecord(BaseModel):
    """One event of the stream, as the front-ends saw it."""

    kind: Literal["event"] = "event"
    event: ev.Event


class Checkpoint(BaseModel):
    """A turn's end: what it added to the run, and the state a resume starts from."""

    kind: Literal["checkpoint"] = "checkpoint"
    turn: int = Field(description="tool turns complete")
    messages_from: int = Field(description="messages from this index on are replaced by `messages`")
    messages: list[Message]
    steps: list[Step] = Field(default_factory=list)
    usage: list[TurnUsage] = Field(default_factory=list)
    outputs: dict[int, str] = Field(default_factory=dict, description="the model's raw output of each turn")
    browser: BrowserState
    format_errors: int = 0
    actions: dict[str, int] = Field(default_factory=dict)
    elapsed: float = Field(0.0, description="seconds of research so far")
    stop: StopReason | None = Field(None, description="set once research is over: the report comes next")


class Resumed(BaseModel):
    """A resume: the records before it up to the last checkpoint stand; a turn cut short is done again."""

    kind: Literal["resumed"] = "resumed"
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    turn: int


Record = Annotated[Header | EventRecord | Checkpoint | Resumed, Field(discriminator="kind")]
record_adapter: TypeAdapter[Record] = TypeAdapter(Record)


@dataclass
class RunState:
    """A run rebuilt from its checkpoints."""

    turn: int = 0
    messages: list[dict[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    usage: list[TurnUsage] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)
    browser: BrowserState | None = None
    format_errors: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    stop: StopReason | None = None

    def add(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint."""
        self.turn = checkpoint.turn
        self.messages = self.messages[: checkpoint.messages_from] + [m.model_dump() for m in checkpoint.messages]
        self.steps += checkpoint.steps
        self.usage += checkpoint.usage
        self.outputs.update(checkpoint.outputs)
        self.browser, self.stop = checkpoint.browser, checkpoint.stop
        self.format_errors, self.actions = checkpoint.format_errors, checkpoint.actions
        self.elapsed = checkpoint.elapsed


@dataclass
class RunLog:
    """Everything one journal holds."""

    path: Path
    header: Header
    events: list[ev.Event]  # every event, a turn cut short included
    state: RunState
    result: ResearchResult | None
    resumes: int = 0

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def folder(self) -> Path:
        return self.path.parent

    @functools.cached_property
    def status(self) -> RunStatus:
        """running (another process holds it), finished, failed (the backend gave out) or interrupted."""
        return _status(self.path, self.result is not None, self.result.stop_reason if self.result else None)

    @property
    def resumable(self) -> bool:
        """Whether `rumination resume` can continue it: interrupted, or ended by a failing backend."""
        return self.status in ("interrupted", "failed")


# ------------------------------------------------------------------------------------------------ writing


class Journal:
    """An open journal: appends records, flushing each and fsyncing on `sync`; held locked while open."""

    def __init__(self, path: Path):
        self.path = path
        self.broken: str | None = None
        self._file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise JournalError(f"run {path.parent.name} is in use by another rumination process") from None
        _drop_torn_tail(self._file)

    @classmethod
    def create(cls, data_dir: Path, header: Header) -> Journal:
        """A new run folder under `data_dir` and its journal, the header written."""
        folder = run_folder(data_dir, header.id)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)  # questions and what was read are the user's own business
        except OSError as exc:
            raise JournalError(f"cannot create the run journal in {folder.parent}: {exc.strerror or exc}") from None
        journal = cls(folder / JOURNAL)
        journal.write(header)
        journal.sync()
        if journal.broken:
            raise JournalError(f"cannot write the run journal {journal.path}: {journal.broken}")
        return journal

    def write(self, record: BaseModel) -> None:
        """Append one record; after a write error (a full disk), `broken` says why and nothing more is written."""
        if self.broken:
            return
        try:
            self._file.write(record.model_dump_json().encode() + b"\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            self.broken = getattr(exc, "strerror", None) or str(exc)

    def event(self, event: ev.Event) -> None:
        """Append one event."""
        self.write(EventRecord(event=event))

    def sync(self) -> None:
        """Make what was written durable (a turn's end)."""
        if self.broken:
            return
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.broken = exc.strerror or str(exc)

    def close(self) -> None:
        """Sync, unlock and close."""
        with contextlib.suppress(OSError, ValueError):
            self.sync()
        self._file.close()


def _drop_torn_tail(handle: Any) -> None:
    """Cut a last line that a crash left without its newline, so the next record starts a line of its own."""
    size = handle.seek(0, os.SEEK_END)
    if not size:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    keep, position = 0, size
    while position > 0 and not keep:
        step = min(65536, position)
        position -= step
        handle.seek(position)
        block = handle.read(step)
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = position + newline + 1
    handle.truncate(keep)
    handle.seek(0, os.SEEK_END)


def new_run_id() -> str:
    """A short random id: 8 lowercase hex digits."""
    return secrets.token_hex(4)


def run_folder(data_dir: Path, run_id: str) -> Path:
    """Where run `run_id` keeps its journal and web snapshot."""
    return Path(data_dir).expanduser() / RUNS / run_id


# ------------------------------------------------------------------------------------------------ reading


def locked(path: Path) -> bool:
    """Whether a process holds the journal open for writing."""
    try:
        with path.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, is the last) of a journal; a last line without its newline was cut off: skipped."""
    with path.open("rb") as handle:
        previous: bytes | None = None
        number = 0
        for line in handle:
            if previous is not None:
                yield number, previous, False
            number += 1
            previous = line
        if previous is not None and previous.endswith(b"\n"):
            yield number, previous, True


def read_header(path: Path) -> Header:
    """The header of the journal at `path`, or a JournalError saying why it is not a journal we can read."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
    except FileNotFoundError:
        raise JournalError(f"no journal at {path}") from None
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(first)
    except ValueError:
        raise JournalError(f"{path} is not a Rumination journal (its first line is not JSON)") from None
    if not isinstance(data, dict) or data.get("kind") != "header" or data.get("format") != FORMAT:
        raise JournalError(f"{path} is not a Rumination journal (it has no {FORMAT} header)")
    version = data.get("version")
    if not isinstance(version, int) or version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise JournalError(
            f"the journal {path} has format version {version}, written by "
            f"{'a newer' if newer else 'an older'} Rumination; this one reads version {VERSION}"
        )
    try:
        return Header.model_validate(data)
    except ValidationError as exc:
        raise JournalError(f"the journal {path} has a damaged header: {_reason(exc)}") from None


def read(path: Path) -> RunLog:
    """Read a whole journal: its header, events, the state at its last checkpoint, and its result if it ended."""
    header = read_header(path)
    events: list[ev.Event] = []
    pending: list[ev.Event] = []  # the events of a turn not checkpointed yet
    state, result, resumes = RunState(), None, 0
    for number, line, last in _lines(path):
        if number == 1:
            continue
        try:
            record = record_adapter.validate_json(line)
        except ValidationError as exc:
            if last:  # a crash mid-write leaves at worst one bad line, the last
                break
            raise JournalError(f"the journal {path} is damaged at line {number}: {_reason(exc)}") from None
        match record:
            case EventRecord(event=event):
                pending.append(event)
                if isinstance(event, ev.RunFinished):
                    result = event.result
            case Checkpoint():
                state.add(record)
                events += pending
                pending = []
            case Resumed():
                pending, result = [], None
                resumes += 1
            case Header():
                raise JournalError(f"the journal {path} is damaged at line {number}: a second header")
    return RunLog(path, header, events + pending, state, result, resumes)


def find(data_dir: Path, run_id: str) -> Path:
    """The journal of the run whose id is or starts with `run_id`."""
    runs = Path(data_dir).expanduser() / RUNS
    run_id = run_id.strip().lower()
    if not run_id or not all(c in "0123456789abcdef" for c in run_id):
        raise JournalError(f"{run_id!r} is not a run id (8 hex digits; rumination sessions lists them)")
    exact = run_folder(data_dir, run_id) / JOURNAL
    if exact.is_file():
        return exact
    matches = sorted(p.name for p in runs.glob(f"{run_id}*") if (p / JOURNAL).is_file()) if runs.is_dir() else []
    if not matches:
        raise JournalError(f"no run {run_id} in {runs} (rumination sessions lists the runs)")
    if len(matches) > 1:
        raise JournalError(f"{run_id} matches several runs: {', '.join(matches[:8])}; give more of the id")
    return run_folder(data_dir, matches[0]) / JOURNAL


def load(data_dir: Path, run_id: str) -> RunLog:
    """The run `run_id` (or a unique prefix of it), read."""
    return read(find(data_dir, run_id))


@dataclass
class RunSummary:
    """One line of `rumination sessions`."""

    id: str
    started_at: datetime
    question: str
    turns: int
    status: RunStatus
    stop_reason: StopReason | None
    replay_of: str | None = None


def summaries(data_dir: Path) -> tuple[list[RunSummary], list[str]]:
    """Every run under `data_dir`, newest first, and a line for each folder that could not be read."""
    runs = Path(data_dir).expanduser() / RUNS
    found, problems = [], []
    try:
        folders = sorted(runs.iterdir()) if runs.is_dir() else []
    except OSError as exc:
        return [], [f"cannot list the runs in {runs}: {exc.strerror or exc}"]
    for folder in folders:
        path = folder / JOURNAL
        if not path.is_file():
            continue
        try:
            found.append(summary(path))
        except JournalError as exc:
            problems.append(str(exc))
    found.sort(key=lambda s: s.started_at, reverse=True)
    return found, problems


def summary(path: Path) -> RunSummary:
    """A run's summary line, without validating every record (a listing reads many journals)."""
    header = read_header(path)
    checkpoint = finished = None
    for _, line, _ in _lines(path):
        head = line[:160]
        if head.startswith(b'{"kind":"checkpoint"'):
            checkpoint = line
        elif head.startswith(b'{"kind":"event"') and b'"type":"run_finished"' in head:
            finished = line
        elif head.startswith(b'{"kind":"resumed"'):
            finished = None
    turns, stop = 0, None
    try:
        if finished is not None:
            result = json.loads(finished)["event"]["result"]
            turns, stop = int(result["turns"]), result["stop_reason"]
        elif checkpoint is not None:
            record = json.loads(checkpoint)
            turns, stop = int(record["turn"]), record.get("stop")
    except (ValueError, KeyError, TypeError):
        raise JournalError(f"the journal {path} is damaged (rumination show {header.id} says where)") from None
    status = _status(path, finished is not None, stop)
    return RunSummary(header.id, header.started_at, header.question, turns, status, stop, header.replay_of)


def _status(path: Path, ended: bool, stop: StopReason | None) -> RunStatus:
    """A journal's status: held by a process, else whether and how its run ended."""
    if locked(path):
        return "running"
    if not ended:
        return "interrupted"
    return "failed" if stop == "error" else "finished"


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
