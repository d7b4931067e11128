"""The Textual TUI: Pilot-driven scripted runs against the local site, and snapshots of its screens."""

from __future__ import annotations

import re
import time
import webbrowser
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from conftest import closed_port, turn
from test_e2e import QUESTION, script
from textual.widgets import Collapsible, Input, Markdown, Static, TabbedContent

from rumination import events as ev
from rumination import journal
from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.errors import BackendError
from rumination.journal import RunSummary
from rumination.results import Citation, ResearchResult, Source, ToolCall, TurnUsage, Usage
from rumination.search.base import SearchHit
from rumination.tui.app import CONFIG_ADVICE, SEARCH_ADVICE, ResearchApp, model_label
from rumination.tui.panels import SessionsScreen, SessionsTable, SourcesTable, ThinkingLog, Timeline
from rumination.web.base import Page

REPORT = "\n<think>\nSummarise.\n</think>\n# Partial report\n\nWhat was gathered."


def _config(web) -> Config:
    return Config(
        backend="scripted",
        search="searxng",
        searxng_url=web.base,
        allow_private_network=True,
        open_any_url=True,
        allow_domains=["127.0.0.1"],
    )


def _app(web, outputs: list[str]) -> ResearchApp:
    cfg = _config(web)
    return ResearchApp(cfg, researcher=Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs)))


async def _until(pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (
            f"timed out waiting for the app: {pilot.app.phase} {_status(pilot.app)} {_error(pilot.app)}"
        )
        await pilot.pause(0.05)


def _status(app: ResearchApp) -> str:
    return str(app.query_one("#status", Static).content) + " │ " + str(app.query_one("#status-right", Static).content)


def _error(app: ResearchApp) -> str:
    """The error box's title and text, or '' while it is hidden."""
    box = app.query_one("#error", Static)
    return f"{box.border_title}: {box.content}" if box.display else ""


def _notes(app: ResearchApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_full_scripted_run_fills_every_panel(web, tmp_path):
    app = _app(web, script(web.base))
    banners: list[str] = []
    shown = app.on_research_event

    def watch(event: ev.Event) -> None:
        shown(event)
        banner = app.query_one("#banner", Static)
        banners.append(str(banner.content) if banner.display else "")

    app.on_research_event = watch  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.focused is app.query_one("#question", Input)
        await pilot.press(*"When did Gutenberg introduce movable type?")
        await pilot.press("enter")
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause()
        result = app.result
        assert result.stop_reason == "finished"

        blocks = app.query(Collapsible)
        assert [b.title.split(" · ")[0] for b in blocks] == ["Turn 1", "Turn 2", "Turn 3", "Turn 4", "Report"]
        assert [b.collapsed for b in blocks] == [True, True, True, True, False]
        first = blocks.first().query_one(".thinking", Static)
        assert str(first.content) == "I should search first."

        timeline = app.query_one(Timeline)
        assert timeline.row_count == 4
        assert str(timeline.get_cell("1", "detail")) == "“Gutenberg printing” → 3 results"
        assert str(timeline.get_cell("2", "detail")).startswith("Johannes Gutenberg and movable type (127.0.0.1:")
        assert str(timeline.get_cell("3", "detail")) == f"{web.base}/spread.html · How printing spread across Europe"
        assert str(timeline.get_cell("1", "status")).startswith("✓")

        sources = app.query_one(SourcesTable)
        assert sources.row_count == 2 and sources.urls["1"] == f"{web.base}/gutenberg.html"

        assert app.query_one(TabbedContent).active == "report"
        assert app.query_one("#report-md", Markdown).source == result.report
        status = _status(app)
        assert "done: finished" in status and "turn 4/35" in status and "tok/s" in status
        # A scripted backend loads in no time: no "large model" banner, ever.
        assert banners and not any(banners)


async def test_save_copy_and_open(web, tmp_path):
    app = _app(web, script(web.base))
    opened: list[str] = []
    app.browse = lambda url: opened.append(url) is None  # type: ignore[method-assign]  # not our browser to start
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: app.result is not None)
        await pilot.press("ctrl+s")
        await pilot.pause()
        dialog = app.screen.query_one("#save-path", Input)
        dialog.value = str(tmp_path / "report.md")
        await pilot.press("enter")
        await pilot.pause()
        assert (tmp_path / "report.md").read_text() == app.result.report + "\n"

        await pilot.press("y")
        assert app.clipboard == app.result.report

        await pilot.press("s")
        app.query_one(SourcesTable).focus()
        await pilot.press("down", "o")
        assert opened == [f"{web.base}/spread.html"]
        assert f"Opened {web.base}/spread.html in your browser." in _notes(app)


async def test_save_to_a_bad_path_is_an_in_app_error(web, tmp_path):
    app = _app(web, script(web.base))
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: app.result is not None)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#save-path", Input).value = str(tmp_path / "missing" / "r.md")
        await pilot.press("enter")
        await pilot.pause()
        assert any("Could not save" in n.message for n in app._notifications)


def _slow_script(web) -> list[str]:
    return [turn({"name": "open", "arguments": {"url": f"{web.base}/slow?delay=10"}}), REPORT]


