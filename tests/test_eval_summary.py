"""Score records, their mean and spread over runs, the text table, and the Markdown summary with its plot."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

from rumination.eval.judge import Grade, Grading
from rumination.eval.summary import (
    PLOT_HINT,
    ScoreRecord,
    plot,
    run_metrics,
    summarize,
    text_table,
    write_summary,
)


def record(run: int, id_: str, *, em: bool, f1: float, contained: bool, grade: Grade | None = None, **extra):
    values = {
        "run": run,
        "id": id_,
        "question": f"question {id_}?",
        "answers": ["a"],
        "short_answer": "a" if em else "b",
        "exact_match": em,
        "f1": f1,
        "contained": contained,
        "grading": Grading(grade=grade, output=grade[0].upper()) if grade else None,
        "judge": "scripted:judge" if grade else None,
        "turns": 4,
        "generated_tokens": 1000,
        "seconds": 10.0,
        "report_sha256": "0" * 64,
    }
    return ScoreRecord(**(values | extra))


def two_runs() -> list[ScoreRecord]:
    return [
        # run 1: 2 of 4 exact, judge: 3 correct, 1 incorrect
        record(1, "q1", em=True, f1=1.0, contained=True, grade="correct", turns=2, generated_tokens=500, seconds=5),
        record(1, "q2", em=True, f1=1.0, contained=True, grade="correct", turns=4, generated_tokens=1500, seconds=15),
        record(1, "q3", em=False, f1=0.5, contained=True, grade="correct"),
        record(1, "q4", em=False, f1=0.0, contained=False, grade="incorrect"),
        # run 2: 1 of 4 exact, judge: 1 correct, 1 incorrect, 1 not attempted, 1 unparsed; one research failed
        record(2, "q1", em=True, f1=1.0, contained=True, grade="correct"),
        record(2, "q2", em=False, f1=0.5, contained=False, grade="incorrect"),
        record(2, "q3", em=False, f1=0.0, contained=False, grade="not_attempted", error="BackendError: boom"),
        record(2, "q4", em=False, f1=0.0, contained=True, grade="unparsed"),
    ]


def test_run_metrics():
    first = run_metrics(1, two_runs()[:4])
    assert (first.questions, first.errors) == (4, 0)
    assert (first.exact_match, first.f1, first.contained) == (0.5, 0.625, 0.75)
    assert (first.correct, first.incorrect, first.not_attempted, first.unparsed) == (0.75, 0.25, 0.0, 0.0)
    assert first.accuracy_given_attempted == 0.75
    assert (first.turns, first.generated_tokens, first.seconds) == (3.5, 1000.0, 10.0)
    second = run_metrics(2, two_runs()[4:])
    assert second.errors == 1
    assert (second.correct, second.not_attempted, second.unparsed) == (0.25, 0.25, 0.25)
    assert second.accuracy_given_attempted == 0.5  # 1 correct of 2 attempted


def test_summary_mean_and_standard_deviation_over_runs():
    summary = summarize(two_runs(), dataset="toy", model="glm", judge="scripted:judge")
    assert summary.questions == 4 and [run.run for run in summary.runs] == [1, 2]
    em = summary.metrics["exact_match"]
    assert em.values == [0.5, 0.25]
    assert em.mean == pytest.approx(0.375) and em.std == pytest.approx(statistics.stdev([0.5, 0.25]))
    correct = summary.metrics["correct"]
    assert correct.mean == pytest.approx(0.5) and correct.std == pytest.approx(0.3535533906)
    assert summary.metrics["accuracy_given_attempted"].values == [0.75, 0.5]
    assert summary.metrics["turns"].mean == pytest.approx(3.75)


def test_one_run_has_no_spread_and_no_judge_no_judge_metrics():
    records = [record(1, "q1", em=True, f1=1.0, contained=True), record(1, "q2", em=False, f1=0.0, contained=False)]
    summary = summarize(records, dataset="toy", model="glm", judge=None)
    assert summary.metrics["exact_match"].std is None and summary.metrics["exact_match"].mean == 0.5
    assert "correct" not in summary.metrics and summary.runs[0].correct is None
    table = text_table(summary)
    assert "judge" not in table.split("\n", 1)[1]
    assert "50.0%" in table and "±" not in table.split("\n", 1)[1]


def test_text_table():
    table = text_table(summarize(two_runs(), dataset="toy", model="glm", judge="scripted:judge"))
    lines = table.splitlines()
    assert lines[0] == "toy: 4 questions × 2 runs; glm; judge scripted:judge; INCOMPLETE"
    assert lines[1].split() == ["metric", "mean", "±", "std", "run", "1", "run", "2"]
    exact = next(line for line in lines if line.startswith("exact match"))
    assert exact.split()[-5:] == ["37.5%", "±", "17.7%", "50.0%", "25.0%"]
    assert any(line.startswith("judge: correct given attempted") for line in lines)
    assert lines[-1] == "incomplete: 1 question failed to be researched (run 2: 1), scored as wrong"


def test_a_complete_table_says_nothing_of_failures():
    records = [record(1, "q1", em=True, f1=1.0, contained=True)]
    table = text_table(summarize(records, dataset="toy", model="glm", judge=None))
    assert table.splitlines()[0] == "toy: 1 questions × 1 run; glm; no judge"
    assert "incomplete" not in table.lower() and "failed" not in table


def test_the_table_is_safe_for_a_terminal():
    records = [record(1, "q1", em=True, f1=1.0, contained=True)]
    served = "glm\x1b]0;owned\x07\x1b[2J\u202e"  # a server names its model: escapes, a bidi override
    table = text_table(summarize(records, dataset="toy", model=served, judge=f"openai:{served}"))
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert table.startswith("toy: 1 questions × 1 run; glm]0;owned[2J; judge openai:glm]0;owned[2J\n")


def test_failed_questions_are_wrong_but_not_in_the_effort_means():
    records = [
        record(1, "q1", em=True, f1=1.0, contained=True, turns=6, generated_tokens=3000, seconds=30),
        # the server died: no research, a fraction of a second, no tokens
        record(1, "q2", em=False, f1=0.0, contained=False, turns=0, generated_tokens=None, seconds=0.2, error="died"),
    ]
    run = run_metrics(1, records)
    assert (run.exact_match, run.errors) == (0.5, 1)
    assert (run.turns, run.generated_tokens, run.seconds) == (6.0, 3000.0, 30.0)
    summary = summarize(records, dataset="toy", model="glm", judge=None)
    assert summary.metrics["turns"].values == [6.0] and summary.metrics["seconds"].values == [30.0]

    # every question failed: no means, and the table shows none
    only = run_metrics(1, records[1:])
    assert (only.turns, only.generated_tokens, only.seconds) == (None, None, None)
    summary = summarize(records[1:], dataset="toy", model="glm", judge=None)
    assert "turns" not in summary.metrics and "turns per question" not in text_table(summary)


def test_the_summary_files_say_an_evaluation_is_incomplete(tmp_path):
    records = two_runs()
    summary = summarize(records, dataset="toy", model="glm", judge="scripted:judge")
    assert (summary.complete, summary.failed) == (False, 1)
    text = write_summary(summary, records, tmp_path).read_text(encoding="utf-8")
    assert text.startswith(
        "# Evaluation: toy (incomplete)\n\n4 questions × 2 runs; glm; judge scripted:judge; INCOMPLETE."
    )
    assert "**Incomplete:** 1 question failed to be researched (run 2: 1), scored as wrong" in text
    assert "--retry-failed" in text and "a failed one is left out of them" in text
    data = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert (data["complete"], data["failed"]) == (False, 1)

    whole = [r.model_copy(update={"error": None}) for r in records]
    summary = summarize(whole, dataset="toy", model="glm", judge="scripted:judge")
    text = write_summary(summary, whole, tmp_path).read_text(encoding="utf-8")
    assert text.startswith("# Evaluation: toy\n") and "ncomplete" not in text and "--retry-failed" not in text
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["complete"] is True


def test_the_markdown_explains_the_judge_only_with_a_judge(tmp_path):
    records = [record(1, "q1", em=True, f1=1.0, contained=True), record(1, "q2", em=False, f1=0.0, contained=False)]
    text = write_summary(summarize(records, dataset="toy", model="glm", judge=None), records, tmp_path).read_text()
    assert "Exact match and F1" in text and "judge" not in text.split("\n", 3)[3] and "SimpleQA" not in text
    assert "Spread" not in text  # one run
    judged = two_runs()
    text = write_summary(summarize(judged, dataset="toy", model="glm", judge="j"), judged, tmp_path).read_text()
    assert "The judge grades each report with SimpleQA's grader prompt" in text and "Spread" in text


def test_the_plot_counts_in_whole_numbers():
    records = [
        record(1, "q1", em=True, f1=1.0, contained=True, turns=2, generated_tokens=500, seconds=5.5),
        record(1, "q2", em=False, f1=0.0, contained=False, turns=3, generated_tokens=503, seconds=7.25),
        record(1, "q3", em=False, f1=0.0, contained=False, turns=0, seconds=0.1, error="died"),
    ]
    figure = plot(summarize(records, dataset="toy", model="glm", judge=None), records)
    assert figure is not None
    _, turns, tokens, seconds = figure.axes
    figure.canvas.draw()
    for axes in (turns, tokens, seconds):  # a question or two: no 0.25-question ticks
        assert all(tick == int(tick) for tick in axes.get_yticks()), axes.get_title()
    for axes in (turns, tokens):  # integer data: no 2.5-turn ticks
        assert all(tick == int(tick) for tick in axes.get_xticks()), axes.get_title()
    # the failed question is no research: it is not in the histograms
    assert sum(patch.get_height() for patch in turns.patches) == 2


def test_markdown_and_plot_are_written(tmp_path):
    records = [r.model_copy(update={"error": None}) for r in two_runs()]
    summary = summarize(records, dataset="toy", model="glm", judge="scripted:judge")
    path = write_summary(summary, records, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "summary.md"
    assert text.startswith("# Evaluation: toy\n\n4 questions × 2 runs; glm; judge scripted:judge.\n")
    assert "| exact match | 37.5% ± 17.7% | 50.0% | 25.0% |" in text
    assert "![accuracy, turns, tokens and time per question](summary.png)" in text
    assert (tmp_path / "summary.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert '"exact_match"' in (tmp_path / "summary.json").read_text(encoding="utf-8")


def test_without_matplotlib_the_markdown_says_how_to_get_the_plot(tmp_path, monkeypatch):
    records = two_runs()
    summary = summarize(records, dataset="toy", model="glm", judge=None)
    (tmp_path / "summary.png").write_bytes(b"an old plot")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    text = write_summary(summary, records, tmp_path).read_text(encoding="utf-8")
    assert PLOT_HINT in text and "summary.png" not in text
    assert not (tmp_path / "summary.png").exists()
