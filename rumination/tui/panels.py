"""The TUI's panels: per-turn thinking, tool timeline, sources and their citations, save dialog, sessions list."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, DataTable, Input, Label, Static
from textual.widgets.data_table import ColumnKey

from rumination import events as ev
from rumination.console import cut_note
from rumination.journal import RunSummary
from rumination.results import Citation, ResearchResult, Source
from rumination.sanitize import terminal_safe

Listing = Callable[[], tuple[list[RunSummary], list[str]]]
STATUS_STYLES = {"finished": "green", "failed": "red", "interrupted": "yellow", "running": "bold"}


class ThinkingLog(VerticalScroll):
    """The thinking trace, one collapsible block per turn; follows new text unless scrolled away."""

    def __init__(self) -> None:
        super().__init__()
        self._block: Collapsible | None = None
        self._body: Vertical | None = None
        self._paragraph: Static | None = None
        self._buffer = ""
        self._dirty = False

    def start_turn(self, turn: int, prompt_tokens: int, report: bool) -> None:
        """Open a new block, folding the previous one (blocks the user opened again stay open)."""
        self.flush()
        if self._dirty and self._paragraph is not None:  # its block is not on screen yet (a recorded run shown at once)
            self._paragraph.update(self._buffer.strip("\n"))  # the turn's thinking in one piece
            self._dirty = False
        if self._block is not None:
            self._block.collapsed = True
        title = "Report" if report else f"Turn {turn}"
        self._paragraph = Static("", classes="thinking", markup=False)
        self._body = Vertical(self._paragraph, classes="turn-body")
        self._block = Collapsible(self._body, title=f"{title} · {prompt_tokens:,} tokens in context", collapsed=False)
        self.mount(self._block)
        self._buffer = ""
        self.call_after_refresh(self._keep_following)

    def append(self, text: str) -> None:
        """Queue streamed thinking text; `flush` shows it."""
        self._buffer += text
        self._dirty = True

    def flush(self) -> None:
        """Show the queued text: finished paragraphs get their own widget, so only the last one is redrawn."""
        if self._paragraph is None or self._body is None or not self._dirty or not self._body.is_mounted:
            return  # nothing new, or the block is not on screen yet (the next tick retries)
        *done, self._buffer = self._buffer.split("\n\n")
        for paragraph in done:
            if paragraph.strip():
                self._paragraph.update(paragraph.strip("\n"))
                self._paragraph = Static("", classes="thinking", markup=False)
                self._body.mount(self._paragraph)
        self._paragraph.update(self._buffer.strip("\n"))
        self._dirty = False
        self.call_after_refresh(self._keep_following)

    def _keep_following(self) -> None:
        # Anchor once the text overflows; Textual releases the anchor when the user scrolls up and restores
        # it when they scroll back to the bottom.
        if self.max_scroll_y > 0 and not self.is_anchored:
            self.anchor()

    def clear(self) -> None:
        """Forget every block."""
        self.remove_children()
        self.anchor(False)
        self._block, self._body, self._paragraph, self._buffer, self._dirty = None, None, None, "", False


def cell(text: str, style: str = "") -> Text:
    """A one-line cell that ends in an ellipsis when its column is too narrow (and is never read as markup)."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis", end="")


class FitTable(DataTable):
    """A table whose FLEX column takes the width left, so long cells end in an ellipsis instead of scrolling."""

    FLEX: ClassVar[str] = ""
    MIN_FLEX = 12

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Give the FLEX column what the others leave of the table's width (a scrollbar's room kept free)."""
        flex = self.columns.get(ColumnKey(self.FLEX))
        if flex is None or not self.size.width:
            return
        taken = sum(column.get_render_width(self) for column in self.columns.values() if column is not flex)
        taken += 2 * self.cell_padding
        room = self.size.width - taken - self.styles.scrollbar_size_vertical
        flex.width, flex.auto_width = max(self.MIN_FLEX, room), False
        self._require_update_dimensions = True  # DataTable's own flag: recompute the scrollable size
        self.refresh()


def _cut(event: ev.ObservationEvent) -> str:
    """A long page's cut, as the timeline says it: " · cut: 8,000 of about 42,000 tokens"."""
    return f" · cut: {note}" if (note := cut_note(event)) else ""