async def test_finish_now_writes_the_report_from_what_was_gathered(web):
    app = _app(web, _slow_script(web))
    async with app.run_test(size=(100, 30)) as pilot:
        app.start("What about printing?")
        await _until(pilot, lambda: web.hits["/slow"] == 1 and app.query_one(Timeline).row_count == 1)
        await pilot.press("f")
        await _until(pilot, lambda: app.result is not None, timeout=8)
        assert app.result.stop_reason == "cancelled"
        assert app.result.report.startswith("# Partial report")
        assert str(app.query_one(Timeline).get_cell("1", "status")) == "✗ cancelled"


async def test_stop_now_abandons_the_run(web):
    app = _app(web, _slow_script(web))
    async with app.run_test(size=(100, 30)) as pilot:
        app.start("What about printing?")
        await _until(pilot, lambda: web.hits["/slow"] == 1)
        await pilot.press("x")
        await _until(pilot, lambda: app.phase == "stopped", timeout=8)
        assert app.result is None
        assert "stopped by the user" in _status(app)
        # The app is still usable: a new question can be asked.
        assert app.check_action("stop_now", ()) is False


async def test_a_failing_backend_is_shown_in_the_app(web):
    app = _app(web, [turn({"name": "search", "arguments": {"query": "Gutenberg"}})])  # no report output
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("q")
        await _until(pilot, lambda: app.phase == "failed")
        assert "ran out of outputs" in _status(app)
        assert app.query_one("#status-bar").has_class("-error")
        # The whole message and what to do stay on screen, whichever panel is showing, after the toast has gone.
        app.clear_notifications()
        await pilot.press("l")
        await pilot.pause()
        assert _error(app).startswith("The run failed: the script ran out of outputs")
        assert "generation 2 was asked for and the script has 1" in _error(app)
        assert "Press n to try again" in _error(app)
        assert app.query_one("#error").region.height >= 4  # message and advice, not one cut-off line
        await pilot.press("escape")
        assert _error(app) == ""


async def test_a_config_error_is_shown_with_its_advice():
    app = ResearchApp(Config(backend="scripted"))  # no --script: the backend cannot be built
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q", "enter")
        await pilot.pause()
        assert app.phase == "failed" and app.is_running
        assert "the scripted backend needs --script PATH" in _error(app)
        assert CONFIG_ADVICE in _error(app)


async def test_a_failing_search_engine_stays_on_screen(web):
    cfg = Config(backend="scripted", search="searxng", searxng_url=f"http://127.0.0.1:{closed_port()}")
    finish = turn({"name": "finish", "arguments": {}})
    outputs = [turn({"name": "search", "arguments": {"query": "Gutenberg"}}), finish, REPORT]
    app = ResearchApp(cfg, researcher=Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs)))
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("q")
        await _until(pilot, lambda: app.result is not None)
        assert app.query_one(TabbedContent).active == "report"
        error = _error(app)
        assert error.startswith("Search failed (turn 1): search failed: ")
        assert "unreachable" in error and error.endswith(SEARCH_ADVICE)
        # The scripted backend gives turn n its output n: the next run's script has no search.
        app._researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=[finish, REPORT]))
        app.start("again")  # a new run starts with a clean slate
        await _until(pilot, lambda: app.result is not None)
        assert app.result.question == "again" and _error(app) == ""


# --- snapshots -------------------------------------------------------------------------------------

BASE = "https://archive.example.org"
PAGES = {
    f"{BASE}/gutenberg": ("Johannes Gutenberg and movable type", "Gutenberg printed with movable type around 1440."),
    f"{BASE}/spread": ("How printing spread across Europe", "By 1500 presses worked in more than 250 cities."),
}
T0 = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)
RUN_ID = "5f3a9c21"


class _Engine:
    name = "archive"

    async def search(self, query, max_results):
        return [SearchHit(title=title, url=url, snippet=text) for url, (title, text) in PAGES.items()]

    async def aclose(self):
        """Nothing to close."""


class _Fetcher:
    name = "archive"

    async def fetch(self, url):
        title, text = PAGES[url]
        return Page(url=url, final_url=url, title=title, text=text, content_type="text/html", fetched_at=T0)

    async def aclose(self):
        """Nothing to close."""


def _recorded_events() -> list[ev.Event]:
    """A real scripted run over fixed pages, with its clock readings pinned so screens are repeatable."""
    outputs = [
        turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}, "Find sources on Gutenberg."),
        turn({"name": "click", "arguments": {"link_id": 0}}, "Read the Gutenberg article."),
        turn({"name": "open", "arguments": {"url": f"{BASE}/missing"}}, "Try another page."),
        turn({"name": "click", "arguments": {"link_id": 1}}, "Now how it spread."),
        turn({"name": "finish", "arguments": {}}, "Enough to answer."),
        "\n<think>\nWrite it.\n</think>\n# Gutenberg and the spread of printing\n\nGutenberg printed with movable "
        f"type around 1440 [1]({BASE}/gutenberg). By 1500 presses worked in 250 cities [2]({BASE}/spread).",
    ]

    class _Missing(_Fetcher):
        async def fetch(self, url):
            if url not in PAGES:
                from rumination.web.fetch import FetchError

                raise FetchError("http", "HTTP 404 Not Found")
            return await super().fetch(url)

    # No journal: a module-scoped fixture runs before the autouse one that points the data dir at a temporary folder.
    cfg = Config(backend="scripted", journal=False)
    researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs), engine=_Engine(), fetcher=_Missing())
    import asyncio

    async def collect():
        return [e async for e in researcher.stream(QUESTION)]

    events = []
    for i, event in enumerate(asyncio.run(collect())):
        update: dict = {"at": T0 + timedelta(seconds=i)}
        if isinstance(event, ev.RunStarted):
            update["run_id"] = RUN_ID
        if isinstance(event, ev.ObservationEvent):
            update["seconds"] = 0.4
        if isinstance(event, ev.TurnFinished):
            usage = event.usage.model_copy(update={"seconds": 2.0, "first_token_seconds": 0.5})
            update.update(usage=usage, elapsed=10.0 * event.usage.turn)
        if isinstance(event, ev.RunFinished):
            times = {"started_at": T0, "finished_at": T0 + timedelta(seconds=83), "run_id": RUN_ID}
            result = event.result.model_copy(update=times)
            update["result"] = result
        events.append(event.model_copy(update=update))
    return events


