"""The SimpleQA judge: its prompt (verbatim), grade parsing, its settings, and grading through the scripted backend."""

from __future__ import annotations

import hashlib

import pytest
from conftest import write_script

from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.eval.grader_template import GRADER_TEMPLATE
from rumination.eval.judge import Judge, grader_prompt, judge_config, make_judge, parse_grade

# sha256 of GRADER_TEMPLATE in openai/simple-evals simpleqa_eval.py (commit 5e623c2b, May 2025).
SIMPLEQA_TEMPLATE_SHA256 = "063c04ea798f91c4706c050b66a721afc77a458b12d8f0d72286d4b0eee8a3ee"


def test_grader_template_is_simpleqas_verbatim():
    assert hashlib.sha256(GRADER_TEMPLATE.encode()).hexdigest() == SIMPLEQA_TEMPLATE_SHA256


def test_grader_prompt_fills_the_template():
    prompt = grader_prompt("Capital of France?", ["Paris"], "It is Paris.")
    assert "Question: Capital of France?\nGold target: Paris\nPredicted answer: It is Paris.\n```" in prompt
    assert prompt.endswith('Just return the letters "A", "B", or "C", with no text around it.')
    several = grader_prompt("Q?", ["New York City", "NYC"], "NYC")
    assert "Gold target: any of: New York City; NYC\n" in several
    long = grader_prompt("Q?", ["a"], "x" * 100, max_chars=10)
    assert "Predicted answer: xxxxxxxxxx [...]\n" in long


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("A", "correct"),
        ("B", "incorrect"),
        ("C", "not_attempted"),
        ("**B**", "incorrect"),
        ("(C)", "not_attempted"),
        ("A: CORRECT", "correct"),
        ("Grade: B", "incorrect"),
        ("NOT_ATTEMPTED", "not_attempted"),
        ("NOT ATTEMPTED", "not_attempted"),
        ("INCORRECT", "incorrect"),
        ("<think>\nThe gold target is Paris and the answer says Paris, so A.\n</think>\nA", "correct"),
        ("<think>It could be A or B. Say B.</think>B", "incorrect"),
        ("A predicted answer that names Paris is CORRECT", "correct"),  # "A" the article is no grade
        ("", "unparsed"),
        ("<think>\nStill thinking about A", "unparsed"),  # cut off inside its thinking
        ("I cannot decide.", "unparsed"),
        ("A, or maybe B", "unparsed"),
        ("A: CORRECT B: INCORRECT C: NOT_ATTEMPTED", "unparsed"),
        ("B: CORRECT", "unparsed"),
    ],
)
def test_parse_grade(reply, grade):
    assert parse_grade(reply) == grade


def test_judge_config_maps_the_judge_settings():
    config = Config(
        backend="local",
        model="THUDM/GLM-Z1-Rumination-32B-0414",
        base_url="http://research:8000/v1",
        served_model="glm",
        judge_backend="openai",
        judge_model="Qwen/Qwen3-8B",
        judge_base_url="http://judge:8001/v1",
        judge_served_model="qwen3",
        judge_api_key="sk-judge",
    )
    judge = judge_config(config)
    assert judge is not None and judge is not config
    assert (judge.backend, judge.model, judge.base_url, judge.served_model) == (
        "openai",
        "Qwen/Qwen3-8B",
        "http://judge:8001/v1",
        "qwen3",
    )
    assert judge.openai_api_key is not None and judge.openai_api_key.get_secret_value() == "sk-judge"
    assert (config.backend, config.model, config.served_model) == ("local", "THUDM/GLM-Z1-Rumination-32B-0414", "glm")


def test_judge_config_keeps_unset_settings_and_none_without_a_judge_backend():
    assert judge_config(Config(backend="scripted")) is None
    assert make_judge(Config(backend="scripted")) is None
    config = Config(
        base_url="http://server:8000/v1", served_model="glm", judge_served_model="qwen3", judge_backend="openai"
    )
    judge = judge_config(config)
    assert judge is not None
    assert (judge.base_url, judge.served_model) == ("http://server:8000/v1", "qwen3")


async def test_judge_grades_through_the_scripted_backend(tmp_path):
    script = write_script(
        tmp_path / "judge.json",
        ["<think>\nThe answer names Paris.\n</think>\nA", "B", "I am not sure what to say."],
    )
    judge = Judge.from_config(Config(backend="scripted", script=script, max_new_tokens=64))
    assert judge.name == "scripted:scripted" and not judge.concurrent
    first = await judge.grade("Capital of France?", ["Paris"], "# Report\n\nThe capital is **Paris**.")
    assert (first.grade, first.output, first.error) == ("correct", "A", None)
    assert (await judge.grade("Capital of Italy?", ["Rome"], "Milan.")).grade == "incorrect"
    unparsed = await judge.grade("Q?", ["a"], "b")
    assert (unparsed.grade, unparsed.output) == ("unparsed", "I am not sure what to say.")
    backend = judge.backend
    assert isinstance(backend, ScriptedBackend)
    assert "Gold target: Paris\nPredicted answer: # Report\n\nThe capital is **Paris**.\n" in backend.prompts[0]
    assert backend.prompts[0].rstrip().endswith("<|assistant|>")  # rendered with the tokenizer's chat template
    # the script is spent: a failing backend is an unparsed grade with its error, not a crash
    failed = await judge.grade("Q?", ["a"], "b")
    assert failed.grade == "unparsed" and failed.error and "ran out of outputs" in failed.error
    await judge.aclose()


async def test_judge_samples_greedily():
    judge = Judge(ScriptedBackend(Config(backend="scripted"), outputs=["A"]), seed=3)
    assert (judge.params.temperature, judge.params.top_k, judge.params.top_p, judge.params.seed) == (0.0, 0, 1.0, 3)