class Timeline(FitTable):
    """Tool calls with their status and latency."""

    FLEX = "detail"

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_column("#", key="turn", width=3)
        self.add_column("tool", key="tool", width=7)
        self.add_column("status", key="status", width=11)
        self.add_column("detail", key="detail")
        self.fit_columns()

    def call(self, event: ev.ToolCallEvent) -> None:
        """A call was made: add its row as running."""
        if event.call is None:
            detail, tool = cell(_line(event.raw) or "(empty output)", "dim"), "?"
        else:
            tool = event.call.name
            arg = next(iter(event.call.arguments.values()), "")
            detail = cell(_line(str(arg)) if tool != "search" else f"“{_line(str(arg))}”")
        status = cell("…", "dim") if event.call and event.call.name != "finish" else cell("")
        if str(event.turn) in self.rows:  # a turn done again (a resumed run redoes the turn it was cut short in)
            self.remove_row(str(event.turn))
        self.add_row(cell(str(event.turn)), cell(tool), status, detail, key=str(event.turn))
        self.move_cursor(row=self.row_count - 1)

    def observed(self, event: ev.ObservationEvent) -> None:
        """The call finished: show what it produced, errors distinct from successes."""
        key = str(event.turn)
        if event.ok and event.results is not None:
            detail = cell(f"{self.get_cell(key, 'detail')} → {event.results} results")
            self.update_cell(key, "detail", detail)
        elif event.ok and event.tool == "open":
            self.update_cell(key, "detail", cell(f"{event.url} · {_line(event.title or '')}{_cut(event)}"))
        elif event.ok and event.title:
            self.update_cell(key, "detail", cell(f"{_line(event.title)} ({_host(event.url or '')}){_cut(event)}"))
        if event.ok:
            self.update_cell(key, "status", cell(f"✓ {event.seconds:.1f} s", "green"))
            return
        reason = _line(event.observation.removeprefix("Error: "))
        self.update_cell(key, "detail", cell(reason, "red"))
        label = f"✗ {event.error or 'error'}"
        self.update_cell(key, "status", cell(label, "bold red" if event.error == "refused" else "red"))

    def forced(self, event: ev.ForcedFinish) -> None:
        """The loop forced the report."""
        self.add_row(cell(""), cell("report"), cell("forced", "yellow"), cell(event.detail, "yellow"))


class SourcesTable(FitTable):
    """Every page the run read, marked when the report cites it; Enter opens the selected one in the system browser."""

    FLEX = "title"

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.urls: dict[str, str] = {}
        self.citations: dict[int, list[Citation]] = {}
        self.report = ""
        self.add_column(Text("[n]"), key="id", width=4)
        self.add_column("cited", key="cited", width=5)
        self.add_column("title", key="title")
        self.add_column("host", key="host", width=22)
        self.add_column("read", key="when", width=8)
        self.fit_columns()

    def reset(self) -> None:
        """Forget every source and citation."""
        self.clear()
        self.urls.clear()
        self.citations.clear()
        self.report = ""

    def add_source(self, source_id: int, title: str, url: str, when: datetime) -> None:
        """Add a page the first time it is read."""
        key = str(source_id)
        if key in self.urls:
            return
        self.urls[key] = url
        read = when.astimezone().strftime("%H:%M:%S")
        self.add_row(cell(f"[{source_id}]"), cell(""), cell(_line(title)), cell(_host(url)), cell(read), key=key)

    def sync(self, sources: list[Source], citations: Iterable[Citation] = (), report: str = "") -> None:
        """Add any source not listed yet, and mark those the report cites: ✓ (and how often), or ⚠ unsupported/all."""
        self.citations.clear()
        for citation in citations:
            if citation.source_id is not None:
                self.citations.setdefault(citation.source_id, []).append(citation)
        self.report = report
        for source in sources:
            self.add_source(source.id, source.title, source.final_url, source.fetched_at)
            cited = self.citations.get(source.id, [])
            if not (source.cited or cited):
                continue
            key = str(source.id)
            self.update_cell(key, "id", cell(f"[{source.id}]", "bold green"))
            unsupported = sum(not c.supported for c in cited)
            if unsupported:
                self.update_cell(key, "cited", cell(f"⚠ {unsupported}/{len(cited)}", "bold yellow"))
            else:
                self.update_cell(key, "cited", cell("✓" if len(cited) < 2 else f"✓ {len(cited)}", "green"))

    def selected_url(self) -> str | None:
        """URL of the row under the cursor."""
        key = self.selected_key()
        return self.urls.get(key) if key else None

    def selected_key(self) -> str | None:
        """Key (the source id) of the row under the cursor."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def detail(self, key: str) -> Text:
        """The source's address and how the report cites it: each unsupported citation with what the page lacks."""
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(f"[{key}] ", style="bold")
        text.append(flat(self.urls.get(key, ""), 300))
        cited = self.citations.get(int(key), []) if key.isdigit() else []
        unsupported = [c for c in cited if not c.supported]
        if cited:
            text.append(f"  cited {len(cited)}×", style="green" if not unsupported else "")
        for citation in unsupported[:4]:
            text.append("\n")
            text.append_text(unsupported_line(citation, self.report))
        if len(unsupported) > 4:
            text.append(f"\n… and {len(unsupported) - 4} more: the end of the report lists them all", style="dim")
        return text


