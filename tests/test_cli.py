"""The command line: fast help, exit codes, configuration precedence, interrupts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import turn, wait_until_reading_stdin, write_script

from rumination.cli import main


def _run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rumination", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["config", "--help"]])
@pytest.mark.slow
def test_help_imports_no_heavy_module(args):
    code = (
        "import sys\nfrom rumination.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'textual', 'trafilatura', 'httpx', 'ddgs')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out
    assert "usage: rumination" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "ask" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "q", "--backend", "nope"], "unknown model backend 'nope'; available: local, openai, scripted"),
        (
            ["ask", "q", "--search", "bing-ish", "--backend", "scripted", "--script", "{script}"],
            "unknown search engine",
        ),
        (["ask", "q", "--backend", "scripted"], "needs --script"),
        (["ask", "q", "--backend", "scripted", "--script", "/no/such/file.json"], "script file not found"),
        (["ask", "q", "--backend", "scripted", "--script", "{script}", "--search", "searxng"], "--searxng-url"),
        (["ask", "q", "--max-turns", "0"], "max_turns"),
        (["ask", ""], "the question is empty"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(args, message, tmp_path, capsys):
    script = write_script(tmp_path / "s.json", [turn({"name": "finish", "arguments": {}}), "report"])
    assert main([a.replace("{script}", str(script)) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_unknown_flag_exits_2():
    result = _run("ask", "q", "--no-such-flag")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_bad_script_content_exits_2(tmp_path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text('{"not": "a list"}')
    assert main(["ask", "q", "--backend", "scripted", "--script", str(bad)]) == 2
    assert "must be a JSON array of strings" in capsys.readouterr().err


def test_runtime_error_exits_1(web, tmp_path, capsys):
    script = write_script(tmp_path / "s.json", [turn({"name": "search", "arguments": {"query": "printing"}})])
    code = main(
        ["ask", "q", "--backend", "scripted", "--script", str(script), "--search", "searxng", "--searxng-url", web.base]
    )
    assert code == 1
    assert "ran out of outputs" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_model_exits_1_without_traceback(tmp_path):
    result = _run(
        "ask", "q", "-m", str(tmp_path / "no-model"), "--search", "searxng", "--searxng-url", "http://127.0.0.1:9"
    )
    assert result.returncode == 1
    assert "model directory not found" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_search_engine_is_reported_not_crashed(tmp_path, capsys):
    script = write_script(
        tmp_path / "s.json",
        [
            turn({"name": "search", "arguments": {"query": "printing"}}),
            turn({"name": "finish", "arguments": {}}),
            "\n<think>\nx\n</think>R",
        ],
    )
    code = main(
        [
            "ask",
            "q",
            "--backend",
            "scripted",
            "--script",
            str(script),
            "--search",
            "searxng",
            "--searxng-url",
            "http://127.0.0.1:9",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == "R"
    assert "SearXNG at http://127.0.0.1:9 is unreachable" in err


@pytest.mark.slow
def test_config_precedence_file_env_flag(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('max_turns = 7\nsearch = "searxng"\nsearxng_url = "http://127.0.0.1:8888"\ntemperature = 0.5\n')
    env = {"RUMINATION_CONFIG_FILE": str(cfg), "RUMINATION_TEMPERATURE": "0.3"}
    result = _run("config", env=env)
    assert result.returncode == 0
    assert f"# config file: {cfg} (found)" in result.stdout
    assert "max_turns = 7" in result.stdout and "temperature = 0.3" in result.stdout
    assert 'search = "searxng"' in result.stdout
    assert _run("config", "--path", env=env).stdout.strip() == str(cfg)


@pytest.mark.slow
def test_flags_override_env_and_file(web, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text("max_turns = 1\n")
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("RUMINATION_MAX_TURNS", "1")
    search = turn({"name": "search", "arguments": {"query": "printing"}})
    script = write_script(tmp_path / "s.json", [search, search.replace("printing", "press"), "\n<think>\nx\n</think>R"])
    args = [
        "ask",
        "q",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--search",
        "searxng",
        "--searxng-url",
        web.base,
        "--json",
        "-q",
    ]
    assert main([*args, "--max-turns", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["stop_reason"] == "max_turns"
    assert (
        len(
            json.loads(
                _run(
                    *args[:-2], "--json", "-q", env={"RUMINATION_MAX_TURNS": "2", "RUMINATION_CONFIG_FILE": str(cfg)}
                ).stdout
            )["steps"]
        )
        == 2
    )


@pytest.mark.slow
def test_malformed_config_file_exits_2(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("max_turns = = 3\n")
    result = _run("config", env={"RUMINATION_CONFIG_FILE": str(cfg)})
    assert result.returncode == 2 and "config" in result.stderr and "Traceback" not in result.stderr
    cfg.write_text("no_such_setting = 1\n")
    result = _run("config", env={"RUMINATION_CONFIG_FILE": str(cfg)})
    assert result.returncode == 2 and "no_such_setting" in result.stderr


def _start_slow_run(web, tmp_path, *extra: str) -> subprocess.Popen:
    script = write_script(
        tmp_path / "s.json",
        [turn({"name": "open", "arguments": {"url": f"{web.base}/slow?delay=20"}}), "\n<think>\nx\n</think>Partial."],
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rumination",
            "ask",
            "q",
            "--backend",
            "scripted",
            "--script",
            str(script),
            "--search",
            "searxng",
            "--searxng-url",
            web.base,
            "--allow-private-network",
            "--open-any-url",
            "--allow-domain",
            "127.0.0.1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    web.wait_for("/slow", timeout=60)
    assert web.hits["/slow"] == 1
    return proc


@pytest.mark.slow
def test_first_ctrl_c_writes_the_report_from_what_was_gathered(web, tmp_path):
    proc = _start_slow_run(web, tmp_path, "--json")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)  # well before the slow page would answer
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["stop_reason"] == "cancelled" and result["report"] == "Partial."
    assert result["steps"][0]["error"] == "cancelled"
    assert "press Ctrl-C again" in err


def test_second_ctrl_c_stops_now():
    import asyncio

    from rumination.cli import _handle_ctrl_c

    class Researcher:
        finish_requests = 0

        def request_finish(self):
            self.finish_requests += 1

    researcher = Researcher()

    async def scenario():
        finish_requested = asyncio.Event()
        researcher.request_finish = lambda: (setattr(researcher, "finish_requests", 1), finish_requested.set())
        _handle_ctrl_c(researcher, [True])
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(finish_requested.wait(), 10)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(asyncio.Event().wait(), 10)  # only the second Ctrl-C's cancel ends this

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())
    assert researcher.finish_requests == 1


@pytest.mark.slow
def test_ctrl_c_before_research_starts_exits_130(tmp_path):
    # Reading the question from a pipe that never closes: Ctrl-C must still end the program.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rumination", "ask", "--backend", "scripted", "--script", str(tmp_path / "none.json")],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until_reading_stdin(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


def test_output_into_a_missing_directory_is_refused_before_research(tmp_path, capsys):
    code = main(["ask", "q", "--backend", "scripted", "--script", "x.json", "-o", str(tmp_path / "no" / "r.md")])
    assert code == 2 and "directory does not exist" in capsys.readouterr().err


def test_missing_config_file_flag_exits_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml"), "config"]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_config_flag_after_the_subcommand(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_turns = 9\n")
    result = _run("config", "--config", str(cfg))
    assert result.returncode == 0 and "max_turns = 9" in result.stdout


def test_script_and_searxng_url_imply_their_backend_and_engine(web, tmp_path, capsys):
    script = write_script(
        tmp_path / "s.json",
        [
            turn({"name": "search", "arguments": {"query": "Gutenberg"}}),
            turn({"name": "finish", "arguments": {}}),
            "\n<think>\nx\n</think>R",
        ],
    )
    assert main(["ask", "q", "--script", str(script), "--searxng-url", web.base, "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "scripted" and data["steps"][0]["observation"].startswith("【0†Johannes")


@pytest.mark.slow
def test_bad_search_settings_fail_before_the_model_loads(tmp_path):
    result = _run("ask", "q", "-m", str(tmp_path), "--search", "searxng")
    assert result.returncode == 2 and "--searxng-url" in result.stderr and "loading" not in result.stderr


@pytest.mark.slow
def test_closed_stdout_pipe_is_not_a_traceback(web, tmp_path):
    script = write_script(
        tmp_path / "s.json",
        [
            turn({"name": "search", "arguments": {"query": "Gutenberg"}}),
            turn({"name": "finish", "arguments": {}}),
            "\n<think>\nx\n</think>R",
        ],
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rumination",
            "ask",
            "q",
            "--script",
            str(script),
            "--searxng-url",
            web.base,
            "--jsonl",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_local_model_flags_reach_the_backend_and_bad_combinations_are_explained(tiny_model_dir, capsys):
    base = ["ask", "q", "-m", str(tiny_model_dir), "--device", "cpu", "-q"]
    assert main([*base, "--quantize", "8bit"]) == 1
    assert "--quantize 8bit needs a CUDA GPU (bitsandbytes)" in capsys.readouterr().err
    assert main([*base, "--kv-cache", "dynamic", "--compile", "on"]) == 1
    assert "--compile on needs --kv-cache static" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--prefill-chunk", "3", "prefill_chunk: Input should be greater than or equal to 16 (from --prefill-chunk)"),
        ("--context-window", "10", "(from --context-window)"),
        ("--max-context", "10", "(from --max-context)"),  # the old name, kept hidden for one release
    ],
)
def test_out_of_range_local_model_flags_exit_2_naming_the_flag(flag, value, named, capsys):
    assert main(["ask", "q", flag, value]) == 2
    assert named in capsys.readouterr().err
