"""The Python API: sync wrappers, injected parts, plugins through entry points, bundled assets."""

from __future__ import annotations

import sys
import textwrap

from conftest import turn, write_script

import rumination
from rumination.agent import Researcher
from rumination.assets import bundled_tokenizer_dir, prompts_dir
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.registry import search_engines
from rumination.search.base import SearchHit

REPORT = "\n<think>\ndone\n</think>\nThe answer."


def test_research_function_runs_synchronously(web, tmp_path):
    script = write_script(
        tmp_path / "s.json",
        [
            turn({"name": "search", "arguments": {"query": "Gutenberg"}}),
            turn({"name": "finish", "arguments": {}}),
            REPORT,
        ],
    )
    result = rumination.research(
        "Who was Gutenberg?", backend="scripted", script=str(script), search="searxng", searxng_url=web.base
    )
    assert isinstance(result, rumination.ResearchResult)
    assert result.report == "The answer." and result.stop_reason == "finished"
    assert result.steps[0].observation.startswith("【0†Johannes Gutenberg")


class _ListEngine:
    """An injected engine: any object with the SearchEngine shape works."""

    name = "list"

    def __init__(self, hits: list[SearchHit]):
        self.hits, self.queries = hits, []

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        self.queries.append(query)
        return self.hits[:max_results]

    async def aclose(self) -> None:
        """Nothing to close."""


def test_injected_engine_and_run_sync(web):
    engine = _ListEngine([SearchHit(title="Spread", url=web.url("/spread.html"), snippet="s")])
    cfg = Config(backend="scripted", allow_private_network=True)
    outputs = [
        turn({"name": "search", "arguments": {"query": "spread"}}),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs), engine=engine)
    result = researcher.run_sync("How did printing spread?")
    assert engine.queries == ["spread"]
    assert [s.title for s in result.sources] == ["How printing spread across Europe"]
    assert result.model == "scripted" and result.backend == "scripted"


def test_third_party_engine_registers_through_an_entry_point(tmp_path, monkeypatch, web):
    # A minimal installed distribution: a module plus dist-info with an entry point.
    (tmp_path / "plugin_engine.py").write_text(
        textwrap.dedent("""
        from rumination.search.base import SearchHit

        class PluginEngine:
            name = "plugin"

            def __init__(self, config):
                self.base = config.searxng_url

            async def search(self, query, max_results):
                return [SearchHit(title="From plugin", url=self.base + "/gutenberg.html", snippet=query)]

            async def aclose(self):
                '''Nothing to close.'''
    """)
    )
    info = tmp_path / "plugin_engine-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-engine\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rumination.search_engines]\nplugin = plugin_engine:PluginEngine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugin" in search_engines.names()
    cfg = Config(backend="scripted", search="plugin", searxng_url=web.base, allow_private_network=True)
    outputs = [
        turn({"name": "search", "arguments": {"query": "q1"}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    result = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs)).run_sync("q")
    assert result.steps[0].observation == f"【0†From plugin†{web.base}/gutenberg.html】\nq1"
    sys.modules.pop("plugin_engine", None)


def test_bundled_assets_are_found():
    assert (prompts_dir() / "fixture_chat_template.jinja").is_file()
    tokenizer = bundled_tokenizer_dir()
    assert (tokenizer / "tokenizer.json").is_file() and (tokenizer / "tokenizer_config.json").is_file()


def test_bundled_tokenizer_has_the_14_glm_special_tokens():
    from transformers import AutoTokenizer

    from rumination.protocol import SPECIAL_TOKENS

    tok = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == 14 and tok.unk_token_id not in ids.values()
    assert tok("<|observation|>", add_special_tokens=False)["input_ids"] == [ids["<|observation|>"]]
    assert tok("[gMASK]<sop>x", add_special_tokens=False)["input_ids"][:2] == [ids["[gMASK]"], ids["<sop>"]]
    # <think> is ordinary text, as in the real tokenizer.
    assert len(tok("<think>", add_special_tokens=False)["input_ids"]) > 1


def test_chat_template_shape():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_tokenizer_dir())
    messages = [
        {"role": "system", "content": "ignored system prompt"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": '\n<think>\nplan\n</think>{"name": "finish", "arguments": {}}'},
        {"role": "tool", "content": "dropped silently"},
        {"role": "observation", "content": "obs"},
        {"role": "assistant", "content": "x", "metadata": "meta"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tail = text.split("<|user|>", 1)[1]
    assert (
        tail
        == '\nQ<|assistant|>\n{"name": "finish", "arguments": {}}<|observation|>\nobs<|assistant|>meta \nx<|assistant|>'
    )
    assert "ignored system prompt" not in text and "dropped silently" not in text