def unsupported_line(citation: Citation, report: str) -> Text:
    """⚠ [2] lacks 1450, “forty-two lines”: “…the sentence it cites for”; one line of plain text, never markup."""
    line = Text("⚠ ", style="bold yellow", no_wrap=True, overflow="ellipsis", end="")
    line.append(flat(citation.text, 120), style="bold")
    line.append(" lacks ")
    line.append(", ".join(flat(item, 80) for item in citation.missing[:8]) or "what it says", style="yellow")
    if len(citation.missing) > 8:
        line.append(f" and {len(citation.missing) - 8} more", style="yellow")
    claim = claim_before(report, citation)
    if claim:
        line.append(f": “{claim}”", style="dim")
    return line


def unverified_line(citation: Citation) -> Text:
    """✗ [3](https://…) never read; one line of plain text, never markup."""
    line = Text("✗ ", style="bold red", no_wrap=True, overflow="ellipsis", end="")
    line.append(flat(citation.text, 200), style="bold")
    target = flat(citation.target, 200)
    if target and target not in citation.text:
        line.append(f" → {target}")
    line.append(" never read", style="red")
    return line


def to_check(result: ResearchResult) -> tuple[list[Citation], list[Citation]]:
    """The report's citations pointing at nothing the run read, and those whose page lacks their claim."""
    unverified = [c for c in result.citations if not c.verified]
    return unverified, [c for c in result.citations if c.verified and not c.supported]


def citation_notes(result: ResearchResult) -> Text | None:
    """The report's citations to check: those pointing at nothing the run read, then those their page lacks."""
    unverified, unsupported = to_check(result)
    if not unverified and not unsupported:
        return None
    counts = [f"{len(unverified)} never read"] if unverified else []
    counts += [f"{len(unsupported)} unsupported by the page cited"] if unsupported else []
    text = Text(f"Citations to check ({', '.join(counts)})", style="bold", end="")
    for citation in unverified:
        text.append("\n")
        text.append_text(unverified_line(citation))
    for citation in unsupported:
        text.append("\n")
        text.append_text(unsupported_line(citation, result.report))
    text.no_wrap, text.overflow = False, "fold"  # the full lines wrap here: this list is where they are read
    return text


_SENTENCE_END = re.compile(r"[.!?。！？](?=\s)|\n")


def claim_before(report: str, citation: Citation, limit: int = 90) -> str:
    """The text the citation follows, from its sentence's start (its last `limit` characters), as one line."""
    start = max(0, min(citation.start, len(report)))
    window = report[max(0, start - 400) : start]
    ends = list(_SENTENCE_END.finditer(window))
    claim = flat(window[ends[-1].end() :] if ends else window, 10_000).strip()
    return claim if len(claim) <= limit else "…" + claim[-limit:].lstrip()


