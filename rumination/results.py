"""The serialised result of a research run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from rumination.tool_errors import ToolErrorKind

StopReason = Literal[
    "finished",  # the model called finish
    "max_turns",
    "context_budget",
    "format_errors",
    "repeated_action",
    "time_budget",
    "cancelled",  # the caller asked to finish now
    "error",  # the model backend failed mid-run: no report, the rest is what was read
]


class Source(BaseModel):
    """A page the run actually fetched and showed to the model."""

    id: int
    url: str
    final_url: str
    title: str
    fetched_at: datetime
    cited: bool = False


class GenerationUsage(BaseModel):
    """Token and timing accounting for one generation, as the backend reports it."""

    prompt_tokens: int
    generated_tokens: int
    prefilled_tokens: int | None = Field(None, description="prompt tokens computed this time")
    reused_tokens: int | None = Field(None, description="prompt tokens served from the cache")
    finish_reason: Literal["stop", "length", "cancelled"]
    seconds: float
    first_token_seconds: float | None = None
    prefill_seconds: float | None = None
    decode_seconds: float | None = None
    drafted_tokens: int | None = Field(None, description="prompt-lookup draft tokens verified (local backend)")
    accepted_tokens: int | None = Field(None, description="draft tokens that were the model's own choice")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_tokens_per_second(self) -> float | None:
        """Generated tokens after the first, per second of decoding."""
        if not self.decode_seconds or self.generated_tokens < 2:
            return None
        return round((self.generated_tokens - 1) / self.decode_seconds, 2)


class TurnUsage(GenerationUsage):
    """One generation of a run: a tool turn, or the report (numbered after the last tool turn)."""

    turn: int
    report: bool = False


class Usage(BaseModel):
    """Totals over a run, plus every generation: one per tool turn, then the report's."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    generations: list[TurnUsage] = Field(default_factory=list)

    def add(self, generation: TurnUsage) -> None:
        """Record one generation."""
        self.generations.append(generation)
        self.prompt_tokens += generation.prompt_tokens
        self.generated_tokens += generation.generated_tokens


class ToolCall(BaseModel):
    """A parsed, validated tool call."""

    name: Literal["search", "click", "open", "finish"]
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What one tool call produced: the observation shown to the model, and facts about it."""

    observation: str
    ok: bool
    error: ToolErrorKind | None = Field(
        None,
        description=(
            "why the turn failed: format (no call found), unknown_tool, arguments (missing, mistyped or out of "
            "range; also a click with no results), cut_off (the output hit the token limit), search (the engine "
            "failed), fetch (the page could not be read), refused (deny list, not shown to the model, private "
            "address, robots.txt), cancelled (the user asked for the report)"
        ),
    )
    detail: str | None = Field(None, description="a failure's reason in one short line")
    seconds: float = 0.0
    url: str | None = None
    title: str | None = None
    source_id: int | None = None
    results: int | None = Field(None, description="how many search results were shown")
    page_tokens: int | None = Field(None, description="a page cut to fit: its size in tokens, about")
    kept_tokens: int | None = Field(None, description="a page cut to fit: the tokens of it shown")
    continued: bool = Field(False, description="a page read again: only the parts not shown before")


class Step(ToolResult):
    """One tool turn: what the model asked for and what it was shown."""

    turn: int
    call: ToolCall | None = Field(description="None when the output held no runnable call")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tool(self) -> str | None:
        """The tool the model called, if its call could be read."""
        return self.call.name if self.call else None


CitationForm = Literal["mark", "number", "footnote", "link", "url"]


class Citation(BaseModel):
    """One citation in a report, resolved against the pages the run read (see citations.py for the rules)."""

    text: str = Field(description="the citation as written, e.g. 【3†source】, [2], [^1], a Markdown link or a URL")
    start: int = Field(description="its offset in the report")
    end: int
    form: CitationForm
    target: str = Field(description="what it names: a URL, a title, or a number")
    source_id: int | None = Field(None, description="the page read that it points at; None: unverified")
    missing: list[str] = Field(
        default_factory=list,
        description="numbers, dates and quoted phrases of the cited sentence that the cited page's text lacks",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def verified(self) -> bool:
        """Whether it points at a page the run read."""
        return self.source_id is not None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def supported(self) -> bool:
        """Whether it points at a page read whose text holds every number, date and quote of its sentence."""
        return self.source_id is not None and not self.missing


class Message(BaseModel):
    """One chat message as given to the chat template."""

    role: Literal["user", "assistant", "observation"]
    content: str


class ResearchResult(BaseModel):
    """Everything a run produced."""

    question: str
    report: str
    sources: list[Source]
    steps: list[Step]
    turns: int = Field(description="tool turns, as in steps; usage.generations also counts the report's generation")
    stop_reason: StopReason
    error: str | None = Field(None, description="why the run ended without a report (stop_reason error)")
    usage: Usage
    backend: str
    model: str
    started_at: datetime
    finished_at: datetime
    unverified_urls: list[str] = Field(
        default_factory=list, description="URLs in the report that the run never fetched"
    )
    messages: list[Message] = Field(default_factory=list)
    run_id: str | None = Field(None, description="the run's journal id (rumination show/resume/replay ID)")
    citations: list[Citation] = Field(default_factory=list, description="every citation in the report, resolved")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unverified_citations(self) -> int:
        """Citations that point at nothing the run read."""
        return sum(not c.verified for c in self.citations)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unsupported_citations(self) -> int:
        """Citations of a page read whose sentence has numbers, dates or quotes the page's text lacks."""
        return sum(c.verified and not c.supported for c in self.citations)
