"""The one typed event stream that every front-end consumes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from rumination.results import ResearchResult, Step, StopReason, ToolCall, TurnUsage


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    at: datetime = Field(default_factory=_now)


class StatusEvent(_Event):
    type: Literal["status"] = "status"
    message: str
    transient: bool = Field(False, description="a progress line that the next status replaces")


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    run_id: str | None = Field(None, description="the run's journal id (rumination show/resume/replay ID)")
    resumed_after: int | None = Field(None, description="a resumed run: the tool turns it had done")
    replay_of: str | None = Field(None, description="a replay: the run it replays")
    question: str
    backend: str
    model: str
    search: str = Field(description="the search engine as configured (e.g. local:papers), then its fallbacks")
    max_turns: int
    context_window: int
    max_context_tokens: int


class TurnStarted(_Event):
    type: Literal["turn_started"] = "turn_started"
    turn: int
    prompt_tokens: int
    report: bool = False


class ThinkingDelta(_Event):
    type: Literal["thinking"] = "thinking"
    turn: int
    text: str


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    turn: int
    call: ToolCall | None
    raw: str = Field(description="the text after the last </think>, as the model wrote it")


class ObservationEvent(Step, _Event):
    """The result of a tool turn: the run's Step as recorded (its `error` field describes each failure kind)."""

    type: Literal["observation"] = "observation"


class TurnFinished(_Event):
    type: Literal["turn_finished"] = "turn_finished"
    usage: TurnUsage
    context_tokens: int
    elapsed: float


class ForcedFinish(_Event):
    type: Literal["forced_finish"] = "forced_finish"
    reason: StopReason
    detail: str


class ReportDelta(_Event):
    type: Literal["report"] = "report"
    text: str
    reset: bool = Field(
        False, description="drop the report text streamed so far first: the model closed its thinking again"
    )


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    result: ResearchResult


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    message: str
    fatal: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    StatusEvent
    | RunStarted
    | TurnStarted
    | ThinkingDelta
    | ToolCallEvent
    | ObservationEvent
    | TurnFinished
    | ForcedFinish
    | ReportDelta
    | RunFinished
    | ErrorEvent,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(line: str | bytes) -> Event:
    """Parse one JSON line of the event stream back into its event."""
    return event_adapter.validate_json(line)