@pytest.fixture(scope="module")
def recorded() -> list[ev.Event]:
    return _recorded_events()


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _replay(events: list[ev.Event], tab: str | None = None):
    async def run_before(pilot) -> None:
        pilot.app.clock = lambda: 42.0
        pilot.app._run_started = 0.0
        pilot.app.query_one("#question", Input).value = QUESTION
        for event in events:
            pilot.app.on_research_event(event)
        await pilot.pause()
        if tab:
            pilot.app.action_show_tab(tab)
        pilot.app.set_focus(None)
        await pilot.pause()

    return run_before


def test_snapshot_start_screen(snap_compare):
    assert snap_compare(ResearchApp(Config(backend="scripted")), terminal_size=(80, 24))


@pytest.mark.parametrize("tab", ["report", "timeline", "sources", "thinking"])
def test_snapshot_finished_run_80x24(snap_compare, recorded, tab):
    app = ResearchApp(Config(backend="scripted"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_replay(recorded, tab))


def test_snapshot_finished_run_large(snap_compare, recorded):
    app = ResearchApp(Config(backend="scripted"))
    assert snap_compare(app, terminal_size=(160, 48), run_before=_replay(recorded, "timeline"))


def test_snapshot_mid_run_thinking(snap_compare, recorded):
    upto = next(i for i, e in enumerate(recorded) if isinstance(e, ev.ToolCallEvent) and e.turn == 3)
    app = ResearchApp(Config(backend="scripted"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_replay(recorded[:upto]))


def test_snapshot_loading_the_model(snap_compare):
    loading = [
        ev.StatusEvent(message="loading the local model: THUDM/GLM-Z1-Rumination-32B-0414 ...", at=T0),
        ev.StatusEvent(message="loading weights: 23.4 of 61.7 GiB on the GPU", transient=True, at=T0),
    ]

    async def run_before(pilot) -> None:
        pilot.app.clock = lambda: 42.0
        pilot.app._run_started = 0.0
        pilot.app.phase = "loading"
        pilot.app.query_one("#question", Input).value = QUESTION
        for event in loading:
            pilot.app.on_research_event(event)
        pilot.app.query_one(ThinkingLog).focus()  # as when a run starts
        await pilot.pause()

    assert snap_compare(ResearchApp(Config(backend="scripted")), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("tab", ["timeline", "sources"])
def test_snapshot_long_cells_80x24(snap_compare, tab):
    app = ResearchApp(Config(backend="scripted"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_replay(_events_with_long_cells(), tab))


class _Unloadable:
    """A local model that is not there: loading fails the way LocalBackend's does."""

    name, model_id, context_window, tokenizer = "local", "THUDM/GLM-Z1-Rumination-32B-0414", 131072, None

    def load(self, progress=None) -> None:
        raise BackendError(
            f"model not found: {self.model_id!r} (not in the Hugging Face cache, and the hub is offline)\n"
            f"Download it first (hf download {self.model_id}) or pass -m DIR."
        )

    async def aclose(self) -> None:
        """Nothing to close."""


def test_snapshot_failed_load_80x24(snap_compare):
    cfg = Config(backend="scripted")
    researcher = Researcher(cfg, backend=_Unloadable(), engine=_Engine(), fetcher=_Fetcher())

    async def run_before(pilot) -> None:
        pilot.app.clock = lambda: 42.0
        pilot.app.query_one("#question", Input).value = QUESTION
        pilot.app.start(QUESTION)
        await _until(pilot, lambda: pilot.app.phase == "failed")
        pilot.app.clear_notifications()  # the toast goes; the error box stays
        await pilot.pause()

    assert snap_compare(ResearchApp(cfg, researcher=researcher), terminal_size=(80, 24), run_before=run_before)


async def test_question_on_the_command_line_starts_at_once(web):
    cfg = _config(web)
    researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=script(web.base)))
    app = ResearchApp(cfg, question=QUESTION, researcher=researcher)
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: app.result is not None)
        assert app.result.question == QUESTION


async def test_command_palette_offers_the_research_actions(web):
    app = ResearchApp(_config(web))
    async with app.run_test(size=(80, 24)):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Finish now", "Stop now", "Save report", "Copy report", "New question", "Open source"):
            assert title in titles


async def test_empty_question_is_refused_politely(web):
    app = ResearchApp(_config(web))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert app.phase == "idle"
        assert any("Type a question" in n.message for n in app._notifications)


async def test_second_question_reuses_the_loaded_model_and_keeps_focus(web):
    cfg = _config(web)
    outputs = [turn({"name": "finish", "arguments": {}}), REPORT] * 2
    researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs))
    app = ResearchApp(cfg, researcher=researcher)
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("first question")
        await _until(pilot, lambda: app.result is not None)
        tokenizer = researcher.backend.tokenizer
        await pilot.press("n")
        assert app.focused is app.query_one("#question", Input)
        await pilot.press(*"second question", "enter")  # typing replaces the selected old question
        await _until(pilot, lambda: app.result is not None and app.result.question == "second question")
        assert researcher.backend.tokenizer is tokenizer  # loaded once


