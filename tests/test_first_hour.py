"""Rough edges a new user met in the first hour, each pinned by a test that fails without its fix."""

from __future__ import annotations

import json

from conftest import turn, write_script

from rumination import events as ev
from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.cli import main
from rumination.config import Config

REPORT = "\n<think>\nok\n</think>R"
SEARCH_THEN_REPORT = [turn({"name": "search", "arguments": {"query": "printing"}}), turn({"name": "finish"}), REPORT]


def test_the_trace_header_shows_the_engine_as_given(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "press.md").write_text("# The printing press\n\nGutenberg printed with movable type around 1440.\n")
    assert main(["index", str(docs), "--name", "papers"]) == 0
    script = write_script(
        tmp_path / "s.json",
        SEARCH_THEN_REPORT,
    )
    capsys.readouterr()
    assert main(["ask", "q", "--script", str(script), "--search", "local:papers", "--fallback", "ddgs"]) == 0
    err = capsys.readouterr().err
    assert "search: local:papers → ddgs" in err
    assert "Done: 2 tool turns" in err


async def test_the_streamed_report_is_the_report_even_when_the_model_closes_its_thinking_twice(web):
    report_output = (
        "\n<think>\nOutline first.\n</think>Draft that was still thinking.\n</think>\n# Report\n\nFinal text."
    )
    cfg = Config(backend="scripted", searxng_url=web.base, allow_private_network=True)
    backend = ScriptedBackend(cfg, outputs=[turn({"name": "finish", "arguments": {}}), report_output], chunk_chars=5)
    streamed, resets, result = "", 0, None
    async for event in Researcher(cfg, backend=backend).stream("q"):
        if isinstance(event, ev.ReportDelta):
            if event.reset:
                streamed, resets = "", resets + 1
            streamed += event.text
        elif isinstance(event, ev.RunFinished):
            result = event.result
    assert result is not None and resets == 1
    assert streamed.strip() == result.report == "# Report\n\nFinal text."


def test_turns_and_usage_generations_are_named_apart(web, tmp_path, capsys):
    script = write_script(
        tmp_path / "s.json",
        SEARCH_THEN_REPORT,
    )
    flags = ["--script", str(script), "--searxng-url", web.base, "--allow-private-network", "--json", "-q"]
    assert main(["ask", "q", *flags]) == 0
    result = json.loads(capsys.readouterr().out)
    generations = result["usage"]["generations"]
    assert result["turns"] == 2 and len(generations) == 3
    assert [g["report"] for g in generations] == [False, False, True]
    assert "turns" not in result["usage"]


def test_a_failed_search_step_carries_its_reason_in_json(tmp_path, capsys):
    from conftest import closed_port

    script = write_script(
        tmp_path / "s.json",
        SEARCH_THEN_REPORT,
    )
    dead = f"http://127.0.0.1:{closed_port()}"
    assert main(["ask", "q", "--script", str(script), "--searxng-url", dead, "--json", "-q"]) == 0
    step = json.loads(capsys.readouterr().out)["steps"][0]
    assert step["error"] == "search" and step["ok"] is False
    assert "unreachable" in step["detail"] and "connection was refused" in step["detail"]
    assert "Traceback" not in step["detail"] and "Errno" not in step["detail"]


async def test_the_observation_event_is_the_recorded_step(web):
    cfg = Config(backend="scripted", searxng_url=web.base, allow_private_network=True)
    outputs = [
        turn({"name": "search", "arguments": {"query": "gutenberg"}}),
        "no call at all",
        turn({"name": "finish"}),
    ]
    backend = ScriptedBackend(cfg, outputs=[*outputs, "\n<think>\nok\n</think>R"])
    observed, result = [], None
    async for event in Researcher(cfg, backend=backend).stream("q"):
        if isinstance(event, ev.ObservationEvent):
            observed.append(event.model_dump(exclude={"type", "at"}))
        elif isinstance(event, ev.RunFinished):
            result = event.result
    assert result is not None
    assert observed == [step.model_dump() for step in result.steps if step.call is None or step.tool != "finish"]
    assert [s.tool for s in result.steps] == ["search", None, "finish"]


