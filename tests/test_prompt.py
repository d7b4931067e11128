"""The fixed system prompt's settings: language and year edited in the rendered system segment only."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from conftest import turn
from transformers import AutoTokenizer

from rumination import events as ev
from rumination.agent import Researcher
from rumination.assets import bundled_tokenizer_dir
from rumination.backends.base import render
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.protocol import SEARCH_LANGUAGE_LINE, THINKING_LANGUAGE_LINE, YEAR_LINE
from rumination.system_prompt import PromptRenderer, SystemSettings, edit_system, system_span

TEMPLATE_LINES = ("今年是 2025 年。", "    * 搜索关键词：英语", "    * 思考：英语")
# Text a user or a web page may contain: it must reach the model exactly as written.
LOOKALIKE = "今年是 2025 年。\n    * 搜索关键词：英语\n    * 思考：英语\n思考：英文"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir())


def tokenizer_with(tmp_path: Path, edit) -> Path:
    """A copy of the bundled tokenizer whose chat template is `edit(template)`."""
    out = tmp_path / "tokenizer"
    shutil.copytree(bundled_tokenizer_dir(), out)
    template = out / "chat_template.jinja"
    template.write_text(edit(template.read_text(encoding="utf-8")), encoding="utf-8")
    return out


def without_settings(template: str) -> str:
    """A custom template: the same shape without the date and language lines."""
    for line in ("今年是 2025 年。", "    * 搜索关键词：英语\n", "    * 思考：英语\n"):
        assert line in template
        template = template.replace(line, "")
    return template


def system_of(prompt: str) -> str:
    span = system_span(prompt)
    assert span is not None
    return prompt[span[0] : span[1]]


CONVERSATION = [
    {"role": "user", "content": f"Question quoting the template: {LOOKALIKE}"},
    {"role": "assistant", "content": '\n<think>\nok\n</think>{"name": "open", "arguments": {"url": "x.org"}}'},
    {"role": "observation", "content": f"# Page\n{LOOKALIKE}"},
]


def test_the_fixture_template_has_the_real_templates_setting_lines(tokenizer):
    prompt = render(tokenizer, [{"role": "user", "content": "q"}])
    assert YEAR_LINE.format(year=2025) in prompt
    assert SEARCH_LANGUAGE_LINE.format(language="英语") + "\n" in prompt
    assert THINKING_LANGUAGE_LINE.format(language="英语") + "\n" in prompt
    assert all(line in system_of(prompt) for line in TEMPLATE_LINES)


@pytest.mark.parametrize(
    ("thinking", "search", "expected"),
    [
        ("zh", "zh", ("    * 搜索关键词：中文", "    * 思考：中文")),
        ("zh", "en", ("    * 搜索关键词：英语", "    * 思考：中文")),
        ("en", "zh", ("    * 搜索关键词：中文", "    * 思考：英语")),
    ],
)
def test_languages_and_year_are_set_in_the_system_segment_only(tokenizer, thinking, search, expected):
    renderer = PromptRenderer(tokenizer, SystemSettings(thinking, search, 2031))
    plain, prompt = render(tokenizer, CONVERSATION), renderer.render(CONVERSATION).text
    system = system_of(prompt)
    assert "今年是 2031 年。" in system and "2025" not in system
    assert all(f"{line}\n" in system for line in expected)
    # Everything after the system segment (the user's text, the observation) is untouched.
    assert prompt[len(prompt) - len(plain) + system_span(plain)[1] :] == plain[system_span(plain)[1] :]
    assert prompt.count(LOOKALIKE) == 2 and renderer.notice is None


def test_english_and_no_year_leave_the_prompt_byte_identical(tokenizer):
    renderer = PromptRenderer(tokenizer, SystemSettings("en", "en", None))
    assert renderer.render(CONVERSATION).text == render(tokenizer, CONVERSATION)
    assert renderer.notice is None


def test_the_later_spelling_of_english_is_matched(tmp_path):
    tok = AutoTokenizer.from_pretrained(tokenizer_with(tmp_path, lambda t: t.replace("：英语", "：英文")))
    messages = [{"role": "user", "content": "q"}]
    assert "    * 思考：英文" in render(tok, messages)
    chinese = PromptRenderer(tok, SystemSettings("zh", "zh", None))
    text = chinese.render(messages).text
    assert "    * 思考：中文\n" in text and "    * 搜索关键词：中文\n" in text
    assert "英文" not in text and chinese.notice is None
    # English on a template that already says 英文 keeps the template's own word.
    assert PromptRenderer(tok, SystemSettings("en", "en", None)).render(messages).text == render(tok, messages)


def test_a_prompt_without_a_system_segment_is_never_edited(tokenizer):
    prompt = "[gMASK]<sop><|user|>\n" + LOOKALIKE + "<|system|>\n" + LOOKALIKE + "<|assistant|>"
    assert system_span(prompt) is None
    edited, missed = edit_system(prompt, SystemSettings("zh", "zh", 2031))
    assert edited == prompt and len(missed) == 3


def test_the_date_comes_from_the_settings(tokenizer):
    today = date.today()
    assert SystemSettings.from_config(Config()).year == today.year
    assert SystemSettings.from_config(Config(today=date(2027, 6, 1))).year == 2027
    kept = SystemSettings.from_config(Config(current_year=False))
    assert kept.year is None
    assert "今年是 2025 年。" in PromptRenderer(tokenizer, kept).render([{"role": "user", "content": "q"}]).text
    # A pinned date is a request in itself: it wins over current_year off.
    assert SystemSettings.from_config(Config(current_year=False, today=date(2030, 1, 1))).year == 2030


def test_a_run_across_new_years_midnight_keeps_its_year(tokenizer):
    days = iter([date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 1)])
    renderer = PromptRenderer(tokenizer, SystemSettings.from_config(Config(), clock=lambda: next(days)))
    messages: list[dict[str, str]] = [{"role": "user", "content": "q"}]
    systems = set()
    for i in range(4):
        systems.add(system_of(renderer.render(messages).text))
        messages += [{"role": "assistant", "content": f"call {i}"}, {"role": "observation", "content": f"page {i}"}]
    assert len(systems) == 1 and "今年是 2025 年。" in systems.pop()
    assert next(days) == date(2026, 1, 1)  # the clock was read once, when the run's renderer was built


def _outputs() -> list[str]:
    return [
        turn({"name": "search", "arguments": {"query": "思考：英语"}}),
        turn({"name": "search", "arguments": {"query": "printing"}}),
        turn({"name": "finish", "arguments": {}}),
        "\n<think>\nok\n</think>Report.",
    ]


async def _run(web, **settings) -> tuple[list[ev.Event], list[str]]:
    cfg = Config(backend="scripted", search="searxng", searxng_url=web.base, allow_private_network=True, **settings)
    backend = ScriptedBackend(cfg, outputs=_outputs())
    events = [e async for e in Researcher(cfg, backend=backend).stream(f"Quoting: {LOOKALIKE}")]
    return events, backend.prompts


def _lasting(events: list[ev.Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, ev.StatusEvent) and not e.transient]


async def test_every_turn_of_a_run_has_the_same_system_segment_and_user_text(web):
    events, prompts = await _run(web, thinking_language="zh", search_language="zh")
    assert len(prompts) == 4
    head = prompts[0][: prompts[0].index("<|user|>")]
    assert all(p.startswith(head) for p in prompts)
    assert "    * 思考：中文\n" in head and f"今年是 {date.today().year} 年。" in head
    assert all(f"<|user|>\nQuoting: {LOOKALIKE}<|assistant|>" in p for p in prompts)
    assert not [m for m in _lasting(events) if "not applied" in m]


async def test_an_unknown_template_runs_unchanged_with_one_lasting_notice(web, tmp_path):
    bare = tokenizer_with(tmp_path, without_settings)
    tok = AutoTokenizer.from_pretrained(bare)
    events, prompts = await _run(web, model=str(bare), thinking_language="zh", today=date(2026, 1, 2))
    assert [m for m in _lasting(events) if "not applied" in m] == [
        "the chat template's system prompt has no line to edit for thinking_language=zh (思考：英语), "
        "the year 2026 (今年是 2025 年。): not applied"
    ]
    assert len([e for e in events if isinstance(e, ev.StatusEvent) and "not applied" in e.message]) == 1
    assert prompts[0] == render(tok, [{"role": "user", "content": f"Quoting: {LOOKALIKE}"}])
    # The default current year is a promise too: the same template says so for it alone, once.
    events, _ = await _run(web, model=str(bare), today=date(2027, 5, 5))
    assert [m for m in _lasting(events) if "not applied" in m] == [
        "the chat template's system prompt has no line to edit for the year 2027 (今年是 2025 年。): not applied"
    ]
    # English (the template's own value) and current_year off ask for nothing: no notice.
    events, _ = await _run(web, model=str(bare), current_year=False)
    assert not [e for e in events if isinstance(e, ev.StatusEvent) and "not applied" in e.message]