async def test_enter_while_running_explains_how_to_stop(web):
    app = _app(web, _slow_script(web))
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("What about printing?")
        await _until(pilot, lambda: web.hits["/slow"] == 1)
        app.query_one("#question", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert any("A run is in progress" in n.message for n in app._notifications)
        await pilot.press("ctrl+p")  # the palette works mid-run too
        await pilot.pause()
        await pilot.press("escape")
        app.action_stop_now()
        await _until(pilot, lambda: app.phase == "stopped", timeout=8)


async def test_quitting_mid_run_does_not_wait_for_the_research(web):
    app = _app(web, _slow_script(web))
    started = time.monotonic()
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("What about printing?")
        await _until(pilot, lambda: web.hits["/slow"] == 1)
        await pilot.press("ctrl+q")
    assert time.monotonic() - started < 8  # the slow page takes 10 s to answer


def test_unknown_theme_is_refused_before_the_screen_is_taken(capsys):
    from rumination.cli import main

    assert main(["tui", "--theme", "nope", "--script", "x.json"]) == 2
    assert "unknown theme 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(("colorfgbg", "theme"), [("15;0", "ansi-dark"), ("0;15", "ansi-light"), ("", "ansi-dark")])
def test_theme_follows_the_terminal_background(monkeypatch, colorfgbg, theme):
    from rumination.tui.app import terminal_theme

    monkeypatch.setenv("COLORFGBG", colorfgbg)
    assert terminal_theme() == theme


async def test_long_thinking_is_split_into_paragraph_widgets(web):
    app = ResearchApp(_config(web))
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(ThinkingLog)
        log.start_turn(1, 100, report=False)
        await pilot.pause()
        for i in range(200):
            log.append(f"Paragraph {i} about printing presses and the spread of movable type.\n\n")
        log.flush()
        await pilot.pause()
        paragraphs = log.query(".thinking")
        assert len(paragraphs) == 201  # 200 finished paragraphs + the one being written
        assert str(paragraphs.first().content) == "Paragraph 0 about printing presses and the spread of movable type."
        await pilot.pause(0.2)
        assert log.is_anchored and log.scroll_y == log.max_scroll_y  # following the newest text
        log.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        log.append("More text.\n\n")
        log.flush()
        await pilot.pause()
        assert log.scroll_y == 0  # the user scrolled away: the view stays where they put it


async def test_a_status_tick_during_teardown_is_harmless(web):
    app = ResearchApp(_config(web))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.query_one(ThinkingLog).remove()  # what exit does to the widgets while the interval still runs
        app._tick()
        await pilot.pause()
        assert app.is_running


async def test_a_long_question_shows_its_start_once_the_run_starts(web):
    app = _app(web, script(web.base))
    question = "How did the printing press change " + "the way people across Europe read and wrote " * 3 + "?"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*question, "enter")
        box = app.query_one("#question", Input)
        await _until(pilot, lambda: app.result is not None)
        assert box.value == question and box.scroll_x == 0


async def test_the_elapsed_clock_never_goes_back(web):
    app = _app(web, script(web.base))
    now = [1000.0]
    app.clock = lambda: now[0]
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        now[0] += 150  # e.g. the time a real model takes to load: on the live clock, not in the result's times
        await _until(pilot, lambda: app.result is not None)
        assert "02:30" in _status(app)
        now[0] += 60  # a finished run's clock stands still
        app._tick()
        assert "02:30" in _status(app)


async def test_a_run_that_fails_keeps_its_clock(web):
    app = _app(web, [])
    now = [0.0]
    app.clock = lambda: now[0]
    async with app.run_test(size=(80, 24)) as pilot:
        app.start("q")
        now[0] = 75.0
        await _until(pilot, lambda: app.phase == "failed")
        assert "01:15" in _status(app)


def _events_with_long_cells() -> list[ev.Event]:
    """A local model's run with a long query, a long page title and host, and a long refusal."""
    host = "www.an-unusually-long-host-name-for-a-library.example.org"
    title = "Johannes Gutenberg, the forty-two-line Bible, and the movable type that changed European printing"
    query = "when did Gutenberg introduce movable metal type and how fast did printing presses spread"

    def _call(name: str, **arguments: object) -> ToolCall:
        return ToolCall(name=name, arguments=arguments)

    def call(n: int, name: str, **arguments: object) -> ev.ToolCallEvent:
        return ev.ToolCallEvent(turn=n, call=_call(name, **arguments), raw="", at=T0)

    return [
        ev.RunStarted(
            question=QUESTION,
            backend="local",
            model="THUDM/GLM-Z1-Rumination-32B-0414",
            search="ddgs",
            max_turns=35,
            context_window=131072,
            max_context_tokens=110000,
            at=T0,
        ),
        ev.TurnStarted(turn=1, prompt_tokens=1850, at=T0),
        call(1, "search", query=query),
        ev.ObservationEvent(
            turn=1, call=_call("search", query=query), observation="...", ok=True, results=10, seconds=1.2, at=T0
        ),
        ev.TurnStarted(turn=2, prompt_tokens=2900, at=T0),
        call(2, "click", link_id=0),
        ev.ObservationEvent(
            turn=2,
            call=_call("click", link_id=0),
            observation="...",
            ok=True,
            seconds=0.8,
            source_id=1,
            url=f"https://{host}/gutenberg",
            title=title,
            at=T0 + timedelta(seconds=14),
        ),
        ev.TurnStarted(turn=3, prompt_tokens=5400, at=T0),
        call(3, "open", url="http://10.0.0.7/internal-archive/printing-history.html"),
        ev.ObservationEvent(
            turn=3,
            call=_call("open", url="http://10.0.0.7/internal-archive/printing-history.html"),
            observation="Error: refused: http://10.0.0.7/internal-archive/printing-history.html resolves to a private "
            "address; only public web pages can be opened",
            ok=False,
            error="refused",
            seconds=0.0,
            at=T0,
        ),
        ev.TurnFinished(
            usage=TurnUsage(turn=3, prompt_tokens=5400, generated_tokens=300, seconds=10.0, finish_reason="stop"),
            context_tokens=5700,
            elapsed=30.0,
            at=T0,
        ),
    ]


