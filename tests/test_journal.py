"""The run journal: what it records, reading it back (torn, damaged, foreign), resume and replay."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
from pathlib import Path

import pytest
from conftest import turn, write_script
from test_e2e import QUESTION, config, script

from rumination import events as ev
from rumination import journal as jr
from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.cli import main
from rumination.config import Config
from rumination.errors import BackendError, RuminationError
from rumination.web import guard

PAGES = ("/gutenberg.html", "/spread.html", "/search")


def cfg(web, **extra):
    """The e2e settings without the page cache, so only the run's own recorded web can spare a request."""
    return config(web, **{"page_cache": False, "prefetch": 0, **extra})


async def cli(*args: str) -> int:
    """The command line, from an async test (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(args))


def requests(web) -> dict[str, int]:
    return {path: len(web.requests_to(path)) for path in PAGES}


async def run_until(researcher: Researcher, stream, stop_after: int) -> str | None:
    """Consume `stream` for `stop_after` events, then close it (as a crash would leave it); the run id."""
    run_id, count = None, 0
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            count += 1
            if isinstance(event, ev.RunStarted):
                run_id = event.run_id
            if count >= stop_after:
                break
    return run_id


async def test_a_run_journals_its_events_and_turns(web):
    settings = cfg(web, brave_api_key="sekrit-key")
    events = [
        e
        async for e in Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).stream(
            QUESTION
        )
    ]
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    result = events[-1].result
    assert started.run_id and result.run_id == started.run_id and started.resumed_after is None
    path = jr.find(settings.data_dir, started.run_id)
    text = path.read_text(encoding="utf-8")
    assert "sekrit-key" not in text  # no secret is ever written
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["format"] == jr.FORMAT and lines[0]["version"] == jr.VERSION
    assert lines[0]["config"]["today"]  # the year the model was told is pinned for a resume or replay
    checkpoints = [line for line in lines if line["kind"] == "checkpoint"]
    assert [c["turn"] for c in checkpoints] == [1, 2, 3, 4] and checkpoints[-1]["stop"] == "finished"
    assert sorted(int(t) for c in checkpoints for t in c["outputs"]) == [1, 2, 3, 4]
    assert len([line for line in lines if line["kind"] == "event"]) == len(events)
    log = jr.load(settings.data_dir, started.run_id[:5])  # a prefix will do
    assert log.status == "finished" and not log.resumable and log.result == result
    assert [e.type for e in log.events] == [e.type for e in events]
    assert log.state.messages == [m.model_dump() for m in result.messages[:-1]]  # all but the report's


async def test_resume_after_every_event_gives_the_same_report_and_fetches_nothing_twice(web):
    settings = cfg(web)
    outputs = script(web.base)
    full = await Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs)).run(QUESTION)
    total = sum(1 for _ in jr.load(settings.data_dir, full.run_id).events)
    for stop_after in range(2, total):
        before = requests(web)
        researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs))
        run_id = await run_until(researcher, researcher.stream(QUESTION), stop_after)
        if run_id is None:
            continue  # stopped while loading, before the run began
        log = jr.load(settings.data_dir, run_id)
        assert log.status == "interrupted", stop_after
        resumed = await Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs)).resume(run_id)
        spent = {path: n - before[path] for path, n in requests(web).items()}
        assert resumed.run_id == run_id and resumed.report == full.report, stop_after
        assert [(s.id, s.url) for s in resumed.sources] == [(s.id, s.url) for s in full.sources], stop_after
        assert [s.observation for s in resumed.steps] == [s.observation for s in full.steps], stop_after
        assert len(resumed.usage.generations) >= len(full.usage.generations)
        assert spent == {"/gutenberg.html": 1, "/spread.html": 1, "/search": 1}, stop_after  # each exactly once
        assert jr.load(settings.data_dir, run_id).status == "finished"


async def test_budgets_count_what_was_spent_before_the_resume(web):
    settings = cfg(web, max_turns=3)
    searches = [turn({"name": "search", "arguments": {"query": f"printing {i}"}}) for i in range(3)]
    outputs = [*searches, "\n<think>\nr\n</think>Report."]  # the report is the 4th output: 3 turns in all
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs))
    events = researcher.stream(QUESTION)
    run_id = None
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            run_id = event.run_id if isinstance(event, ev.RunStarted) else run_id
            if isinstance(event, ev.ObservationEvent) and event.turn == 2:
                break
    assert jr.load(settings.data_dir, run_id).state.turn == 1  # turn 2 never reached its checkpoint
    result = await Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs)).resume(run_id)
    assert result.turns == 3 and result.stop_reason == "max_turns"  # 3 in all, not 3 more
    assert len(result.usage.generations) == 4  # turns 1, 2 (again), 3, and the report: only checkpointed ones kept
    assert result.report == "Report."


async def test_a_run_whose_server_gave_out_resumes_with_new_settings(web, tmp_path):
    settings = cfg(web)
    outputs = script(web.base)
    short = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs[:2]))
    failed = await short.run(QUESTION)  # the script runs out at turn 3: a backend error ends the run
    assert failed.stop_reason == "error" and failed.run_id
    log = jr.load(settings.data_dir, failed.run_id)
    assert log.status == "failed" and log.resumable and log.state.turn == 2
    full_script = write_script(tmp_path / "full.json", outputs)
    code = await cli("resume", failed.run_id, "--script", str(full_script), "--json", "-q")
    assert code == 0
    log = jr.load(settings.data_dir, failed.run_id)
    assert log.status == "finished" and log.resumes == 1 and log.result.report.startswith("# Gutenberg")
    assert log.header.config["script"] is None  # the header keeps what the run started with


async def test_resume_refuses_what_cannot_be_resumed(web, capsys):
    settings = cfg(web)
    done = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    with pytest.raises(RuminationError, match="is finished: there is nothing to resume"):
        await Researcher(settings, backend=ScriptedBackend(settings, outputs=[])).resume(done.run_id)
    assert await cli("resume", "0123abcd") == 1
    assert "no run 0123abcd" in capsys.readouterr().err
    assert await cli("resume", "not-an-id") == 1
    assert "is not a run id" in capsys.readouterr().err
    journal = jr.Journal(jr.find(settings.data_dir, done.run_id))  # another process holds it
    try:
        assert jr.load(settings.data_dir, done.run_id).status == "running"
        with pytest.raises(RuminationError, match="running in another rumination process"):
            await Researcher(settings, backend=ScriptedBackend(settings, outputs=[])).resume(done.run_id)
        with pytest.raises(jr.JournalError, match="in use by another rumination process"):
            jr.Journal(jr.find(settings.data_dir, done.run_id))
    finally:
        journal.close()


async def test_a_resume_holds_the_run_while_its_model_loads(web):
    settings = cfg(web)
    outputs = script(web.base)
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs))
    run_id = await run_until(researcher, researcher.stream(QUESTION), 30)
    loading, release, loads = threading.Event(), threading.Event(), []

    class Slow(ScriptedBackend):
        def load(self, progress=None) -> None:
            loads.append(self)
            loading.set()
            release.wait(30)
            super().load(progress)

    first = asyncio.ensure_future(Researcher(settings, backend=Slow(settings, outputs=outputs)).resume(run_id))
    try:
        assert await asyncio.to_thread(loading.wait, 30)
        second = Slow(settings, outputs=outputs)
        with pytest.raises(RuminationError, match="running in another rumination process"):
            await Researcher(settings, backend=second).resume(run_id)
        assert second not in loads  # refused before its model was loaded
    finally:
        release.set()
    assert (await first).stop_reason == "finished"


async def test_a_torn_last_line_is_ignored_and_cut_before_appending(web):
    settings = cfg(web)
    outputs = script(web.base)
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs))
    run_id = await run_until(researcher, researcher.stream(QUESTION), 30)
    path = jr.find(settings.data_dir, run_id)
    turns = jr.read(path).state.turn
    with path.open("ab") as handle:
        handle.write(b'{"kind":"checkpoint","turn":99,"messa')  # a crash mid-write
    assert jr.read(path).state.turn == turns
    result = await Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs)).resume(run_id)
    assert result.stop_reason == "finished"
    lines = path.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines) and b'turn":99' not in path.read_bytes()


def test_foreign_damaged_and_newer_journals_say_what_they_are(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text("hello\n")
    with pytest.raises(jr.JournalError, match="is not a Rumination journal"):
        jr.read(path)
    path.write_text(json.dumps({"kind": "header", "format": jr.FORMAT, "version": jr.VERSION + 1}) + "\n")
    with pytest.raises(jr.JournalError, match="written by a newer Rumination"):
        jr.read(path)
    header = jr.Header(id="abcd1234", question="q", started_at="2026-01-01T00:00:00Z", config={})
    path.write_text(header.model_dump_json() + "\n" + '{"kind": "event", "event": {"type": "nonsense"}}\n{}\n')
    with pytest.raises(jr.JournalError, match="damaged at line 2"):
        jr.read(path)


async def test_a_journal_that_cannot_be_written_warns_once_and_the_run_goes_on(web, monkeypatch):
    settings = cfg(web)
    write = jr.Journal.write
    failures = []

    def full_disk(self, record):
        if record.kind == "header":
            return write(self, record)
        failures.append(record.kind)
        self.broken = "No space left on device"

    monkeypatch.setattr(jr.Journal, "write", full_disk)
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base)))
    events = [e async for e in researcher.stream(QUESTION)]
    warnings = [e for e in events if isinstance(e, ev.ErrorEvent) and "journal cannot be written" in e.message]
    assert len(warnings) == 1 and not warnings[0].fatal and "No space left on device" in warnings[0].message
    assert events[-1].result.stop_reason == "finished" and events[-1].result.report.startswith("# Gutenberg")
    assert len(failures) > 10


async def test_a_data_dir_that_cannot_be_written_costs_the_journal_not_the_run(web, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    settings = cfg(web, data_dir=blocked)
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base)))
    events = [e async for e in researcher.stream(QUESTION)]
    assert any(isinstance(e, ev.ErrorEvent) and "without a journal" in e.message for e in events)
    assert events[-1].result.stop_reason == "finished" and events[-1].result.run_id is None


async def test_replay_with_recorded_outputs_is_byte_identical_with_the_web_gone(web, capsys):
    settings = cfg(web, prefetch=3)
    original = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    web.__exit__(None, None, None)  # the site is gone: nothing answers on its port any more
    code = await cli("replay", original.run_id, "--json", "-q")
    captured = capsys.readouterr()
    replayed = json.loads(captured.out)
    assert code == 0, captured.err
    assert replayed["report"] == original.report
    assert "the report is identical" in captured.err
    assert replayed["run_id"] != original.run_id
    assert [s["url"] for s in replayed["sources"]] == [s.url for s in original.sources]
    assert [s["observation"] for s in replayed["steps"]] == [s.observation for s in original.steps]
    assert jr.load(settings.data_dir, replayed["run_id"]).header.replay_of == original.run_id
    assert "could not open" not in captured.err and "search failed" not in captured.err


async def test_replay_live_runs_a_model_over_the_frozen_web(web, tmp_path, capsys):
    settings = cfg(web)
    original = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    web.__exit__(None, None, None)
    other = [*script(web.base)[:1], turn({"name": "finish", "arguments": {}}), "\n<think>\nx\n</think>Other report."]
    other_script = str(write_script(tmp_path / "o.json", other))
    code = await cli("replay", original.run_id, "--live", "--script", other_script, "-q")
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Other report.")


async def test_sessions_and_show(web, capsys):
    settings = cfg(web)
    done = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    failed = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base)[:1])).run("Other?")
    capsys.readouterr()
    assert await cli("sessions") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "STATUS", "TURNS", "QUESTION"]
    assert lines[1].split()[0] == failed.run_id and " failed " in lines[1] and lines[1].endswith("Other?")
    assert lines[2].split()[0] == done.run_id and " finished " in lines[2] and "     4  When did" in lines[2]
    assert await cli("sessions", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in rows] == ["failed", "finished"]
    assert await cli("show", done.run_id, "--no-references") == 0
    flagged = done.report.replace("never-read.html.", "never-read.html [unverified].")  # the one link never read
    assert capsys.readouterr().out == flagged + "\n"
    assert await cli("show", done.run_id[:4], "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["report"] == done.report
    assert await cli("show", failed.run_id) == 0
    err = capsys.readouterr().err
    assert "is failed" not in err and f"rumination resume {failed.run_id}" in err


def test_sessions_with_none_and_with_a_foreign_folder(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("RUMINATION_DATA_DIR", str(data))
    assert main(["sessions"]) == 0
    assert "no runs yet" in capsys.readouterr().err
    (data / "runs" / "deadbeef").mkdir(parents=True)
    (data / "runs" / "deadbeef" / "journal.jsonl").write_text("not json\n")
    assert main(["sessions"]) == 0
    assert "is not a Rumination journal" in capsys.readouterr().err


async def test_a_model_that_fails_to_load_leaves_no_run_behind(web):
    class Unloadable(ScriptedBackend):
        def load(self, progress=None) -> None:
            raise BackendError("model not found: 'no-such-model'")

    settings = cfg(web)
    events = []
    with pytest.raises(BackendError):
        async for event in Researcher(settings, backend=Unloadable(settings, outputs=[])).stream(QUESTION):
            events.append(event)
    assert isinstance(events[-1], ev.ErrorEvent) and events[-1].fatal and "no-such-model" in events[-1].message
    assert not (Path(settings.data_dir) / "runs").exists() and main(["sessions"]) == 0  # nothing to resume


async def test_no_journal_when_turned_off(web):
    settings = cfg(web, journal=False)
    result = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    assert result.run_id is None and not (Path(settings.data_dir) / "runs").exists()


async def test_prefetched_pages_are_not_fetched_again_after_a_resume(web, monkeypatch):
    public = ipaddress.ip_address("127.0.0.1")  # the site plays the public web: a prefetch never reaches inside
    real = guard.is_public_address
    monkeypatch.setattr(guard, "is_public_address", lambda ip: guard.unwrap(ip) == public or real(ip))
    settings = Config(backend="scripted", search="searxng", searxng_url=web.base, page_cache=False, prefetch=3)
    outputs = script(web.base)
    researcher = Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs))
    run_id = None
    async with contextlib.aclosing(researcher.stream(QUESTION)) as stream:
        async for event in stream:
            run_id = event.run_id if isinstance(event, ev.RunStarted) else run_id
            if isinstance(event, ev.TurnStarted) and event.turn == 2:  # turn 1 (the search) is checkpointed
                pages = jr.find(settings.data_dir, run_id).parent / jr.WEB / "pages"
                for _ in range(600):  # until the three prefetched pages are recorded
                    if pages.is_dir() and len(list(pages.glob("*.json"))) == 3:
                        break
                    await asyncio.sleep(0.05)
                assert len(list(pages.glob("*.json"))) == 3
                break
    before = requests(web)
    await Researcher(settings, backend=ScriptedBackend(settings, outputs=outputs)).resume(run_id)
    assert {p: n - before[p] for p, n in requests(web).items()} == {
        "/gutenberg.html": 0,
        "/spread.html": 0,
        "/search": 0,
    }


# --- SIGKILL at many points, then `rumination resume` -------------------------------------------------------------

KILL_POINTS = [
    ("header", 1),  # nothing but the header: the run starts afresh under its id
    ("event:run_started", 1),
    ("event:thinking", 1),  # mid-generation
    ("event:tool_call", 1),  # the search asked for, not run
    ("event:observation", 1),  # the search shown, its turn not checkpointed
    ("checkpoint", 1),
    ("event:tool_call", 2),  # the click asked for, not run
    ("fetched", 1),  # during the click: the page fetched and recorded, not shown yet
    ("event:observation", 2),
    ("checkpoint", 2),
    ("fetched", 2),  # during the open
    ("event:tool_call", 4),  # the finish call, before the last checkpoint
    ("checkpoint", 4),  # research over, the report not begun
    ("event:report", 1),  # during the report
    ("event:turn_finished", 5),  # the report written, the result not
]


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume(web, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    driver = Path(__file__).parent / "kill_driver.py"
    script_file = write_script(tmp_path / "s.json", script(web.base))
    args = ["ask", QUESTION, "--script", str(script_file), "--searxng-url", web.base, "--allow-private-network"]
    args += ["--no-page-cache", "--prefetch", "0", "--json", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}

    full = subprocess.run([sys.executable, "-m", "rumination", *args], capture_output=True, text=True, env=env)
    expected = json.loads(full.stdout)
    data_dir = Path(os.environ["RUMINATION_DATA_DIR"])
    for point, count in KILL_POINTS:
        before = requests(web)
        killed = subprocess.run([sys.executable, str(driver), point, str(count), *args], capture_output=True, env=env)
        assert killed.returncode == -signal.SIGKILL, (point, count, killed.stderr[-2000:])
        newest = max((data_dir / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        log = jr.read(newest / jr.JOURNAL)
        assert log.status == "interrupted", (point, count)
        resumed = subprocess.run(
            [sys.executable, "-m", "rumination", "resume", log.id, "--json", "-q"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert resumed.returncode == 0, (point, count, resumed.stderr[-2000:])
        result = json.loads(resumed.stdout)
        assert result["run_id"] == log.id and result["report"] == expected["report"], (point, count)
        assert result["sources"] == expected["sources"] or [s["url"] for s in result["sources"]] == [
            s["url"] for s in expected["sources"]
        ], (point, count)
        assert [s["observation"] for s in result["steps"]] == [s["observation"] for s in expected["steps"]]
        spent = {path: n - before[path] for path, n in requests(web).items()}
        assert spent == {"/gutenberg.html": 1, "/spread.html": 1, "/search": 1}, (point, count, spent)


async def test_a_replay_is_never_resumed_and_a_run_without_report_is_not_replayed(web, capsys):
    settings = cfg(web)
    original = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base))).run(QUESTION)
    short = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base)[:2])).run(QUESTION)
    assert await cli("replay", short.run_id) == 1
    assert "there is no report to reproduce" in capsys.readouterr().err
    assert await cli("replay", original.run_id, "--json", "-q") == 0
    replayed = json.loads(capsys.readouterr().out)["run_id"]
    log = jr.load(settings.data_dir, replayed)
    log.path.write_bytes(b"\n".join(log.path.read_bytes().splitlines()[:-1]) + b"\n")  # as if killed at the end
    assert await cli("resume", replayed) == 1
    assert f"replays run {original.run_id} and cannot be resumed" in capsys.readouterr().err
    assert await cli("sessions") == 0
    assert f"[replay of {original.run_id}]" in capsys.readouterr().out


async def test_a_password_in_a_url_is_never_written(web):
    settings = cfg(web)
    with_password = web.base.replace("http://", "http://admin:pw0rdSECRET@")
    settings = settings.model_copy(update={"searxng_url": with_password})
    result = await Researcher(settings, backend=ScriptedBackend(settings, outputs=script(web.base)[:1])).run(QUESTION)
    path = jr.find(settings.data_dir, result.run_id)
    assert "pw0rdSECRET" not in path.read_text() and path.stat().st_mode & 0o077 == 0
