"""ResearchApp: the research TUI, a consumer of the event stream like the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import webbrowser
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, Markdown, Static, TabbedContent, TabPane

from rumination import events as ev
from rumination import journal
from rumination.config import Config
from rumination.errors import BackendError, ConfigError, RuminationError
from rumination.results import ResearchResult
from rumination.tui.panels import (
    Listing,
    SaveReport,
    SessionsScreen,
    SourcesTable,
    ThinkingLog,
    Timeline,
    citation_notes,
    flat,
    to_check,
    unsupported_line,
    unverified_line,
)
from rumination.urls import is_local

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
WIDE = 100  # columns from which the status line also draws the context bar
CONFIG_ADVICE = (
    "This is a setting: fix the flag, RUMINATION_* variable or config file (rumination config lists them all), "
    "then start the app again."
)
BUG_ADVICE = "This is unexpected: please report it with the message above. Press n to ask again."
SEARCH_ADVICE = (
    "The model was told and may search again. If it keeps failing, check --search and its settings "
    "(rumination search QUERY tries the engine alone)."
)


class ResearchApp(App[str | None]):
    """Ask a question, watch the model think, search and read, and get the report."""

    TITLE = "Rumination"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: a subclass elsewhere (tools/demo.py) finds it too
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("f", "finish_now", "Finish now"),
        Binding("x", "stop_now", "Stop"),
        Binding("ctrl+s", "save_report", "Save"),
        Binding("y", "copy_report", "Copy"),
        Binding("n", "new_question", "New"),
        Binding("h", "sessions", "Sessions"),
        Binding("t", "show_tab('thinking')", "Thinking", show=False),
        Binding("l", "show_tab('timeline')", "Timeline", show=False),
        Binding("s", "show_tab('sources')", "Sources", show=False),
        Binding("r", "show_tab('report')", "Report", show=False),
        Binding("o", "open_source", "Open source", show=False),
        Binding("escape", "dismiss_error", "Dismiss", show=False),
    ]

    def __init__(self, config: Config, question: str = "", researcher: Any = None, theme: str | None = None):
        super().__init__(ansi_color=theme is None)
        self.config, self.initial_question = config, question
        self._researcher = researcher
        self._theme_name = theme or terminal_theme()
        self.result: ResearchResult | None = None
        self.phase = "idle"  # idle | loading | running | reporting | done | stopped | failed
        self._status_message = ""
        self._run_started = 0.0
        self._turn = self._max_turns = self._ctx_tokens = self._window = 0
        self._tokens_per_s: float | None = None
        self._backend = self._model = ""
        self._report = self._pending_report = ""
        self._kept: str | None = None  # the report text last saved or copied
        self._redraw_report = False
        self._run_id = 0  # counts the runs started (and finished runs shown) here: a stale worker's posts are dropped
        self._run_label = ""  # "run <journal id>" once RunStarted names it
        self._replaying = False  # showing recorded events: no toasts or warning boxes for what happened then
        self._stop_requested = False
        self._elapsed_final = 0.0
        self._load_progress = False  # the backend reports loading progress: a real model is loading
        self._worker_loop: asyncio.AbstractEventLoop | None = None
        self._worker_task: asyncio.Task[Any] | None = None
        self.clock = time.monotonic  # replaceable, so screens can be pinned in tests

    def compose(self) -> ComposeResult:
        with Horizontal(id="question-row"):
            yield Input(self.initial_question, placeholder="Ask a research question and press Enter", id="question")
        with TabbedContent(initial="thinking"):
            with TabPane("Thinking", id="thinking"):
                yield Static("", id="banner")
                yield ThinkingLog()
            with TabPane("Timeline", id="timeline"):
                yield Timeline()
            with TabPane("Sources", id="sources"):
                yield SourcesTable()
                yield Static("", id="source-detail", markup=False)
            with TabPane("Report", id="report"), VerticalScroll(id="report-scroll"):
                yield Static("The report appears here as it is written.", id="empty-report")
                yield Markdown("", id="report-md")
                yield Static("", id="citations", markup=False)
        yield Static("", id="error", markup=False)
        with Horizontal(id="status-bar"):
            yield Static("", id="status", markup=False)
            yield Static("", id="status-right", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.theme = self._theme_name
        self.set_interval(0.1, self._tick)
        self._refresh_status()
        if self.initial_question.strip():
            self.start(self.initial_question)
        else:
            self.query_one("#question", Input).focus()

    # --- running research -------------------------------------------------------------------------

    @property
    def researcher(self) -> Any:
        """One Researcher for the app's life, so a loaded model serves every question."""
        if self._researcher is None:
            from rumination.agent import Researcher

            self._researcher = Researcher(self.config)
        return self._researcher

    @property
    def running(self) -> bool:
        return self.phase in ("loading", "running", "reporting")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "question":
            return
        if self.running:
            self.notify("A run is in progress: press f to finish it now, or x to stop it.", severity="warning")
        else:
            self.start(event.value)

    def start(self, question: str) -> None:
        """Start researching `question` in a thread worker."""
        question = question.strip()
        if not question:
            self.notify("Type a question first.", severity="warning")
            return
        self._clear()
        self._launch(question, "starting")

    def resume(self, run_id: str, question: str = "") -> None:
        """Continue the interrupted or failed run `run_id` in a thread worker, its events shown like a fresh run's."""
        self._clear(question)
        self._run_label = f"run {run_id}"
        self._launch(question, f"resuming run {run_id}", run_id)

    def _launch(self, question: str, status: str, resume: str | None = None) -> None:
        """Start the research worker (a new run, or resuming run `resume`) on cleared panels."""
        self.phase, self._status_message, self._run_started = "running", status, self.clock()
        researcher = self._prepared_researcher()
        if researcher is None:
            return
        self.query_one(TabbedContent).active = "thinking"
        self.query_one(ThinkingLog).focus()
        self._research(researcher, question, self._run_id, resume=resume)

    def _clear(self, question: str | None = None) -> None:
        """Forget the last run: a clean slate in every panel (`question` goes in the question box)."""
        self._run_id += 1
        self.result, self._report, self._pending_report, self._tokens_per_s = None, "", "", None
        self._kept, self._run_label = None, ""
        self._backend, self._model, self._elapsed_final, self._stop_requested = "", "", 0.0, False
        self._load_progress = False
        self._show_error(None)
        self._turn = self._ctx_tokens = self._max_turns = self._window = 0
        self.query_one(ThinkingLog).clear()
        self.query_one(Timeline).clear()
        self.query_one(SourcesTable).reset()
        self.query_one("#source-detail", Static).display = False
        self.query_one("#report-md", Markdown).update("")
        self.query_one("#citations", Static).display = False
        self.query_one("#empty-report").display = True
        box = self.query_one("#question", Input)
        if question is not None:
            box.value = question
        box.cursor_position = 0  # show the question's start, not its end

    def _prepared_researcher(self) -> Any:
        """The researcher (a resume's settings are its own for that stream only); None when it cannot be built."""
        try:
            return self.researcher  # built here, on the UI thread
        except RuminationError as exc:  # e.g. an unknown backend, or the scripted one without a script
            self._ended("failed", str(exc), _advice(exc))
            return None

    @work(thread=True, exclusive=True, group="research")
    def _research(self, researcher: Any, question: str, run_id: int, resume: str | None = None) -> None:
        """Run the async research loop (or resume run `resume`) on this worker thread's own event loop."""

        async def consume() -> None:
            task = asyncio.current_task()
            self._worker_loop, self._worker_task = asyncio.get_running_loop(), task
            if self._stop_requested:  # "stop" was pressed before the loop existed
                raise asyncio.CancelledError
            log = None if resume is None else journal.load(self.config.data_dir, resume)
            if log is not None:  # the turns done before: shown first, as they were
                self._post(run_id, self._show_before_resume, log)
            stream = researcher.resume_stream(log) if log is not None else researcher.stream(question)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    self._post(run_id, self.on_research_event, event)

        try:
            asyncio.run(consume())
        except asyncio.CancelledError:
            self._post(run_id, self._ended, "stopped", "stopped by the user; no report" + self._resume_hint())
        except RuminationError as exc:
            self._post(run_id, self._ended, "failed", str(exc), _advice(exc))
        except Exception as exc:  # shown in the app, never as a traceback over the screen
            self._post(run_id, self._ended, "failed", f"{type(exc).__name__}: {exc}", BUG_ADVICE)
        finally:
            if run_id == self._run_id:
                self._worker_loop = self._worker_task = None

    def _post(self, run_id: int, callback: Any, *args: Any) -> None:
        """Run `callback` on the UI thread, unless the app has closed or a newer run has started."""
        if run_id != self._run_id or not self.is_running:
            return
        with contextlib.suppress(RuntimeError):
            self.call_from_thread(lambda: run_id == self._run_id and callback(*args))

    async def action_quit(self) -> None:
        """Quit at once: a running research is stopped first; report text neither saved nor copied is handed back."""
        report = self.result.report if self.result is not None else self._report
        self.action_stop_now()
        self.exit(report if report.strip() and report != self._kept else None)

    def _resume_hint(self) -> str:
        return "; h lists the runs to resume it" if self._run_label else ""

    def _ended(self, state: str, message: str, advice: str = "") -> None:
        self._show_pending_report()
        self._stop_clock()
        self.phase, self._status_message = state, message
        if state == "failed":  # kept on screen under the panel that was showing, with its advice (no toast too)
            self._show_error("The run failed", message, advice)
        else:
            self.notify(message, severity="warning", timeout=8)
        self._refresh_status()
        self.refresh_bindings()

    def _show_error(self, title: str | None, message: str = "", advice: str = "", severity: str = "error") -> None:
        """Show a problem in the box above the status line until the next run (None hides it)."""
        box = self.query_one("#error", Static)
        box.display = title is not None
        box.set_class(severity == "warning", "-warning")
        if title is not None:
            box.border_title = title
            box.update(f"{message}\n{advice}" if advice else message)

    def _stop_clock(self) -> None:
        """Freeze the elapsed time where the live clock stood, so it never jumps back."""
        if self.running:
            self._elapsed_final = max(0.0, self.clock() - self._run_started)

    # --- events -----------------------------------------------------------------------------------

    def on_research_event(self, event: ev.Event) -> None:
        """Route one event to the panels (the only way research reaches the screen)."""
        thinking, timeline = self.query_one(ThinkingLog), self.query_one(Timeline)
        match event:
            case ev.StatusEvent(message=message):
                self._status_message = message
                if not self._backend:  # statuses before RunStarted come from loading the model
                    self.phase = "loading"
                    # Only a backend that reports its progress (a real model load) gets the banner.
                    self._load_progress = self._load_progress or event.transient
            case ev.RunStarted():
                self.phase, self._status_message = "running", ""  # the spinner and the turn say it
                self._max_turns, self._window = event.max_turns, event.context_window
                self._backend, self._model = event.backend, event.model
                self._run_label = f"run {flat(event.run_id, 40)}" if event.run_id else self._run_label
                if event.resumed_after is not None:  # says so until the report or the end replaces it
                    self._status_message = f"resumed {self._run_label or 'the run'} after {event.resumed_after} turns"
                    self.query_one("#question", Input).value = event.question
            case ev.TurnStarted():
                thinking.start_turn(event.turn, event.prompt_tokens, event.report)
                self._ctx_tokens = event.prompt_tokens
                if event.report:
                    self.phase, self._status_message = "reporting", "writing the report"
                else:
                    self._turn = event.turn
            case ev.ThinkingDelta(text=text):
                thinking.append(text)
            case ev.ToolCallEvent():
                timeline.call(event)
            case ev.ObservationEvent():
                timeline.observed(event)
                if event.error == "search" and not self._replaying:
                    reason = event.observation.removeprefix("Error: ")
                    self._show_error(f"Search failed (turn {event.turn})", reason, SEARCH_ADVICE, "warning")
                if event.ok and event.source_id is not None:
                    self.query_one(SourcesTable).add_source(
                        event.source_id, event.title or "", event.url or "", event.at
                    )
            case ev.TurnFinished(usage=usage):
                self._ctx_tokens = event.context_tokens
                if usage.decode_tokens_per_second is not None:
                    self._tokens_per_s = usage.decode_tokens_per_second
                elif usage.seconds > 0:
                    self._tokens_per_s = usage.generated_tokens / usage.seconds
            case ev.ForcedFinish():
                timeline.forced(event)
                if not self._replaying:
                    self.notify(f"Writing the report now: {event.detail}", severity="warning")
            case ev.ReportDelta(text=text):
                if event.reset:  # what was streamed so far turned out to be thinking: start the report again
                    self._report = self._pending_report = ""
                    self._redraw_report = True  # Markdown.append would slice by the old text's line count
                if not self._report:
                    self.query_one(TabbedContent).active = "report"
                    self.query_one("#empty-report").display = False
                    text = text.lstrip()
                self._report += text
                self._pending_report += text
            case ev.RunFinished(result=result):
                self._finish(result)
            case ev.ErrorEvent(message=message, fatal=False):
                self._show_error("Warning", message, severity="warning")
            case ev.ErrorEvent(message=message):  # the run ends with what it read: RunFinished follows
                self._show_error("The run failed", message, "Press n to try again, or Ctrl+Q to quit.")
        self._refresh_status()
        self.refresh_bindings()

    def _finish(self, result: ResearchResult) -> None:
        self._stop_clock()
        self.result, self.phase = result, "done"
        if result.run_id:
            self._run_label = f"run {flat(result.run_id, 40)}"
        self._status_message = f"done: {result.stop_reason.replace('_', ' ')}"
        if result.error:
            self.phase, self._status_message = "failed", f"failed: {result.error}"
        self._report, self._pending_report, self._redraw_report = result.report, "", False
        self.query_one(ThinkingLog).flush()
        self.query_one("#report-md", Markdown).update(result.report or "*The model wrote no report.*")
        self.query_one("#empty-report").display = False
        sources = self.query_one(SourcesTable)
        sources.sync(result.sources, result.citations, result.report)
        self._show_source_detail()
        notes = self.query_one("#citations", Static)
        notes.display = (text := citation_notes(result)) is not None
        notes.update(text or "")
        if result.error:
            pass
        elif result.citations:
            self._warn_citations(result)
        elif result.unverified_urls:  # a result whose citations were not checked: the links it never read
            links = "\n".join(result.unverified_urls[:8]) + ("\n…" if len(result.unverified_urls) > 8 else "")
            advice = "Check them before you trust those parts of the report."
            self._show_error("Links the run never read", links, advice, "warning")
        self.query_one(TabbedContent).active = "report"
        if not isinstance(self.focused, Input):  # never pull focus from someone typing the next question
            self.query_one("#report-scroll").focus()

    def _warn_citations(self, result: ResearchResult) -> None:
        """The citations to check, in the warning box: those that point at nothing read, then those unsupported."""
        unverified, unsupported = to_check(result)
        lines = [unverified_line(c).plain for c in unverified] + [unsupported_line(c, "").plain for c in unsupported]
        if not lines:
            return
        shown = "\n".join(lines[:4]) + (f"\n… and {len(lines) - 4} more" if len(lines) > 4 else "")
        advice = "Check them before you trust those parts of the report: its end lists them; Sources (s) marks them."
        self._show_error("Citations to check", shown, advice, "warning")

    def _show_source_detail(self) -> None:
        """Under the sources: the selected one's address and its unsupported citations."""
        sources, detail = self.query_one(SourcesTable), self.query_one("#source-detail", Static)
        key = sources.selected_key()
        detail.display = key is not None
        if key is not None:
            detail.update(sources.detail(key))

    def on_data_table_row_highlighted(self, event: SourcesTable.RowHighlighted) -> None:
        if isinstance(event.data_table, SourcesTable):
            self._show_source_detail()

    # --- recorded runs ----------------------------------------------------------------------------

    def _replay(self, events: Iterable[ev.Event]) -> None:
        """Show recorded events through the panels as a run showed them, quietly and with thinking merged per turn."""
        self._replaying = True
        try:
            for event in _merged(events):
                self.on_research_event(event)
        finally:
            self._replaying = False

    def _show_before_resume(self, log: journal.RunLog) -> None:
        """The turns a resumed run had completed, shown before it continues."""
        done = log.state.turn
        self._replay(e for e in log.events if isinstance(e, ev.RunStarted) or 0 < (_turn_of(e) or 0) <= done)
        self.phase, self._status_message = "running", f"resuming run {log.id} after {done} turns"
        self._backend = self._model = ""  # RunStarted says them again, after any loading of the model

    def open_run(self, run_id: str) -> None:
        """Show the finished run `run_id` from its journal: its report, sources and turns; nothing runs."""
        self._run_id += 1
        self._read_run(run_id, self._run_id)

    @work(thread=True, exclusive=True, group="journal")
    def _read_run(self, run_id: str, token: int) -> None:
        try:
            log = journal.load(self.config.data_dir, run_id)
        except RuminationError as exc:
            self._post(token, partial(self.notify, severity="error"), f"Cannot show run {run_id}: {exc}")
            return
        self._post(token, self.show_run, log)

    def show_run(self, log: journal.RunLog) -> None:
        """Show a recorded run that ended (the panels as they were when it finished)."""
        result = log.result
        if result is None:
            self.notify(f"Run {log.id} has not finished: it is {log.status}.", severity="warning")
            return
        self._clear(log.header.question)
        self._run_started = self.clock()
        self._replay(e for e in log.events if not isinstance(e, ev.RunFinished))
        self.phase = "running"  # so that _finish stops the clock it then sets from the result's times
        self._finish(result)
        self._elapsed_final = max(0.0, (result.finished_at - result.started_at).total_seconds())
        self._refresh_status()
        self.refresh_bindings()

    def action_sessions(self) -> None:
        """List the journaled runs: resume an interrupted one, or look at a finished one."""
        self.open_sessions()

    def open_sessions(self, listing: Listing | None = None) -> None:
        """Open the sessions list (`listing` replaces reading the data dir, e.g. in tests)."""
        data_dir = self.config.data_dir
        screen = SessionsScreen(
            Path(data_dir).expanduser() / journal.RUNS,
            listing or partial(journal.summaries, data_dir),
            self._session_refusal,
        )
        self.push_screen(screen, self._session_chosen)

    def _session_refusal(self, run: journal.RunSummary) -> str | None:
        """Why the run picked in the sessions list cannot be opened now, or None."""
        if run.status == "running":
            if self.running and self._run_label == f"run {run.id}":
                return f"Run {run.id} is the one running here now."
            return f"Run {run.id} is running in another rumination process: it can be opened here once it ends."
        if self.running:
            return "A run is in progress here: press f to finish it now, or x to stop it, then pick this one."
        return None

    def _session_chosen(self, run: journal.RunSummary | None) -> None:
        if run is None:
            return
        if run.status == "finished":
            self.open_run(run.id)
        elif run.status in ("interrupted", "failed"):
            self.resume(run.id, run.question)

    def _tick(self) -> None:
        """Redraw streaming text and the status line at a steady rate."""
        try:
            self.query_one(ThinkingLog).flush()
            self._show_pending_report()
            if self.running:
                self._refresh_status()
        except NoMatches:  # the interval can fire once more while the app tears its widgets down on exit
            return

    def _show_pending_report(self) -> None:
        """Append newly streamed report text (Markdown.append parses only the new part); after a reset, redraw."""
        if self._redraw_report:
            self._redraw_report, self._pending_report = False, ""
            self.query_one("#report-md", Markdown).update(self._report)
        elif self._pending_report:
            self.query_one("#report-md", Markdown).append(self._pending_report)
            self._pending_report = ""

    def _refresh_status(self) -> None:
        banner = self.query_one("#banner", Static)
        banner.display = self.phase == "loading" and self._load_progress
        if banner.display:
            banner.update(
                f"{self._status_message}\n\nLoading a large model takes minutes; the line above shows what it is "
                "doing. Press x to cancel."
            )
        self.query_one("#status-bar").set_class(self.phase == "failed", "-error")
        # The left part ends in an ellipsis when the line is too long; the right part (clock, model) never does.
        parts = [self._run_label] if self._run_label and self._run_label not in self._status_message else []
        parts += [self._status_message] if self._status_message else []
        if self._max_turns:
            parts.append(f"turn {self._turn}/{self._max_turns}")
        if self._window:
            ctx = f"ctx {_k(self._ctx_tokens)}/{_k(self._window)}"
            if self.size.width >= WIDE:
                filled = round(min(1.0, self._ctx_tokens / self._window) * 6)
                ctx += " " + "█" * filled + "░" * (6 - filled)
            parts.append(ctx)
        if self._tokens_per_s is not None:
            parts.append(f"{self._tokens_per_s:.1f} tok/s")
        line = " │ ".join(parts)
        if self.running:
            line = f"{SPINNER[int(self.clock() * 10) % len(SPINNER)]} {line}"
        self.query_one("#status", Static).update(line or "ready")
        right = []
        if self.phase != "idle":
            seconds = self.clock() - self._run_started if self.running else self._elapsed_final
            right.append(f"{int(seconds // 60):02d}:{int(seconds % 60):02d}")
        if self._backend:
            right.append(model_label(self._backend, self._model))
        self.query_one("#status-right", Static).update(" │ ".join(right))

    def on_resize(self) -> None:
        with contextlib.suppress(NoMatches):  # a resize can arrive before the widgets exist
            self._refresh_status()

    # --- actions ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "finish_now":
            return self.phase == "running"
        if action == "stop_now":
            return self.running
        if action in ("save_report", "copy_report"):
            return bool(self._report)
        if action == "dismiss_error":
            return bool(self.query_one("#error").display)
        return True

    def action_finish_now(self) -> None:
        """Stop researching and write the report from what was gathered."""
        if self.phase == "running":
            self.researcher.request_finish()
            self._status_message = "finishing: writing the report from what was gathered"
            self.notify("Finishing: the report will be written from what was gathered.")

    def action_stop_now(self) -> None:
        """Abandon the run at once, without a report."""
        if not self.running:
            return
        self._stop_requested, self._status_message = True, "stopping"
        loop, task = self._worker_loop, self._worker_task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have just finished
                loop.call_soon_threadsafe(task.cancel)

    def action_save_report(self) -> None:
        """Save the report as Markdown (asks for the path)."""
        if not self._report:
            self.notify("There is no report yet.", severity="warning")
            return
        default = f"report-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
        self.push_screen(SaveReport(default), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if not path:
            return
        try:
            target = Path(path).expanduser()
            target.write_text(self._report.rstrip() + "\n", encoding="utf-8")
        except OSError as exc:
            self.notify(f"Could not save the report: {exc.strerror or exc}", severity="error")
            return
        self._kept = self._report
        self.notify(f"Saved the report to {target}")

    def action_copy_report(self) -> None:
        """Copy the report to the clipboard."""
        if self._report:
            self.copy_to_clipboard(self._report)
            self._kept = self._report
            self.notify("Sent the report to the clipboard (terminals without OSC 52 ignore it; Ctrl+S saves it).")

    def action_new_question(self) -> None:
        """Focus the question box with its text selected, so typing replaces it."""
        question = self.query_one("#question", Input)
        question.focus()
        question.select_all()

    def action_show_tab(self, tab: str) -> None:
        """Switch to a panel and focus it, so its keys work at once."""
        self.query_one(TabbedContent).active = tab
        target = {"thinking": ThinkingLog, "timeline": Timeline, "sources": SourcesTable}.get(tab)
        self.query_one(target if target else "#report-scroll").focus()

    def action_dismiss_error(self) -> None:
        """Hide the error box."""
        self._show_error(None)
        self.refresh_bindings()

    def action_open_source(self) -> None:
        """Open the selected source in the system browser, and say what happened."""
        url = self.query_one(SourcesTable).selected_url()
        if not url:
            self.notify("No source is selected: the Sources panel (s) lists the pages read.", severity="warning")
        elif is_local(url):
            self.notify(f"{url} is a document in a local index: it has no web address to open in a browser.")
        elif self.browse(url):
            self.notify(f"Opened {url} in your browser.")
        else:
            self.copy_to_clipboard(url)
            self.notify(
                f"No browser is available to open {url}; sent the address to the clipboard instead.",
                severity="warning",
            )

    def browse(self, url: str) -> bool:
        """Open `url` in a graphical browser; False when there is none."""
        try:
            browser = webbrowser.get()
        except webbrowser.Error:  # none registered
            return False
        if type(browser) is webbrowser.GenericBrowser:  # a terminal browser: it would take over this screen
            return False
        return browser.open(url)

    def on_data_table_row_selected(self, event: SourcesTable.RowSelected) -> None:
        if isinstance(event.data_table, SourcesTable):
            self.action_open_source()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Finish now", "Stop researching and write the report", self.action_finish_now)
        yield SystemCommand("Stop now", "Abandon the run without a report", self.action_stop_now)
        yield SystemCommand("Save report", "Save the report as a Markdown file", self.action_save_report)
        yield SystemCommand("Copy report", "Copy the report to the clipboard", self.action_copy_report)
        yield SystemCommand("New question", "Ask another question", self.action_new_question)
        yield SystemCommand("Open source", "Open the selected source in the browser", self.action_open_source)
        yield SystemCommand("Sessions", "The journaled runs: resume one, or show a finished one", self.action_sessions)
        for tab, what in (
            ("thinking", "the model's thinking, turn by turn"),
            ("timeline", "the tool calls and their results"),
            ("sources", "the pages read"),
            ("report", "the report"),
        ):
            yield SystemCommand(f"Show {tab.title()}", f"Show {what}", partial(self.action_show_tab, tab))


def _merged(events: Iterable[ev.Event]) -> Iterator[ev.Event]:
    """Recorded events to show again: a turn's thinking as one delta; no statuses, errors or report deltas."""
    thinking: list[ev.ThinkingDelta] = []
    for event in events:
        if thinking and not (isinstance(event, ev.ThinkingDelta) and event.turn == thinking[0].turn):
            yield thinking[0].model_copy(update={"text": "".join(delta.text for delta in thinking)})
            thinking = []
        if isinstance(event, ev.ThinkingDelta):
            thinking.append(event)
        elif not isinstance(event, ev.StatusEvent | ev.ErrorEvent | ev.ReportDelta):
            yield event
    if thinking:
        yield thinking[0].model_copy(update={"text": "".join(delta.text for delta in thinking)})


def _turn_of(event: ev.Event) -> int | None:
    """The tool turn an event belongs to, if it belongs to one."""
    if isinstance(event, ev.TurnFinished):
        return event.usage.turn
    return getattr(event, "turn", None)


def model_label(backend: str, model: str) -> str:
    """The model as the status line names it: its repo or folder name, after the backend when that adds to it."""
    name = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or model
    return name if backend in (name, "local") else f"{backend} · {name}"


def _advice(exc: RuminationError) -> str:
    """What to do about an error that ended a run, beyond its own message."""
    if isinstance(exc, ConfigError):
        return CONFIG_ADVICE
    if isinstance(exc, BackendError):
        return "Press n to try again, or Ctrl+Q to quit."
    return ""


def terminal_theme() -> str:
    """The ANSI theme matching the terminal's background, from COLORFGBG where the terminal sets it."""
    background = os.environ.get("COLORFGBG", "").rsplit(";", 1)[-1]
    return "ansi-light" if background.isdigit() and int(background) in (7, *range(9, 16)) else "ansi-dark"


def check_theme(name: str) -> None:
    """Refuse an unknown Textual theme before the screen is taken over."""
    themes = App().available_themes
    if name not in themes:
        raise ConfigError(f"unknown theme {name!r}; choose one of: {', '.join(sorted(themes))}")


def _k(tokens: int) -> str:
    """131072 -> '131K', 4096 -> '4.1K'."""
    return f"{tokens / 1000:.0f}K" if tokens >= 10_000 else f"{tokens / 1000:.1f}K" if tokens >= 1000 else str(tokens)


def run_tui(config: Config, question: str = "", theme: str | None = None) -> str | None:
    """Run the TUI until the user quits; return report text that was neither saved nor copied, if any."""
    return ResearchApp(config, question, theme=theme).run()