def _line_texts(table) -> list[str]:
    return [table.render_line(y).text.rstrip() for y in range(table.row_count + 1)]


async def test_long_cells_end_in_an_ellipsis_at_80_columns():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)) as pilot:
        for event in _events_with_long_cells():
            app.on_research_event(event)
        app.action_show_tab("timeline")
        await pilot.pause()
        timeline = app.query_one(Timeline)
        header, search, click, refused = _line_texts(timeline)
        assert header.split() == ["#", "tool", "status", "detail"]
        for line in (search, click, refused):
            assert line.endswith("…") and len(line) < 80
        assert timeline.max_scroll_x == 0  # nothing hides off to the right
        app.action_show_tab("sources")
        await pilot.pause()
        sources = app.query_one(SourcesTable)
        header, row = _line_texts(sources)
        assert header.split() == ["[n]", "cited", "title", "host", "read"]
        assert [part.strip() for part in row.split("  ") if part.strip()][:3] == [
            "[1]",
            "Johannes Gutenberg, the fort…",
            "www.an-unusually-long…",
        ]
        assert row.endswith("12:00:14")


async def test_the_model_name_is_readable_at_80_columns():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)) as pilot:
        app.clock = lambda: 42.0
        for event in _events_with_long_cells():
            app.on_research_event(event)
        await pilot.pause()
        right = app.query_one("#status-right", Static)
        assert str(right.content) == "00:42 │ GLM-Z1-Rumination-32B-0414"
        assert right.region.right <= 80 and right.region.width >= len(str(right.content))
        assert str(app.query_one("#status", Static).content) == "⠋ turn 3/35 │ ctx 5.7K/131K │ 30.0 tok/s"


@pytest.mark.parametrize(
    ("backend", "model", "label"),
    [
        ("local", "THUDM/GLM-Z1-Rumination-32B-0414", "GLM-Z1-Rumination-32B-0414"),
        ("local", "/models/glm-z1-rumination/", "glm-z1-rumination"),
        ("scripted", "scripted", "scripted"),
        ("vllm", "THUDM/GLM-Z1-Rumination-32B-0414", "vllm · GLM-Z1-Rumination-32B-0414"),
    ],
)
def test_model_label_keeps_the_repo_or_folder_name(backend, model, label):
    assert model_label(backend, model) == label


async def test_only_a_model_that_reports_loading_progress_gets_the_banner():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)) as pilot:
        app.phase = "running"
        app.on_research_event(ev.StatusEvent(message="loading the scripted model: scripted ..."))
        await pilot.pause()
        assert app.phase == "loading" and not app.query_one("#banner").display
        app.on_research_event(ev.StatusEvent(message="loading weights: 1.0 of 61.7 GiB", transient=True))
        await pilot.pause()
        assert "Loading a large model takes minutes" in str(app.query_one("#banner", Static).content)


def _app_with_source(url: str) -> ResearchApp:
    app = ResearchApp(Config(backend="scripted"))
    app.phase = "done"

    async def add() -> None:
        app.query_one(SourcesTable).add_source(1, "A page", url, T0)

    app.call_later(add)
    return app


@pytest.mark.parametrize(
    ("url", "browser_opens", "expected"),
    [
        ("https://example.org/a", True, "Opened https://example.org/a in your browser."),
        ("https://example.org/a", False, "No browser is available to open https://example.org/a"),
        ("local://notes/printing.md", True, "local://notes/printing.md is a document in a local index"),
    ],
)
async def test_opening_a_source_says_what_happened(url, browser_opens, expected):
    app = _app_with_source(url)
    asked: list[str] = []
    app.browse = lambda url: asked.append(url) is None and browser_opens  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_show_tab("sources")
        await pilot.press("o")
        assert any(note.startswith(expected) for note in _notes(app)), _notes(app)
        assert asked == ([] if url.startswith("local://") else [url])
        if not browser_opens:
            assert app.clipboard == url


class _Browser:
    def __init__(self, result: bool):
        self.result, self.opened = result, []

    def open(self, url: str) -> bool:
        self.opened.append(url)
        return self.result


