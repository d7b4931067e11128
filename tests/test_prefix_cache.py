"""Prefix-cache reuse across turns on the tiny Glm4 model: identical greedy output, exact accounting."""

from __future__ import annotations

import json
from datetime import date

import pytest

from rumination.backends.base import Prompt, SamplingParams
from rumination.backends.local import LocalBackend
from rumination.config import Config
from rumination.system_prompt import PromptRenderer

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


def _backend(model_dir, reuse: bool) -> LocalBackend:
    backend = LocalBackend(Config(model=str(model_dir), device="cpu", prefix_cache=reuse))
    backend.load()
    return backend


async def _generate(backend: LocalBackend, prompt: Prompt):
    return [c async for c in backend.generate(prompt, GREEDY)][-1].outcome


def _ids(backend: LocalBackend, text: str) -> list[int]:
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    return _backend(tiny_model_dir, reuse=True), _backend(tiny_model_dir, reuse=False)


async def test_reuse_gives_token_identical_greedy_output_and_exact_accounting(pair):
    reuse, fresh = pair
    # Rendered as the loop renders: the edited system segment must be the same prefix on every turn.
    settings = Config(thinking_language="zh", search_language="zh", today=date(2026, 1, 1))
    prompts = PromptRenderer.for_run(reuse.tokenizer, settings)
    messages = [{"role": "user", "content": "Who printed the first book in Europe?"}]
    previous: list[int] = []
    for turn in range(5):
        prompt = prompts.render(messages)
        with_reuse, without = await _generate(reuse, prompt), await _generate(fresh, prompt)
        assert with_reuse.text == without.text, f"turn {turn}: outputs differ"
        ids = _ids(reuse, prompt.text)
        expected_reuse = min(_common(previous, ids), len(ids) - 1) if previous else 0
        assert with_reuse.reused_tokens == expected_reuse
        assert with_reuse.prefilled_tokens + with_reuse.reused_tokens == with_reuse.prompt_tokens == len(ids)
        assert without.reused_tokens == 0 and without.prefilled_tokens == len(ids)
        # The cache holds the prompt and every generated token but the last (never fed back).
        assert reuse.cached_tokens == with_reuse.prompt_tokens + with_reuse.generated_tokens - 1
        previous = reuse.decoder.ids
        if turn:
            assert with_reuse.reused_tokens > 0
        # The template drops the thinking: the next prompt diverges where this assistant turn begins.
        call = json.dumps({"name": "search", "arguments": {"query": f"press {turn}"}})
        messages += [
            {"role": "assistant", "content": f"\n<think>\n{with_reuse.text}\n</think>{call}"},
            {"role": "observation", "content": f"【0†Result {turn}†https://example.org/{turn}\nsnippet】"},
        ]


async def test_cropping_at_the_divergence_point(pair):
    reuse, _ = pair
    first = Prompt.of(reuse.tokenizer, [{"role": "user", "content": "Tell me about Mainz."}])
    await _generate(reuse, first)
    held = reuse.cached_tokens
    # An earlier assistant message re-rendered differently than it was generated: the cache is cut back to
    # where the two token sequences part, then only the rest is prefilled.
    second = Prompt.of(
        reuse.tokenizer,
        [
            {"role": "user", "content": "Tell me about Mainz."},
            {"role": "assistant", "content": "re-rendered text"},
            {"role": "observation", "content": "page text"},
        ],
    )
    expected = _common(reuse.decoder.ids, _ids(reuse, second.text))
    outcome = await _generate(reuse, second)
    assert 0 < outcome.reused_tokens == expected < held
    assert outcome.prefilled_tokens == len(_ids(reuse, second.text)) - expected


async def test_an_identical_prompt_still_computes_its_last_token(pair):
    reuse, fresh = pair
    prompt = Prompt.of(reuse.tokenizer, [{"role": "user", "content": "Same prompt twice."}])
    once = await _generate(reuse, prompt)
    again = await _generate(reuse, prompt)
    assert again.reused_tokens == again.prompt_tokens - 1 and again.prefilled_tokens == 1
    assert once.text == again.text == (await _generate(fresh, prompt)).text
