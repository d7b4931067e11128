"""`evaluate` end to end: the batch runner and a judge on scripted backends, resuming, and the CLI's part."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import turn, write_script

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.errors import BackendError
from rumination.eval import run as run_module
from rumination.eval.cli import add_eval_arguments, main
from rumination.eval.dataset import EvalItem
from rumination.eval.judge import Judge
from rumination.eval.run import evaluate, read_scores

REPORT = (
    "\n<think>\nWrite it up.\n</think>\n# The capital\n\n**Answer:** Paris\n\n"
    "Paris has been the capital since 987 [1](https://example.org/paris)."
)
ITEMS = [
    EvalItem(id="fr", question="What is the capital of France?", answers=["Paris"]),
    EvalItem(id="it", question="What is the capital of Italy?", answers=["Rome", "Roma"]),
    EvalItem(id="cn", question="中国的首都是哪里？", answers=["北京"]),
]


def research_config(tmp_path) -> Config:
    script = write_script(tmp_path / "research.json", [turn({"name": "finish", "arguments": {}}), REPORT])
    return Config(backend="scripted", script=script, cache_dir=tmp_path / "cache", page_cache=False, prefetch=0)


def scripted_judge(outputs: list[str]) -> Judge:
    return Judge(ScriptedBackend(Config(backend="scripted"), outputs=outputs))


async def test_evaluate_researches_scores_and_summarises(tmp_path):
    out = tmp_path / "eval"
    judge = scripted_judge(["A", "B", "<think>\nNo answer about Beijing.\n</think>\nC", "A", "B", "unclear"])
    summary = await evaluate(ITEMS, research_config(tmp_path), out, runs=2, judge=judge, dataset="toy", progress=False)

    for run in (1, 2):
        lines = (out / f"run-{run}.jsonl").read_text(encoding="utf-8").splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == ["cn", "fr", "it"]
    scores = read_scores(out / "scores.jsonl")
    assert len((out / "scores.jsonl").read_text(encoding="utf-8").splitlines()) == 6
    fr = scores[(1, "fr")]
    assert (fr.short_answer, fr.exact_match, fr.f1, fr.contained) == ("Paris", True, 1.0, True)
    assert fr.grading is not None and fr.grading.grade == "correct" and fr.judge == "scripted:scripted"
    assert (fr.turns, fr.stop_reason, fr.error) == (1, "finished", None) and fr.generated_tokens
    assert scores[(1, "cn")].grade == "not_attempted" and scores[(2, "cn")].grade == "unparsed"
    assert not scores[(1, "it")].exact_match and scores[(1, "it")].grade == "incorrect"

    assert (summary.questions, summary.judge, [r.run for r in summary.runs]) == (3, "scripted:scripted", [1, 2])
    assert summary.metrics["exact_match"].values == [1 / 3, 1 / 3] and summary.metrics["exact_match"].std == 0.0
    assert summary.metrics["correct"].values == [1 / 3, 1 / 3]
    assert summary.metrics["unparsed"].values == [0.0, 1 / 3]
    assert (out / "summary.md").is_file() and (out / "summary.png").is_file()


async def test_evaluate_resumes_without_asking_again(tmp_path):
    out, config = tmp_path / "eval", research_config(tmp_path)
    await evaluate(ITEMS[:2], config, out, runs=1, judge=scripted_judge(["A", "B"]), progress=False)
    before = (out / "scores.jsonl").read_text(encoding="utf-8")

    # Everything is done: no research, and the judge (with nothing left to say) is not asked.
    idle = scripted_judge([])
    summary = await evaluate(ITEMS[:2], config, out, runs=1, judge=idle, progress=False)
    assert idle.backend.prompts == [] and (out / "scores.jsonl").read_text(encoding="utf-8") == before
    assert summary.metrics["correct"].values == [0.5]

    # A second run is researched and judged; the first run's grades are kept.
    more = scripted_judge(["A", "A"])
    summary = await evaluate(ITEMS[:2], config, out, runs=2, judge=more, progress=False)
    assert len(more.backend.prompts) == 2
    assert summary.metrics["correct"].values == [0.5, 1.0]


async def test_evaluate_without_a_judge(tmp_path):
    summary = await evaluate(ITEMS, research_config(tmp_path), tmp_path / "eval", runs=1, judge=None, progress=False)
    assert summary.judge is None and "correct" not in summary.metrics
    assert summary.metrics["contained"].values == [1 / 3]


def test_cli_main(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = tmp_path / "capitals.jsonl"
    dataset.write_text(
        "\n".join(json.dumps(item.model_dump(exclude={"answers"}) | {"answers": item.answers}) for item in ITEMS),
        encoding="utf-8",
    )
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    args = parser.parse_args([str(dataset), "--sample", "2", "-q"])
    assert main(args, research_config(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("capitals: 2 questions × 1 run; scripted; no judge\n")
    assert (tmp_path / "eval-capitals" / "summary.md").is_file()


def write_dataset(path: Path, items: list[EvalItem]) -> Path:
    lines = (json.dumps({"id": item.id, "question": item.question, "answers": item.answers}) for item in items)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_cli_main_exits_1_and_says_how_to_retry_when_research_failed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = write_dataset(tmp_path / "capitals.jsonl", ITEMS[:2])
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    # the model server "dies" after the finish call: no report, the research fails
    broken = write_script(tmp_path / "broken.json", [turn({"name": "finish", "arguments": {}})])
    config = research_config(tmp_path).model_copy(update={"script": broken})
    assert main(parser.parse_args([str(dataset), "-q"]), config) == 1
    out, err = capsys.readouterr()
    assert "INCOMPLETE" in out.splitlines()[0]
    assert "2 questions failed to be researched" in err and "--retry-failed" in err
    summary = json.loads((tmp_path / "eval-capitals" / "summary.json").read_text(encoding="utf-8"))
    assert (summary["complete"], summary["failed"]) == (False, 2)
    assert (
        (tmp_path / "eval-capitals" / "summary.md")
        .read_text(encoding="utf-8")
        .startswith("# Evaluation: capitals (incomplete)\n")
    )

    # without --retry-failed a rerun keeps the failures; with it, they are researched again
    assert main(parser.parse_args([str(dataset), "-q"]), research_config(tmp_path)) == 1
    capsys.readouterr()
    assert main(parser.parse_args([str(dataset), "-q", "--retry-failed"]), research_config(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "INCOMPLETE" not in out and "--retry-failed" not in err
    summary = json.loads((tmp_path / "eval-capitals" / "summary.json").read_text(encoding="utf-8"))
    assert (summary["complete"], summary["failed"]) == (True, 0)


class ServedBackend(ScriptedBackend):
    """Like a served model: the backend learns the model's name only when it loads."""

    def __init__(self, config: Config):
        super().__init__(config)
        self.model_id = "the model at http://localhost:8000/v1"

    def load(self, progress=None) -> None:
        super().load(progress)
        self.model_id = "glm-served"


