"""`evaluate` end to end: the batch runner and a judge on scripted backends, resuming, and the CLI's part."""

from __future__ import annotations

import argparse
import json

from conftest import turn, write_script

from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
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
