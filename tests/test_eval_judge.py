"""The SimpleQA judge: its prompt (verbatim), grade parsing, its settings, and grading through the scripted backend."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from conftest import closed_port, write_script

from rumination.assets import bundled_tokenizer_dir
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.errors import BackendError, ConfigError
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


def test_a_judge_on_its_own_server_gets_neither_the_research_key_nor_its_served_model():
    research = {"base_url": "http://research:8000/v1", "served_model": "glm", "openai_api_key": "sk-research"}
    judge = judge_config(Config(**research, judge_base_url="http://judge:8001/v1"))
    assert judge is not None and judge.base_url == "http://judge:8001/v1"
    assert (judge.openai_api_key, judge.served_model) == (None, None)
    # its own key is its own
    judge = judge_config(Config(**research, judge_base_url="http://judge:8001/v1", judge_api_key="sk-judge"))
    assert judge is not None and judge.openai_api_key is not None
    assert judge.openai_api_key.get_secret_value() == "sk-judge"
    # the same server, named again (a trailing slash aside): the research's key still opens it
    for url in ("http://research:8000/v1", "http://research:8000/v1/"):
        judge = judge_config(Config(**research, judge_base_url=url))
        assert judge is not None and judge.openai_api_key is not None and judge.served_model == "glm"
        assert judge.openai_api_key.get_secret_value() == "sk-research"


class FailingBackend(ScriptedBackend):
    """A judge backend whose server is not there."""

    def load(self, progress=None) -> None:
        raise BackendError("cannot reach the model server at http://judge/v1: is --base-url the API root?")


async def test_a_judge_that_cannot_load_says_so_once():
    lines: list[str] = []
    judge = Judge(FailingBackend(Config(backend="scripted"), outputs=["A", "A"]), progress=lines.append)
    results = await asyncio.gather(*(judge.grade("Q?", ["a"], "a") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, BackendError) for result in results)
    message = str(results[0])
    assert message.startswith("the judge: cannot reach the model server at http://judge/v1: is --judge-base-url")
    assert " --base-url" not in message and "--judge-backend" in message
    assert [line for line in lines if "loading the judge" in line] == ["loading the judge: scripted:scripted ..."]


async def test_a_judge_on_an_unreachable_server_names_the_judges_flags(tmp_path):
    config = Config(
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        judge_backend="openai",
        judge_model=str(bundled_tokenizer_dir()),
        server_retries=0,
    )
    judge = make_judge(config)
    assert judge is not None
    with pytest.raises(BackendError, match=r"^the judge: cannot reach the model server at .*--judge-base-url"):
        await judge.check()
    await judge.aclose()


def test_a_judge_backend_that_cannot_be_made_says_it_is_the_judge():
    with pytest.raises(ConfigError, match=r"^the judge: the openai backend needs --judge-base-url URL"):
        make_judge(Config(backend="scripted", judge_backend="openai"))


class LocalJudgeBackend(ScriptedBackend):
    """Stands for a judge on the local backend: loading it would take the accelerator."""

    name = "local"

    def load(self, progress=None) -> None:
        raise AssertionError("the weights must wait for the research")


async def test_checking_a_local_judge_loads_only_its_tokenizer(tmp_path):
    lines: list[str] = []
    backend = LocalJudgeBackend(Config(backend="scripted"), outputs=[])
    backend.model_id = str(bundled_tokenizer_dir())
    await Judge(backend, progress=lines.append).check(load=False)
    assert backend.tokenizer is None and lines and "loading the judge" not in lines[0]
    backend.model_id = str(tmp_path / "no-such-model")
    with pytest.raises(BackendError, match=r"^the judge: model directory not found: .*no-such-model"):
        await Judge(backend).check(load=False)


def test_a_judge_without_a_model_of_its_own_is_asked_in_chat_mode():
    from rumination.eval.judge import judge_config

    tokenizer = str(bundled_tokenizer_dir())
    research = Config(base_url="http://research:8000/v1", model=tokenizer)
    chat = judge_config(research.model_copy(update={"judge_backend": "openai", "judge_base_url": "http://j:1/v1"}))
    assert chat.openai_mode == "chat" and chat.base_url == "http://j:1/v1"
    exact = judge_config(research.model_copy(update={"judge_backend": "openai", "judge_model": tokenizer}))
    assert exact.openai_mode == "completions"