class SaveReport(ModalScreen[str | None]):
    """Ask where to save the report."""

    def __init__(self, default: str):
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="save-dialog"):
            yield Label("Save the report as Markdown:")
            yield Input(self.default, id="save-path")
            with Horizontal(id="save-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value.strip() if event.button.id == "save" else None)

    def key_escape(self) -> None:
        self.dismiss(None)


class SessionsTable(FitTable):
    """The journaled runs, newest first."""

    FLEX = "question"

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_column("id", key="id", width=8)
        self.add_column("started", key="started", width=16)
        self.add_column("status", key="status", width=11)
        self.add_column(Text("turns", justify="right"), key="turns", width=5)
        self.add_column("question", key="question")
        self.fit_columns()

    def show(self, runs: list[RunSummary]) -> None:
        """List `runs` in their order."""
        self.clear()
        for run in runs:
            started = run.started_at.astimezone().strftime("%Y-%m-%d %H:%M")
            turns = Text(str(run.turns), justify="right", no_wrap=True, end="")
            status = cell(run.status, STATUS_STYLES.get(run.status, ""))
            row = (cell(flat(run.id, 16)), cell(started), status, turns, cell(flat(run.question, 500)))
            self.add_row(*row, key=run.id)


class SessionsScreen(ModalScreen[RunSummary | None]):
    """The runs journaled in the data dir; Enter resumes an interrupted or failed one, or shows a finished one."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, data_dir: Path, listing: Listing, refusal: Callable[[RunSummary], str | None]):
        super().__init__()
        self.data_dir, self.listing, self.refusal = data_dir, listing, refusal
        self.runs: dict[str, RunSummary] = {}
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions-dialog") as dialog:
            dialog.border_title = "Sessions"
            yield Static(cell(f"Runs journaled in {self.data_dir}", "dim"), id="sessions-where", markup=False)
            yield SessionsTable(id="sessions-table")
            yield Static(cell("Reading the journals…", "dim"), id="sessions-note", markup=False)
            yield Static(
                cell("Enter: resume (failed, interrupted) or show (finished) · Esc: close", "dim"),
                id="sessions-hint",
                markup=False,
            )

    def on_mount(self) -> None:
        self.query_one(SessionsTable).focus()
        self._read()

    @work(thread=True, exclusive=True, group="sessions")
    def _read(self) -> None:
        """Read the journals off the UI thread (a data dir may hold many)."""
        try:
            runs, problems = self.listing()
        except Exception as exc:  # an unreadable runs folder: a line on the screen, never a crash
            runs, problems = [], [f"cannot list the runs: {getattr(exc, 'strerror', None) or exc}"]
        with contextlib.suppress(RuntimeError):  # the app closed meanwhile
            self.app.call_from_thread(self._show, runs, problems)

    def _show(self, runs: list[RunSummary], problems: list[str]) -> None:
        if not self.is_attached:  # closed before the journals were read
            return
        self.runs = {run.id: run for run in runs}
        self.query_one(SessionsTable).show(runs)
        note = Text(end="", no_wrap=True, overflow="ellipsis")
        if not runs and not problems:
            note.append("No runs yet: every run is journaled here as it goes (unless --no-journal).", style="dim")
        if problems:
            unreadable = f"{len(problems)} journal{'s' if len(problems) > 1 else ''} could not be read"
            note.append(f"{unreadable} (rumination sessions lists them):", style="yellow")
            for problem in problems[:3]:
                note.append("\n")
                note.append(f"✗ {flat(problem, 300)}", style="yellow")
            if len(problems) > 3:
                note.append(f"\n… and {len(problems) - 3} more", style="yellow")
        box = self.query_one("#sessions-note", Static)
        box.update(note)
        box.display = bool(note.plain)
        self.loaded = True

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        run = self.runs.get(event.row_key.value or "")
        if run is None:
            return
        refusal = self.refusal(run)
        if refusal:
            self.notify(refusal, severity="warning")
        else:
            self.dismiss(run)

    def action_close(self) -> None:
        """Close the list."""
        self.dismiss(None)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _line(text: str) -> str:
    """The first line of `text` (a cell shows one), capped so measuring it stays cheap."""
    return text.strip().split("\n", 1)[0][:500]


def flat(text: str, limit: int) -> str:
    """`text` on one line (every run of whitespace one space), at most `limit` characters."""
    text = " ".join(terminal_safe(text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