def test_browse_reports_whether_a_browser_opened_the_page(monkeypatch):
    app = ResearchApp(Config(backend="scripted"))
    for result in (True, False):
        browser = _Browser(result)
        monkeypatch.setattr(webbrowser, "get", lambda browser=browser: browser)
        assert app.browse("https://example.org/") is result and browser.opened == ["https://example.org/"]

    def none_registered():
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", none_registered)
    assert app.browse("https://example.org/") is False
    terminal = webbrowser.GenericBrowser("lynx")  # would take over the TUI's terminal until it quits
    monkeypatch.setattr(terminal, "open", lambda url: pytest.fail("a terminal browser was started"))
    monkeypatch.setattr(webbrowser, "get", lambda: terminal)
    assert app.browse("https://example.org/") is False


async def test_a_report_reset_drops_what_was_streamed_before_it():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)) as pilot:
        app.on_research_event(ev.TurnStarted(turn=1, prompt_tokens=10, report=True, at=T0))
        app.on_research_event(ev.ReportDelta(text="Draft that was thinking", at=T0))
        await pilot.pause(0.3)
        app.on_research_event(ev.ReportDelta(text="\n# Final", reset=True, at=T0))
        app.on_research_event(ev.ReportDelta(text=" report", at=T0))
        await pilot.pause(0.3)
        shown = app.query_one("#report-md", Markdown).source
        assert app._report == "# Final report" and "Draft" not in shown and "Final report" in shown


async def test_links_the_run_never_read_stay_on_screen(web):
    report = "\n<think>\nok\n</think># R\n\nAs https://never.example/read says."
    app = _app(web, [turn({"name": "finish", "arguments": {}}), report])
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause()
        assert app.result.unverified_urls == ["https://never.example/read"]
        assert "https://never.example/read" in _error(app)


async def test_the_palette_offers_every_panel_and_a_failure_is_shown_once():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for panel in ("Thinking", "Timeline", "Sources", "Report"):
            assert f"Show {panel}" in titles
        next(c for c in app.get_system_commands(app.screen) if c.title == "Show Sources").callback()
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "sources"
        app.clear_notifications()
        app._ended("failed", "the script ran out of outputs", "Press n to try again.")
        await pilot.pause()
        assert "ran out of outputs" in _error(app) and not _notes(app)


async def test_quitting_hands_back_a_report_that_was_neither_saved_nor_copied(web):
    app = _app(web, script(web.base))
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: app.result is not None)
        await app.action_quit()  # what Ctrl+Q runs (Pilot's press of a key that exits can wait on a closed app)
    assert app.return_value == app.result.report
    copied = _app(web, script(web.base))
    async with copied.run_test(size=(100, 30)) as pilot:
        copied.start(QUESTION)
        await _until(pilot, lambda: copied.result is not None)
        copied.action_copy_report()
        await copied.action_quit()
    assert copied.return_value is None


async def test_quitting_while_the_report_streams_hands_back_what_was_written():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(80, 24)):
        app.on_research_event(ev.TurnStarted(turn=1, prompt_tokens=10, report=True, at=T0))
        app.on_research_event(ev.ReportDelta(text="# Half a report", at=T0))
        app.action_copy_report()  # copied while streaming: the final text will differ from what was copied
        app.on_research_event(ev.ReportDelta(text=" and its second half", at=T0))
        await app.action_quit()
    assert app.return_value == "# Half a report and its second half"


# --- run ids, the sessions list, resuming, citation marks (issue 12) -------------------------------------------------


async def _open_sessions(pilot) -> SessionsScreen:
    await pilot.press("h")
    await _until(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen) and pilot.app.screen.loaded)
    await pilot.pause()
    return pilot.app.screen


def _rows(screen: SessionsScreen) -> list[tuple[str, str]]:
    """(id, status) of each run listed, top to bottom."""
    table = screen.query_one(SessionsTable)
    return [(str(row.key.value), str(table.get_cell(row.key, "status"))) for row in table.ordered_rows]