async def test_a_resumed_evaluation_names_the_model_the_runs_recorded(tmp_path):
    out, config = tmp_path / "eval", research_config(tmp_path)
    summary = await evaluate(ITEMS[:2], config, out, backend=ServedBackend(config), progress=False)
    assert summary.model == "glm-served"
    assert {score.model for score in read_scores(out / "scores.jsonl").values()} == {"glm-served"}

    # nothing left to research: the backend is never loaded, and the summary still names the model
    idle = ServedBackend(config)
    summary = await evaluate(ITEMS[:2], config, out, backend=idle, progress=False)
    assert idle.tokenizer is None and summary.model == "glm-served"
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["model"] == "glm-served"
    assert "glm-served" in (out / "summary.md").read_text(encoding="utf-8")
    assert {score.model for score in read_scores(out / "scores.jsonl").values()} == {"glm-served"}


class DeadJudgeBackend(ScriptedBackend):
    def load(self, progress=None) -> None:
        raise BackendError("cannot reach the model server at http://judge/v1: is it running?")


async def test_a_judge_that_cannot_load_fails_before_the_research(tmp_path):
    out = tmp_path / "eval"
    lines: list[str] = []
    judge = Judge(DeadJudgeBackend(Config(backend="scripted"), outputs=["A"]), progress=lines.append)
    with pytest.raises(BackendError, match="^the judge: cannot reach"):
        await evaluate(ITEMS, research_config(tmp_path), out, judge=judge, progress=False)
    assert not out.exists()
    assert lines == ["loading the judge: scripted:scripted ..."]


async def test_a_local_judge_loads_after_local_research_has_freed_the_accelerator(tmp_path, monkeypatch):
    events: list[str] = []

    class LocalResearch(ScriptedBackend):
        name = "local"

        async def aclose(self) -> None:
            events.append("research closed")

    class LocalJudge(ScriptedBackend):
        name = "local"

        def load(self, progress=None) -> None:
            events.append("judge loaded")
            super().load(progress)

    monkeypatch.setattr(run_module.backends, "get", lambda name: LocalResearch)
    config = research_config(tmp_path).model_copy(update={"backend": "local"})
    judge_backend = LocalJudge(Config(backend="scripted"), outputs=["A", "B"])
    judge_backend.model_id = str(bundled_tokenizer_dir())  # the tokenizer checked before the research
    summary = await evaluate(ITEMS[:2], config, tmp_path / "eval", judge=Judge(judge_backend), progress=False)
    assert events == ["research closed", "judge loaded"]
    assert summary.metrics["correct"].values == [0.5]


async def test_a_judge_that_names_no_grade_is_pointed_out(tmp_path, capsys):
    out, config = tmp_path / "eval", research_config(tmp_path)
    await evaluate(ITEMS[:2], config, out, judge=scripted_judge(["Hmm.", "I cannot say."]), progress=False)
    err = capsys.readouterr().err
    assert "the judge named no grade (A, B or C) in any of its 2 replies" in err
    assert f"grading.output) in {out / 'scores.jsonl'}" in err

    # one grade it named is enough
    await evaluate(ITEMS, config, tmp_path / "other", judge=scripted_judge(["Hmm.", "B", "?"]), progress=False)
    assert "named no grade" not in capsys.readouterr().err


class ServedJudgeBackend(ScriptedBackend):
    """A judge on a server: its model's name is known once it has loaded."""

    def __init__(self, outputs: list[str]):
        super().__init__(Config(backend="scripted"), outputs=outputs)
        self.model_id = "Qwen/Qwen3-8B"  # -m, standing in until the server says

    def load(self, progress=None) -> None:
        super().load(progress)
        self.model_id = "qwen3"


async def test_a_resumed_evaluation_keeps_a_served_judges_grades(tmp_path):
    out, config = tmp_path / "eval", research_config(tmp_path)
    summary = await evaluate(ITEMS[:2], config, out, judge=Judge(ServedJudgeBackend(["A", "B"])), progress=False)
    assert summary.judge == "scripted:qwen3"
    idle = ServedJudgeBackend([])
    summary = await evaluate(ITEMS[:2], config, out, judge=Judge(idle), progress=False)
    assert idle.prompts == [] and summary.metrics["correct"].values == [0.5]
