"""`rumination batch`: question files, results appended as they finish, reruns, failures, interrupts, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import turn, write_script

import rumination
from rumination import batch as batch_module
from rumination.backends.scripted import ScriptedBackend
from rumination.batch import BatchQuestion, BatchStopped, read_questions, read_records, run_batch
from rumination.cli import main
from rumination.config import Config
from rumination.errors import BackendError, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from tiny_server import Handler, Served, Server, serve

TOKENIZER = str(Path(__file__).resolve().parent.parent / "prompts" / "tokenizer")

REPORT = "\n<think>\nWrite it up.\n</think>\nThe report."
FINISH = turn({"name": "finish", "arguments": {}})


def search_script(tmp_path: Path) -> Path:
    return write_script(
        tmp_path / "s.json", [turn({"name": "search", "arguments": {"query": "Gutenberg"}}), FINISH, REPORT]
    )


def web_flags(web, script: Path) -> list[str]:
    return ["--script", str(script), "--searxng-url", web.base, "--allow-private-network"]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- question files -------------------------------------------------------------------------------------------------


def test_text_questions_take_their_line_numbers_as_ids(tmp_path):
    path = tmp_path / "qs.txt"
    path.write_text("  What is A?  \n\nWhat is B?\n   \nWhat is C?\n", encoding="utf-8")
    assert read_questions(path) == [
        BatchQuestion(id="1", question="What is A?"),
        BatchQuestion(id="3", question="What is B?"),
        BatchQuestion(id="5", question="What is C?"),
    ]


def test_jsonl_questions_ids_are_optional_and_other_keys_ignored(tmp_path):
    path = tmp_path / "qs.txt"  # JSONL by its first line, whatever the suffix
    path.write_text(
        '{"id": "alpha", "question": "What is A?", "answer": "a"}\n\n'
        '{"question": "What is B?"}\n{"id": 7, "question": "C?"}\n',
        encoding="utf-8",
    )
    assert [(q.id, q.question) for q in read_questions(path)] == [
        ("alpha", "What is A?"),
        ("3", "What is B?"),
        ("7", "C?"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("qs.jsonl", '{"question": "A?"}\n{"question": "B?",\n', "line 2: not valid JSON"),
        ("qs.jsonl", "42\n", 'line 1: expected a JSON object such as {"id": "q1", "question": "..."}, or a string'),
        ("qs.jsonl", "[1]\n[2\n", "line 1: expected a JSON object"),  # JSON lines that are not objects
        ("qs.jsonl", '{"id": "a", "question": ""}\n', 'line 1: "question" must be a non-empty string'),
        ("qs.jsonl", '{"id": [1], "question": "A?"}\n', 'line 1: "id" must be a non-empty string or an integer'),
        (
            "qs.jsonl",
            '{"id": "a", "question": "A?"}\n{"id": "a", "question": "B?"}\n',
            "line 2: id 'a' is already used on line 1",
        ),
        ("qs.jsonl", '{"question": "A?"}\n{"id": "1", "question": "B?"}\n', "line 2: id '1' is already used on line 1"),
        ("qs.txt", "\n\n", "holds no questions"),
    ],
)
def test_bad_question_files_name_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=None) as caught:
        read_questions(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_pretty_printed_json_array_of_objects_or_strings(tmp_path):
    path = tmp_path / "qs.json"
    items = [
        {"id": "alpha", "question": "What is A?", "answer": "a"},
        "What is B?",
        {"question": "C?"},
        {"id": 9, "question": "D?"},
    ]
    path.write_text(json.dumps(items, indent=2, ensure_ascii=False), encoding="utf-8")
    assert len(path.read_text().splitlines()) > 4
    assert [(q.id, q.question) for q in read_questions(path)] == [
        ("alpha", "What is A?"),
        ("2", "What is B?"),  # without an id, a question's id is its item number
        ("3", "C?"),
        ("9", "D?"),
    ]
    one_line = tmp_path / "qs.txt"  # by its first character, whatever the suffix
    one_line.write_text('["Who was Gutenberg?", "中文？"]', encoding="utf-8")
    assert [(q.id, q.question) for q in read_questions(one_line)] == [("1", "Who was Gutenberg?"), ("2", "中文？")]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["A?", "B?", 7], ', item 3: expected a JSON object such as {"id": "q1", "question": "..."}, or a string'),
        (["A?", {"id": "x", "question": " "}], ', item 2: "question" must be a non-empty string'),
        ([{"id": "a", "question": "A?"}, {"id": "a", "question": "B?"}], ", item 2: id 'a' is already used by item 1"),
        (["A?", {"id": 1, "question": "B?"}], ", item 2: id '1' is already used by item 1"),
        ([], " holds no questions"),
    ],
)
def test_bad_json_array_items_are_named_by_number(tmp_path, items, message):
    path = tmp_path / "qs.json"
    path.write_text(json.dumps(items, indent=4), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_questions(path)
    assert f"{path}{message}" in str(caught.value)


def test_a_broken_json_array_says_where(tmp_path):
    path = tmp_path / "qs.json"
    path.write_text('[\n  {"question": "A?"},\n  {"question": "B?"}\n  {"question": "C?"}\n]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_questions(path)
    assert f"{path}: not a valid JSON array (Expecting ',' delimiter: line 4 column 3" in str(caught.value)


def test_an_evaluation_dataset_may_be_a_json_array_too(tmp_path):
    from rumination.eval.dataset import EvalItem, read_jsonl

    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"question": "Capital of France?", "answer": "Paris"}], indent=2), encoding="utf-8")
    assert read_jsonl(path) == [EvalItem(id="1", question="Capital of France?", answers=["Paris"])]
    path.write_text(json.dumps([{"question": "Q?", "answer": "a"}, "Just a question?"], indent=2), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"item 2: expected a JSON object"):
        read_jsonl(path)


def test_duplicate_ids_are_refused_by_the_command(tmp_path, capsys):
    path = tmp_path / "qs.jsonl"
    path.write_text('{"id": "x", "question": "A?"}\n{"id": "x", "question": "B?"}\n', encoding="utf-8")
    assert main(["batch", str(path), "--script", str(search_script(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "line 2: id 'x' is already used on line 1" in err and "Traceback" not in err
    assert not (tmp_path / "qs.results.jsonl").exists()


def test_missing_questions_file_exits_2(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "none.txt"), "--script", str(search_script(tmp_path))]) == 2
    assert "questions file not found" in capsys.readouterr().err


# --- runs through the command ---------------------------------------------------------------------------------------


def test_text_file_batch_writes_one_record_per_question(web, tmp_path, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Who was Gutenberg?\n\nHow did printing spread?\n", encoding="utf-8")
    assert main(["batch", str(questions), *web_flags(web, search_script(tmp_path)), "--concurrency", "4"]) == 0
    out, err = capsys.readouterr()
    results = tmp_path / "qs.results.jsonl"
    records = lines_of(results)
    assert [(r["id"], r["question"]) for r in records] == [
        ("1", "Who was Gutenberg?"),
        ("3", "How did printing spread?"),
    ]
    for record in records:
        assert set(record) == {
            "id",
            "question",
            "report",
            "sources",
            "stop_reason",
            "usage",
            "error",
            "seconds",
            "turns",
        }
        assert record["report"] == "The report." and record["error"] is None
        assert record["stop_reason"] == "finished" and record["turns"] == 2 and record["seconds"] > 0
        assert len(record["usage"]["generations"]) == 3
        assert [s["url"] for s in record["sources"]] == []  # searched, never opened a page
    assert "2 questions answered, 0 failed, 0 already done, in " in out and str(results) in out
    assert "the scripted backend runs one question at a time; --concurrency applies to --backend openai" in err
    assert "[1/2] question 1: finished after 2 tool turns" in err and "[2/2] question 3:" in err
    # A rerun researches nothing: every id is in the results already.
    assert main(["batch", str(questions), *web_flags(web, search_script(tmp_path))]) == 0
    assert "0 questions answered, 0 failed, 2 already done" in capsys.readouterr().out
    assert len(lines_of(results)) == 2


def test_jsonl_batch_with_sources_and_quiet(web, tmp_path, capsys):
    questions = tmp_path / "qs.jsonl"
    questions.write_text('{"id": "g", "question": "Who was Gutenberg?", "topic": "print"}\n', encoding="utf-8")
    script = write_script(
        tmp_path / "s.json",
        [
            turn({"name": "search", "arguments": {"query": "Gutenberg"}}),
            turn({"name": "click", "arguments": {"link_id": 0}}),
            FINISH,
            f"\n<think>\nx\n</think>\nGutenberg printed [1]({web.base}/gutenberg.html).",
        ],
    )
    output = tmp_path / "out" / "r.jsonl"
    output.parent.mkdir()
    assert main(["batch", str(questions), *web_flags(web, script), "-o", str(output), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "1 question answered" in out
    (record,) = read_records(output).values()
    assert record.id == "g" and record.turns == 3
    assert [(s.url, s.title, s.cited) for s in record.sources] == [
        (f"{web.base}/gutenberg.html", "Johannes Gutenberg and movable type", True)
    ]


def test_results_into_a_missing_directory_are_refused(tmp_path, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Q?\n")
    code = main(["batch", str(questions), "--script", "x.json", "-o", str(tmp_path / "no" / "r.jsonl")])
    assert code == 2 and "its directory does not exist" in capsys.readouterr().err


def test_a_truncated_last_line_is_dropped_and_rewritten(web, tmp_path, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Who was Gutenberg?\nHow did printing spread?\n", encoding="utf-8")
    flags = web_flags(web, search_script(tmp_path))
    assert main(["batch", str(questions), *flags]) == 0
    results = tmp_path / "qs.results.jsonl"
    first, second = results.read_text(encoding="utf-8").splitlines()
    results.write_text(first + "\n" + second[: len(second) // 2], encoding="utf-8")  # a crash mid-write
    assert read_records(results).keys() == {"1"}
    capsys.readouterr()
    assert main(["batch", str(questions), *flags]) == 0
    out, err = capsys.readouterr()
    assert "1 question answered, 0 failed, 1 already done" in out
    assert "its last line was cut off mid-write" in err
    assert [r["id"] for r in lines_of(results)] == ["1", "2"]  # every line whole, each id once


def test_a_changed_question_under_an_answered_id_is_refused(web, tmp_path, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Who was Gutenberg?\n", encoding="utf-8")
    flags = web_flags(web, search_script(tmp_path))
    assert main(["batch", str(questions), *flags, "-q"]) == 0
    questions.write_text("A new first line?\nWho was Gutenberg?\n", encoding="utf-8")  # the ids shift
    assert main(["batch", str(questions), *flags, "-q"]) == 2
    assert "answers 1 of these ids with another question (ids: 1)" in capsys.readouterr().err


def test_failed_questions_are_recorded_skipped_on_rerun_and_retried_on_request(web, tmp_path, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Who was Gutenberg?\nHow did printing spread?\n", encoding="utf-8")
    short = write_script(tmp_path / "short.json", [turn({"name": "search", "arguments": {"query": "Gutenberg"}})])
    assert main(["batch", str(questions), *web_flags(web, short)]) == 1  # every question fails: the batch goes on
    results = tmp_path / "qs.results.jsonl"
    records = lines_of(results)
    assert [r["id"] for r in records] == ["1", "2"]
    assert all("ran out of outputs" in r["error"] and r["report"] == "" for r in records)
    assert "0 questions answered, 2 failed" in capsys.readouterr().out
    # Failed records count as done unless --retry-failed.
    assert main(["batch", str(questions), *web_flags(web, search_script(tmp_path))]) == 0
    assert "2 already done (2 of them failed: --retry-failed tries them again)" in capsys.readouterr().out
    assert main(["batch", str(questions), *web_flags(web, search_script(tmp_path)), "--retry-failed"]) == 0
    assert "2 questions answered, 0 failed, 0 already done" in capsys.readouterr().out
    records = lines_of(results)
    assert [(r["id"], r["error"], r["report"]) for r in records] == [
        ("1", None, "The report."),
        ("2", None, "The report."),
    ]


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(web, tmp_path, monkeypatch, capsys):
    questions = tmp_path / "qs.txt"
    questions.write_text("Who was Gutenberg?\nHow did printing spread?\n", encoding="utf-8")
    terminal = _TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["batch", str(questions), *web_flags(web, search_script(tmp_path))]) == 0
    shown = terminal.getvalue()
    assert "batch: 100%" in shown and "2/2" in shown and "2 done, 0 failed, 0 running" in shown
    assert "[1/2]" not in shown  # plain lines only without a terminal


# --- the Python API -------------------------------------------------------------------------------------------------


def test_blocking_api_takes_a_list_or_a_path(web, tmp_path):
    script = search_script(tmp_path)
    settings = {"script": str(script), "searxng_url": web.base, "progress": False}
    summary = rumination.batch(["Who was Gutenberg?", "How did printing spread?"], tmp_path / "r.jsonl", **settings)
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 0)
    assert {k: r.question for k, r in read_records(tmp_path / "r.jsonl").items()} == {
        "1": "Who was Gutenberg?",
        "2": "How did printing spread?",
    }
    questions = tmp_path / "qs.jsonl"
    questions.write_text('{"id": "1", "question": "Who was Gutenberg?"}\n{"id": "3", "question": "Q3?"}\n')
    summary = rumination.batch(questions, tmp_path / "r.jsonl", **settings)
    assert (summary.done, summary.skipped) == (1, 1)
    assert callable(rumination.batch) and rumination.batch.run_batch is run_batch


class _FailingBackend(ScriptedBackend):
    """Raises an unexpected error for a question that asks for it."""

    async def generate(self, prompt, params):
        if "boom" in prompt.text:
            raise ValueError("the backend tripped")
        async for chunk in super().generate(prompt, params):
            yield chunk


async def test_an_unexpected_error_fails_its_question_only(web, tmp_path, caplog):
    config = Config(backend="scripted", searxng_url=web.base)
    backend = _FailingBackend(config, outputs=[FINISH, REPORT])
    questions = [BatchQuestion(id=i, question=q) for i, q in (("a", "First?"), ("b", "Go boom?"), ("c", "Third?"))]
    with caplog.at_level(logging.ERROR, logger="rumination.batch"):
        summary = await run_batch(questions, config, tmp_path / "r.jsonl", progress=False, backend=backend)
    assert (summary.done, summary.failed) == (2, 1)
    records = read_records(tmp_path / "r.jsonl")
    assert [records[i].error for i in "abc"] == [None, "ValueError: the backend tripped", None]
    assert records["b"].stop_reason is None and records["b"].usage is None and records["b"].turns == 0
    assert records["c"].report == "The report."
    (logged,) = caplog.records
    assert logged.getMessage() == "question b failed unexpectedly" and logged.exc_info[0] is ValueError
    assert backend.prompts == []  # each question ran on its own copy, replaying the script from its start


class _Overlapping(ScriptedBackend):
    """A scripted backend that says it serves runs at once, and records how many generate at the same time."""

    concurrent = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.live = {"now": 0, "most": 0, "loads": 0}
        self.overlapped = asyncio.Event()  # shared by the per-run copies

    def load(self, progress=None):
        self.live["loads"] += 1
        super().load(progress)

    async def generate(self, prompt, params):
        self.live["now"] += 1
        self.live["most"] = max(self.live["most"], self.live["now"])
        if self.live["now"] > 1:
            self.overlapped.set()
        try:
            await asyncio.wait_for(self.overlapped.wait(), 10)  # no run finishes before two have overlapped
            async for chunk in super().generate(prompt, params):
                yield chunk
        finally:
            self.live["now"] -= 1


async def test_concurrent_runs_overlap_and_share_one_paced_engine(web, tmp_path, monkeypatch, capsys):
    built = {"engines": 0, "fetchers": 0}

    def counted(kind, make):
        def build(config):
            built[kind] += 1
            return make(config)

        return build

    monkeypatch.setattr(batch_module, "make_engine", counted("engines", batch_module.make_engine))
    monkeypatch.setattr(batch_module, "make_fetcher", counted("fetchers", batch_module.make_fetcher))
    arrivals = []
    search = web.routes["/search"]
    web.routes["/search"] = lambda exchange: (arrivals.append(time.monotonic()), search(exchange))
    config = Config(backend="scripted", searxng_url=web.base, search_min_interval=0.3, allow_private_network=True)
    backend = _Overlapping(
        config, outputs=[turn({"name": "search", "arguments": {"query": "printing"}}), FINISH, REPORT]
    )
    questions = [BatchQuestion(id=str(i), question=f"Question {i}?") for i in range(1, 5)]
    summary = await run_batch(questions, config, tmp_path / "r.jsonl", concurrency=3, backend=backend)
    assert (summary.done, summary.failed) == (4, 0)
    assert backend.live["most"] == 3 and backend.live["loads"] == 1
    assert built == {"engines": 1, "fetchers": 1}
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 4 and min(gaps) > 0.25  # the engine's pacing holds across the runs
    assert "one question at a time" not in capsys.readouterr().err
    assert all(r.sources == [] and r.report == "The report." for r in read_records(tmp_path / "r.jsonl").values())


def test_scripted_for_run_replays_from_the_start_and_keeps_single_runs_unchanged():
    backend = ScriptedBackend(Config(backend="scripted"), outputs=[FINISH, REPORT])
    backend.load()
    first, second = backend.for_run(), backend.for_run()
    assert first.tokenizer is backend.tokenizer and first.outputs == second.outputs
    first.prompts.append("p")
    assert second.prompts == [] and backend.prompts == []


# --- a real process: killed, interrupted ----------------------------------------------------------------------------


def _stalling_site(loopback):
    """A page that answers at once, except the third request, which stalls until the server stops."""

    def page(exchange):
        if exchange.hit == 3 and exchange.stall(120):
            exchange.close_connection = True
            return
        exchange.send(200, b"<html><head><title>Page</title></head><body><p>Printing history notes.</p></body></html>")

    return loopback({"/page": page})


def _batch_process(site, tmp_path: Path) -> tuple[list[str], Path]:
    script = write_script(
        tmp_path / "s.json", [turn({"name": "open", "arguments": {"url": site.url("/page")}}), FINISH, REPORT]
    )
    questions = tmp_path / "qs.txt"
    questions.write_text("First?\nSecond?\nThird?\nFourth?\n", encoding="utf-8")
    command = [sys.executable, "-m", "rumination", "batch", str(questions), "--script", str(script)]
    command += ["--searxng-url", site.base, "--allow-private-network", "--open-any-url", "--no-page-cache"]
    command += ["--allow-domain", "127.0.0.1"]
    command += ["--no-robots-txt", "--prefetch", "0"]
    return command, tmp_path / "qs.results.jsonl"


def _spawn(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


@pytest.mark.slow
def test_killed_batch_resumes_and_answers_each_question_once(loopback, tmp_path):
    site = _stalling_site(loopback)
    command, results = _batch_process(site, tmp_path)
    proc = _spawn(command)
    site.wait_for("/page", 3, timeout=60)  # question 3 is stuck on its page
    proc.kill()
    proc.communicate(timeout=30)
    assert [r["id"] for r in lines_of(results)] == ["1", "2"]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 questions answered, 0 failed, 2 already done" in rerun.stdout
    records = lines_of(results)
    assert [r["id"] for r in records] == ["1", "2", "3", "4"]
    assert all(r["error"] is None and r["sources"][0]["url"] == site.url("/page") for r in records)
    assert site.hits["/page"] == 5  # the stalled request, then question 3 once more


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_lines_and_exits_130(loopback, tmp_path):
    site = _stalling_site(loopback)
    command, results = _batch_process(site, tmp_path)
    proc = _spawn(command)
    site.wait_for("/page", 3, timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # long before the stalled page would answer
    assert proc.returncode == 130, err
    assert "interrupted" in err and "the finished questions are kept in" in err and "Traceback" not in err
    assert [(r["id"], r["error"]) for r in lines_of(results)] == [("1", None), ("2", None)]


# --- a batch that stops when question after question fails ---------------------------------------------------------


class _Refusing(ScriptedBackend):
    """Fails every question that asks for it, as a server that is down would."""

    async def generate(self, prompt, params):
        if "down" in prompt.text:
            raise BackendError("cannot reach the model server")
        async for chunk in super().generate(prompt, params):
            yield chunk


def test_the_failures_in_a_row_that_stop_a_batch():
    assert [batch_module.stop_after(n) for n in (1, 2, 3, 4, 8, 32)] == [5, 5, 5, 6, 10, 34]


async def test_a_success_resets_the_count_of_failures_in_a_row(tmp_path):
    config = Config(backend="scripted", search="searxng", searxng_url="http://127.0.0.1:9")
    backend = _Refusing(config, outputs=[FINISH, REPORT])
    kinds = ["down"] * 4 + ["up"] + ["down"] * 4 + ["up"]
    questions = [BatchQuestion(id=str(i), question=f"Is it {kind}?") for i, kind in enumerate(kinds, 1)]
    summary = await run_batch(questions, config, tmp_path / "r.jsonl", progress=False, backend=backend)
    assert (summary.done, summary.failed) == (2, 8)  # never 5 in a row: the batch went on
    more = [BatchQuestion(id=str(i), question="Is it down?") for i in range(11, 21)]
    with pytest.raises(BatchStopped) as caught:
        await run_batch([*questions, *more], config, tmp_path / "r.jsonl", progress=False, backend=backend)
    assert (caught.value.summary.done, caught.value.summary.failed, caught.value.summary.skipped) == (0, 5, 10)
    message = str(caught.value)
    assert message.startswith("the batch stopped after 5 questions in a row failed; the last (question 15): ")
    assert message.split("\n")[0].endswith("(question 15): cannot reach the model server")
    assert "0 answered and 5 failed in this batch" in message and "5 not researched" in message
    assert "run the same command again with --retry-failed" in message
    assert list(read_records(tmp_path / "r.jsonl")) == [str(i) for i in range(1, 16)]


class _CrashingServer(Server):
    """A tiny server whose process dies after `after` generation requests: nothing listens, every connection drops."""

    def __init__(self, served: Served, after: int):
        super().__init__(served)
        self.RequestHandlerClass = _CrashingHandler
        self.after, self.sockets, self.down = after, [], threading.Event()

    def process_request(self, request, client_address):
        self.sockets.append(request)
        super().process_request(request, client_address)

    def crash(self) -> None:
        if self.down.is_set():
            return
        self.down.set()
        self.shutdown()  # called from a handler thread, never the one serving
        self.server_close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _CrashingHandler(Handler):
    """Takes the server down instead of answering once it has answered its share."""

    def do_POST(self):
        if self.server.down.is_set() or len(self.server.served.requests) >= self.server.after:
            self.close_connection = True
            self.server.crash()
            return
        super().do_POST()


def test_a_server_that_goes_down_stops_the_batch_and_a_retry_finishes_it(tmp_path, capsys):
    from transformers import AutoTokenizer

    outputs = [FINISH, REPORT]
    served = Served(name="tiny-glm", tokenizer=AutoTokenizer.from_pretrained(TOKENIZER), script=outputs)
    server = _CrashingServer(served, after=10).start()  # two generations a question: about 5 answered
    port = server.server_address[1]
    questions = tmp_path / "qs.txt"
    questions.write_text("".join(f"Question {i}?\n" for i in range(1, 41)), encoding="utf-8")
    flags = ["--base-url", server.url, "--model", TOKENIZER, "--server-retries", "0", "--concurrency", "2"]
    flags += ["--search", "searxng", "--searxng-url", "http://127.0.0.1:9", "-q"]
    try:
        started = time.monotonic()
        assert main(["batch", str(questions), *flags]) == 1
        assert time.monotonic() - started < 60
    finally:
        server.crash()
    err = capsys.readouterr().err
    assert "rumination: error: the batch stopped after 5 questions in a row failed; the last (question " in err
    assert "run the same command again with --retry-failed" in err and "Traceback" not in err
    records = lines_of(tmp_path / "qs.results.jsonl")
    answered = [r for r in records if r["error"] is None]
    assert 4 <= len(answered) <= 5 and all(r["report"] for r in answered)
    assert [r["error"] is None for r in records[-5:]] == [False] * 5  # the failures stay recorded
    assert len(records) <= len(answered) + 6  # the rest were never started
    assert f"{len(answered)} answered and {len(records) - len(answered)} failed in this batch" in err
    # The server is back: the same command with --retry-failed researches the failed and the unstarted questions.
    server = serve(script=outputs, port=port)
    try:
        assert main(["batch", str(questions), *flags, "--retry-failed"]) == 0
    finally:
        server.stop()
    assert f"{40 - len(answered)} questions answered, 0 failed, {len(answered)} already done" in capsys.readouterr().out
    records = read_records(tmp_path / "qs.results.jsonl")
    assert len(records) == 40 and all(r.error is None for r in records.values())