async def _pick(pilot, screen: SessionsScreen, run_id: str) -> None:
    """Move to run `run_id` in the list and press Enter."""
    table = screen.query_one(SessionsTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await pilot.press("enter")
    await pilot.pause()


async def test_the_run_id_is_shown_from_run_started_on():
    app = ResearchApp(Config(backend="scripted"))
    app.clock = lambda: 42.0  # the spinner's first frame
    async with app.run_test(size=(100, 30)) as pilot:
        started = _events_with_long_cells()[0]
        app.on_research_event(started)
        await pilot.pause()
        assert "run " not in _status(app)  # journaling off: no id to show
        app.on_research_event(started.model_copy(update={"run_id": "1a2b3c4d"}))
        await pilot.pause()
        assert _status(app).startswith("⠋ run 1a2b3c4d │ turn 0/35")
        app.on_research_event(started.model_copy(update={"run_id": "1a2b3c4d", "resumed_after": 3}))
        await pilot.pause()
        assert _status(app).startswith("⠋ resumed run 1a2b3c4d after 3 turns │ turn 0/35")


async def test_sessions_list_resumes_a_failed_run_with_its_id(web):
    cfg = _config(web)
    full = script(web.base)
    app = ResearchApp(cfg, researcher=Researcher(cfg, backend=ScriptedBackend(cfg, outputs=full)))
    statuses: list[str] = []
    shown = app.on_research_event

    def watch(event: ev.Event) -> None:
        shown(event)
        if isinstance(event, ev.RunStarted):
            statuses.append(_status(app))

    app.on_research_event = watch  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: app.result is not None)
        finished = app.result
        assert re.fullmatch("[0-9a-f]{8}", finished.run_id or "")
        assert f"run {finished.run_id} │ done: finished" in _status(app)  # still there once the run has ended

        # A run whose script runs out after two turns: it fails, with the turns done kept for a resume.
        app._researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=full[:2]))
        app.start("How fast did printing spread?")
        await _until(pilot, lambda: app.phase == "failed")
        failed = app.result.run_id
        assert failed and failed != finished.run_id and f"run {failed} │ failed: " in _status(app)
        unreadable = cfg.data_dir / "runs" / "deadbeef"
        unreadable.mkdir()
        (unreadable / "journal.jsonl").write_text("not a journal\n")

        screen = await _open_sessions(pilot)
        assert _rows(screen) == [(failed, "failed"), (finished.run_id, "finished")]  # newest first
        table = screen.query_one(SessionsTable)
        assert str(table.get_cell(failed, "question")) == "How fast did printing spread?"
        assert str(table.get_cell(failed, "turns")) == "2"
        note = str(screen.query_one("#sessions-note", Static).content)
        assert note.startswith("1 journal could not be read") and "deadbeef" in note

        app._researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=full))  # now with the whole script
        await _pick(pilot, screen, failed)
        assert not isinstance(app.screen, SessionsScreen)
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause()
        result = app.result
        assert result.run_id == failed and result.stop_reason == "finished" and result.turns == 4
        assert result.report == finished.report
        assert app.query_one("#report-md", Markdown).source == result.report
        assert statuses[-1][2:].startswith(f"resumed run {failed} after 2 turns │ turn 2/35")  # after a spinner
        assert f"run {failed} │ done: finished" in _status(app)
        # The turns done before the resume are shown too, then the ones done after it.
        assert app.query_one(Timeline).row_count == 4 and app.query_one(SourcesTable).row_count == 2
        titles = [b.title.split(" · ")[0] for b in app.query(Collapsible)]
        assert titles == ["Turn 1", "Turn 2", "Turn 3", "Turn 4", "Report"]
        assert app.query_one("#question", Input).value == "How fast did printing spread?"

        screen = await _open_sessions(pilot)
        assert _rows(screen) == [(failed, "finished"), (finished.run_id, "finished")]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SessionsScreen)


async def test_sessions_list_shows_a_finished_run_without_running_it(web):
    cfg = _config(web)
    first = ResearchApp(cfg, researcher=Researcher(cfg, backend=ScriptedBackend(cfg, outputs=script(web.base))))
    async with first.run_test(size=(100, 30)) as pilot:
        first.start(QUESTION)
        await _until(pilot, lambda: first.result is not None)
    finished = first.result

    backend = ScriptedBackend(cfg, outputs=[])
    app = ResearchApp(cfg, researcher=Researcher(cfg, backend=backend))
    async with app.run_test(size=(100, 30)) as pilot:
        app.query_one(ThinkingLog).focus()
        held = journal.Journal(journal.find(cfg.data_dir, finished.run_id))  # as another process running it would
        try:
            screen = await _open_sessions(pilot)
            assert _rows(screen) == [(finished.run_id, "running")]
            await _pick(pilot, screen, finished.run_id)
            assert app.screen is screen  # nothing to open yet
            assert any("is running in another rumination process" in note for note in _notes(app))
            await pilot.press("escape")
        finally:
            held.close()

        screen = await _open_sessions(pilot)
        await _pick(pilot, screen, finished.run_id)
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause()
        assert app.result.run_id == finished.run_id and app.phase == "done"
        assert app.query_one(TabbedContent).active == "report"
        assert app.query_one("#report-md", Markdown).source == finished.report
        assert app.query_one("#question", Input).value == QUESTION
        assert app.query_one(SourcesTable).row_count == 2 and app.query_one(Timeline).row_count == 4
        first_turn = app.query(Collapsible).first().query_one(".thinking", Static)
        assert str(first_turn.content) == "I should search first."
        assert f"run {finished.run_id} │ done: finished" in _status(app)
        assert backend.prompts == []  # shown from the journal: nothing ran


def _cited_result() -> ResearchResult:
    """A report citing one page in support, one page for a number it lacks, and a page the run never read."""
    unread = "[3](https://never.example/[b]read[/b])"
    report = (
        "# Printing\n\nGutenberg printed with movable type around 1440 [1]. By 1500 presses worked in 1450 "
        f"[link=https://evil.example]cities[/link] [2]. A [bold red]claim[/] cites {unread}."
    )

    def cited(text: str, source_id: int | None, missing: list[str], target: str) -> Citation:
        start = report.index(text)
        form = "link" if text.endswith(")") else "number"
        return Citation(
            text=text,
            start=start,
            end=start + len(text),
            form=form,
            target=target,
            source_id=source_id,
            missing=missing,
        )

    sources = [
        Source(id=n, url=url, final_url=url, title=title, fetched_at=T0, cited=True)
        for n, (url, (title, _)) in enumerate(PAGES.items(), 1)
    ]
    return ResearchResult(
        question=QUESTION,
        report=report,
        sources=sources,
        steps=[],
        turns=2,
        stop_reason="finished",
        usage=Usage(),
        backend="scripted",
        model="scripted",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=30),
        run_id="1a2b3c4d",
        citations=[
            cited("[1]", 1, [], "1"),
            cited("[2]", 2, ["1450", '"[red]forty-two lines[/red]"'], "2"),
            cited(unread, None, [], "https://never.example/[b]read[/b]"),
        ],
    )


