"""The TUI's panels: per-turn thinking, tool timeline, sources, status line, save dialog."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from urllib.parse import urlsplit

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, DataTable, Input, Label, Static
from textual.widgets.data_table import ColumnKey

from rumination import events as ev
from rumination.results import Source


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
        self.add_row(cell(str(event.turn)), cell(tool), status, detail, key=str(event.turn))
        self.move_cursor(row=self.row_count - 1)

    def observed(self, event: ev.ObservationEvent) -> None:
        """The call finished: show what it produced, errors distinct from successes."""
        key = str(event.turn)
        if event.ok and event.results is not None:
            detail = cell(f"{self.get_cell(key, 'detail')} → {event.results} results")
            self.update_cell(key, "detail", detail)
        elif event.ok and event.tool == "open":
            self.update_cell(key, "detail", cell(f"{event.url} · {_line(event.title or '')}"))
        elif event.ok and event.title:
            self.update_cell(key, "detail", cell(f"{_line(event.title)} ({_host(event.url or '')})"))
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
    """Every page the run read; Enter opens the selected one in the system browser."""

    FLEX = "title"

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.urls: dict[str, str] = {}
        self.add_column(Text("[n]"), key="id", width=4)
        self.add_column("title", key="title")
        self.add_column("host", key="host", width=22)
        self.add_column("read", key="when", width=8)
        self.fit_columns()

    def add_source(self, source_id: int, title: str, url: str, when: datetime) -> None:
        """Add a page the first time it is read."""
        key = str(source_id)
        if key in self.urls:
            return
        self.urls[key] = url
        read = when.astimezone().strftime("%H:%M:%S")
        self.add_row(cell(f"[{source_id}]"), cell(_line(title)), cell(_host(url)), cell(read), key=key)

    def sync(self, sources: list[Source]) -> None:
        """Mark the sources the report cites."""
        for source in sources:
            self.add_source(source.id, source.title, source.final_url, source.fetched_at)
            if source.cited:
                self.update_cell(str(source.id), "id", cell(f"[{source.id}]", "bold green"))

    def selected_url(self) -> str | None:
        """URL of the row under the cursor."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.urls.get(key or "")


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


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _line(text: str) -> str:
    """The first line of `text` (a cell shows one), capped so measuring it stays cheap."""
    return text.strip().split("\n", 1)[0][:500]