def test_escape_sequences_never_reach_the_terminal():
    import io

    from rumination.results import Source, ToolCall
    from rumination.sanitize import clean_text, terminal_safe

    evil = "Evil \x1b]0;pwned\x07 title\x1b[2J\r\nnext\x9b31m"
    assert "\x1b" not in clean_text(evil) and "\x07" not in clean_text(evil) and "\x9b" not in clean_text(evil)
    assert terminal_safe("a\tb\r\nc\rd") == "a\tb\nc\nd"
    from rumination.console import Trace

    out = io.StringIO()
    trace = Trace(out, color=False)
    trace(ev.ThinkingDelta(turn=1, text="thinking \x1b[31mred"))
    step = {"turn": 1, "call": ToolCall(name="open", arguments={"url": "u"}), "observation": "x", "ok": True}
    trace(ev.ObservationEvent(**step, source_id=1, title=evil, url="https://e.example/\x1b[0m"))
    trace(ev.ErrorEvent(message="warning \x1b]8;;http://x\x07link"))
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert Source(id=1, url="u", final_url="u", title="t", fetched_at="2026-01-01T00:00:00Z").title == "t"


async def test_a_page_title_with_escapes_is_cleaned_before_it_becomes_a_source():
    from rumination.browser import Browser
    from rumination.web.base import Page

    class EvilTitles:
        name = "evil"

        async def fetch(self, url: str) -> Page:
            return Page(url=url, final_url=url, title="T\x1b]0;x\x07\nline", text="body", content_type="text/html")

        async def aclose(self) -> None:
            """Nothing to close."""

    browser = Browser(Config(open_any_url=True), engine=None, fetcher=EvilTitles(), truncate=lambda t, n: (t, 1))
    result = await browser.open("https://e.example/")
    assert result.ok and browser.sources[0].title == "T]0;x line" == result.title  # inert without its ESC


def test_a_model_name_that_is_neither_a_directory_nor_a_hub_id_is_a_clear_error(capsys):
    for name in ("models/glm/z1", "foo bar"):
        assert main(["ask", "q", "-m", name, "--device", "cpu", "-q"]) == 1
        err = capsys.readouterr().err
        assert "neither a directory nor a Hugging Face model id" in err and "Traceback" not in err


def test_the_trace_lists_the_sources_and_the_links_never_read(web, tmp_path, capsys):
    report = f"\n<think>\nok\n</think># R\n\nSee [1]({web.base}/gutenberg.html) and https://never.example/read."
    script = write_script(
        tmp_path / "s.json",
        [turn({"name": "open", "arguments": {"url": f"{web.base}/gutenberg.html"}}), turn({"name": "finish"}), report],
    )
    flags = ["--script", str(script), "--searxng-url", web.base, "--allow-private-network", "--open-any-url"]
    flags += ["--allow-domain", "127.0.0.1"]
    assert main(["ask", "q", *flags]) == 0
    err = capsys.readouterr().err
    assert f"[1] Johannes Gutenberg and movable type · {web.base}/gutenberg.html (cited)" in err
    assert "warning: 1 citation points at a page the run never read: https://never.example/read\n" in err


def test_small_messages_say_what_to_do(tmp_path, monkeypatch, capsys, web):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["ask", "q", "--script", str(empty)]) == 2
    assert "has no outputs" in capsys.readouterr().err
    monkeypatch.setenv("RUMINATION_CONFIG", "x.toml")
    assert main(["config"]) == 2
    assert "did you mean RUMINATION_CONFIG_FILE" in capsys.readouterr().err
    monkeypatch.delenv("RUMINATION_CONFIG")
    assert main(["search", "q", "--searxng-url", web.url("/status/500")]) == 1
    assert "check --searxng-url" in capsys.readouterr().out


def test_fetch_prints_the_page_exactly_as_the_model_sees_it(web, capsys):
    # The reason phrase is the server's: the loop defuses its role tokens before the model sees it, so must fetch.
    assert main(["fetch", web.url("/forged-reason"), "--allow-private-network", "--no-page-cache"]) == 1
    out = capsys.readouterr().out
    assert "<|user|>" not in out and "< |user|>" in out
