"""A run's folder: its journal and its recorded web; the settings a resume or a replay runs under."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rumination import events as ev
from rumination import journal as jr
from rumination.config import Config, is_secret
from rumination.errors import RuminationError
from rumination.factory import fetch_rules, same_origin
from rumination.results import Message, ResearchResult, Usage
from rumination.search.base import SearchEngine
from rumination.snapshot import Offline, ReachingSnapshotFetcher, SnapshotEngine, WebSnapshot
from rumination.web.base import Fetcher

RECORDED_ENGINE = "run"  # the engine's name in the keys of a run's recorded searches, whatever engines it used
PATHS = ("script", "web_snapshot", "data_dir", "cache_dir")
REPLAY_UNLIMITED = 1 << 30  # a replay of recorded outputs is never stopped by a token budget the original passed


@dataclass
class Run:
    """A run being journaled: its id, folder and open journal."""

    id: str
    journal: jr.Journal
    replay_of: str | None = None
    warned: bool = False  # a journal write failed and the user was told

    @classmethod
    def start(cls, question: str, config: Config, replay_of: str | None = None) -> Run:
        """A new run folder and journal; the header records the settings (no secrets; the date pinned)."""
        started = datetime.now(UTC)
        header = jr.Header(
            id=jr.new_run_id(),
            question=question,
            started_at=started,
            config=recorded_config(config, started),
            replay_of=replay_of,
        )
        return cls(header.id, jr.Journal.create(config.data_dir, header), replay_of)

    @classmethod
    def resume(cls, log: jr.RunLog) -> Run:
        """Reopen an interrupted run's journal and say where it resumes."""
        run = cls(log.id, jr.Journal(log.path), log.header.replay_of)
        run.journal.write(jr.Resumed(turn=log.state.turn))
        run.journal.sync()
        return run

    def recording(self, engine: SearchEngine, fetcher: Fetcher, config: Config) -> tuple[SearchEngine, Fetcher]:
        """`engine` and `fetcher` recording into this run's web folder and served from it when asked again."""
        return record_into(WebSnapshot(self.journal.path.parent / jr.WEB), engine, fetcher, config)

    def checkpoint(self, record: jr.Checkpoint) -> None:
        """Write a turn's checkpoint and make the journal durable."""
        self.journal.write(record)
        self.journal.sync()

    def close(self) -> None:
        """Close the journal (the run's lock goes with it)."""
        self.journal.close()


async def journaled(run: Run | None, events: AsyncIterator[ev.Event]) -> AsyncIterator[ev.Event]:
    """`events`, each appended to the run's journal first; a journal that fails is said once, and the run goes on."""
    async with contextlib.aclosing(events):
        async for event in events:
            if run is not None:
                run.journal.event(event)
            yield event
            if run is not None and run.journal.broken and not run.warned:
                run.warned = True
                yield ev.ErrorEvent(
                    message=f"the run's journal cannot be written ({run.journal.broken}); the run goes on, but it "
                    "cannot be resumed or replayed",
                    detail={"journal": True},
                )


def record_into(
    store: WebSnapshot, engine: SearchEngine, fetcher: Fetcher, config: Config
) -> tuple[SearchEngine, Fetcher]:
    """`engine` and `fetcher` behind `store`: recorded on first use, replayed after, under `config`'s egress rules."""
    recorded = SnapshotEngine(engine, store, key_name=RECORDED_ENGINE)
    same_origin(recorded, engine)  # its results lead where the wrapped engine's do
    return recorded, ReachingSnapshotFetcher(fetcher, store, fetch_rules(config))


def recorded_web(log: jr.RunLog, config: Config) -> tuple[SearchEngine, Fetcher]:
    """An engine and fetcher that answer only from `log`'s recorded web: no request ever leaves the machine."""
    offline = Offline()
    return record_into(WebSnapshot(log.folder / jr.WEB), offline, offline, config)


def recorded_config(config: Config, started: datetime) -> dict[str, Any]:
    """The settings as the journal keeps them: no secrets, and the year the model is told pinned to the start's."""
    # A secret is given again on resume (flags, environment, file).
    values = {name: value for name, value in config.model_dump(mode="json").items() if not is_secret(name, value)}
    for name in PATHS:  # a resume may start in another working directory
        if values.get(name) is not None:
            values[name] = str(Path(values[name]).expanduser().absolute())
    if values.get("current_year") and values.get("today") is None:
        values["today"] = started.date().isoformat()
    return values


def check_resumable(log: jr.RunLog) -> None:
    """Raise why `log` cannot be resumed: held by another process, ended, or a replay (whose web is a recording)."""
    if log.status == "running":
        raise RuminationError(f"run {log.id} is running in another rumination process; it cannot be resumed twice")
    if not log.resumable:
        raise RuminationError(f"run {log.id} is {log.status}: there is nothing to resume")
    if log.header.replay_of:
        raise RuminationError(
            f"run {log.id} replays run {log.header.replay_of} and cannot be resumed: "
            f"replay {log.header.replay_of} again (rumination replay {log.header.replay_of})"
        )


def config_for(log: jr.RunLog, config: Config, **overrides: Any) -> Config:
    """`log`'s recorded settings, then those `config` sets explicitly (flags, environment, file), then `overrides`."""
    explicit = {name: getattr(config, name) for name in config.model_fields_set}
    return Config(**{**log.header.config, **explicit, **overrides})


def replay_config(log: jr.RunLog, config: Config, **given: Any) -> Config:
    """Settings to replay `log` with its recorded outputs: the scripted backend, stopping where the original did."""
    overrides: dict[str, Any] = {
        "backend": "scripted",
        "max_seconds": None,
        "context_window": REPLAY_UNLIMITED,
        "max_context_tokens": REPLAY_UNLIMITED,
        "max_new_tokens": REPLAY_UNLIMITED,
        "journal": config.journal,
        "data_dir": config.data_dir,
    }
    original = log.result.stop_reason if log.result else log.state.stop
    if original not in (None, "finished", "format_errors", "repeated_action"):  # a budget: stop where it stopped
        overrides["max_turns"] = max(1, log.state.turn)
    return Config(**{**log.header.config, **given, **overrides})


def recorded_outputs(log: jr.RunLog) -> list[str]:
    """The model's raw output of every turn, then the report's (when the run wrote one)."""
    outputs = [log.state.outputs[turn] for turn in sorted(log.state.outputs)]
    messages = log.result.messages if log.result else []
    if log.result is not None and log.result.stop_reason != "error" and messages and messages[-1].role == "assistant":
        outputs.append(messages[-1].content)
    return outputs


def partial_result(log: jr.RunLog) -> ResearchResult:
    """What a run that has not ended holds so far, as a result with no report (stop reason error, explained)."""
    state, usage = log.state, Usage()
    for generation in state.usage:
        usage.add(generation)
    config = log.header.config
    return ResearchResult(
        question=log.header.question,
        report="",
        sources=state.browser.sources if state.browser else [],
        steps=state.steps,
        turns=state.turn,
        stop_reason="error",
        error=(
            f"the run is still running ({state.turn} tool turns so far)"
            if log.status == "running"
            else f"the run was interrupted after {state.turn} tool turns (rumination resume {log.id} continues it)"
        ),
        usage=usage,
        backend=str(config.get("backend", "")),
        model=str(config.get("model", "")),
        started_at=log.header.started_at,
        finished_at=log.events[-1].at if log.events else log.header.started_at,
        messages=[Message.model_validate(m) for m in state.messages],
        run_id=log.id,
    )