async def test_citation_marks_show_what_to_check():
    app = ResearchApp(Config(backend="scripted"))
    async with app.run_test(size=(100, 30)) as pilot:
        app.on_research_event(ev.RunFinished(result=_cited_result(), at=T0))
        await pilot.pause()
        sources = app.query_one(SourcesTable)
        assert str(sources.get_cell("1", "cited")) == "✓"
        assert str(sources.get_cell("2", "cited")) == "⚠ 1/1"

        notes = str(app.query_one("#citations", Static).content)
        assert notes.startswith("Citations to check (1 never read, 1 unsupported by the page cited)")
        assert "✗ [3](https://never.example/[b]read[/b]) never read" in notes
        assert '⚠ [2] lacks 1450, "[red]forty-two lines[/red]": “By 1500 presses worked in 1450 ' in notes
        screen = app.export_screenshot()
        assert "[b]read[/b]" in screen and "[red]forty-two" in screen  # as written, never read as markup
        assert _error(app).startswith("Citations to check: ✗ [3](https://never.example/[b]read[/b]) never read\n⚠ [2]")

        app.action_show_tab("sources")
        sources.move_cursor(row=1)
        await pilot.pause()
        detail = str(app.query_one("#source-detail", Static).content)
        assert detail.startswith(f"[2] {BASE}/spread  cited 1×\n⚠ [2] lacks 1450")
        assert app.query_one("#source-detail").region.height == 3  # its border and two lines, whatever they hold
        sources.move_cursor(row=0)
        await pilot.pause()
        assert str(app.query_one("#source-detail", Static).content) == f"[1] {BASE}/gutenberg  cited 1×"


SESSIONS = [
    RunSummary(
        "5f3a9c21",
        T0 + timedelta(hours=5),
        "How did paper making reach Europe, and through which cities?",
        6,
        "running",
        None,
    ),
    RunSummary("0b7e4d19", T0 + timedelta(hours=3), QUESTION, 4, "finished", "finished"),
    RunSummary(
        "c41d2a88",
        T0 + timedelta(hours=1),
        "[bold red]Who[/] printed the first book in English?",
        3,
        "interrupted",
        None,
    ),
    RunSummary("9e8f7a60", T0, "Why did movable type spread less in China?", 2, "failed", "error"),
]
PROBLEMS = ["the journal /data/rumination/runs/deadbeef/journal.jsonl is damaged at line 3: event: Field required"]


def test_snapshot_sessions_80x24(snap_compare):
    async def run_before(pilot) -> None:
        pilot.app.open_sessions(lambda: (SESSIONS, PROBLEMS))
        await _until(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen) and pilot.app.screen.loaded)
        await pilot.pause()

    app = ResearchApp(Config(backend="scripted", data_dir="/data/rumination"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_a_stopped_run_is_resumed_from_its_last_complete_turn(web):
    cfg = _config(web)
    search = turn({"name": "search", "arguments": {"query": "Gutenberg printing"}})
    finish = turn({"name": "finish", "arguments": {}})
    slow = turn({"name": "open", "arguments": {"url": f"{web.base}/slow?delay=10"}})
    app = ResearchApp(cfg, researcher=Researcher(cfg, backend=ScriptedBackend(cfg, outputs=[search, slow])))
    async with app.run_test(size=(100, 30)) as pilot:
        app.start(QUESTION)
        await _until(pilot, lambda: web.hits["/slow"] == 1)
        run_id = app._run_label.removeprefix("run ")
        await pilot.press("x")
        await _until(pilot, lambda: app.phase == "stopped", timeout=8)
        assert f"run {run_id} │ stopped by the user; no report; h lists the runs to resume it" in _status(app)

        click = turn({"name": "click", "arguments": {"link_id": 0}})
        app._researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=[search, click, finish, REPORT]))
        screen = await _open_sessions(pilot)
        assert _rows(screen) == [(run_id, "interrupted")]
        await _pick(pilot, screen, run_id)
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause()
        assert app.result.run_id == run_id and app.result.turns == 3
        timeline = app.query_one(Timeline)
        assert [str(timeline.get_cell_at((row, 1))) for row in range(timeline.row_count)] == [
            "search",
            "click",
            "finish",
        ]
        assert app.result.report.startswith("# Partial report")


async def test_the_timeline_says_when_a_page_was_cut_and_how_much_was_kept():
    app = ResearchApp(Config(backend="scripted"))
    call = ToolCall(name="open", arguments={"url": "https://a.example/long"})
    step = {"turn": 1, "call": call, "ok": True, "url": "https://a.example/long", "title": "Long", "source_id": 1}
    async with app.run_test(size=(160, 24)) as pilot:
        app.on_research_event(ev.ToolCallEvent(turn=1, call=call, raw=""))
        app.on_research_event(ev.ObservationEvent(observation="# Long", page_tokens=42_000, kept_tokens=8_000, **step))
        app.on_research_event(ev.ToolCallEvent(turn=2, call=call, raw=""))
        step["turn"] = 2
        cut = {"page_tokens": 42_000, "kept_tokens": 7_900, "continued": True}
        app.on_research_event(ev.ObservationEvent(observation="# Long", **cut, **step))
        app.action_show_tab("timeline")
        await pilot.pause()
        timeline = app.query_one(Timeline)
        assert str(timeline.get_cell("1", "detail")).endswith("· cut: 8,000 of about 42,000 tokens")
        assert str(timeline.get_cell("2", "detail")).endswith("· cut: 7,900 of about 42,000 tokens, read on")
