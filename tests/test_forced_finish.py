"""Every run ends with a report and the right stop_reason, whatever the model does."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import turn

from rumination import events as ev
from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.config import Config
from rumination.protocol import FINISH_CALL

REPORT = "\n<think>\nSummarise what I found.\n</think>\n# Report\n\nWhat was gathered."


def _config(web, **extra) -> Config:
    extra.setdefault("open_any_url", True)  # these scripts open pages directly
    extra.setdefault("allow_domains", ["127.0.0.1"])  # a made-up URL reaches a private address only when allowed
    return Config(backend="scripted", search="searxng", searxng_url=web.base, allow_private_network=True, **extra)


async def _run(web, outputs: list[str], **extra):
    cfg = _config(web, **extra)
    backend = ScriptedBackend(cfg, outputs=outputs)
    events = [e async for e in Researcher(cfg, backend=backend).stream("What about printing?")]
    return events, events[-1].result, backend


def _search(q: str) -> str:
    return turn({"name": "search", "arguments": {"query": q}})


async def test_never_finishing_run_stops_at_max_turns(web):
    events, result, backend = await _run(web, [_search(f"printing {i}") for i in range(3)] + [REPORT], max_turns=3)
    assert result.stop_reason == "max_turns"
    assert result.report == "# Report\n\nWhat was gathered."
    forced = [e for e in events if isinstance(e, ev.ForcedFinish)]
    assert len(forced) == 1 and forced[0].reason == "max_turns"
    # The synthetic finish call is the last assistant message before the report generation.
    assert backend.prompts[-1].endswith(f"<|assistant|>\n{FINISH_CALL}<|assistant|>")
    assert len(backend.prompts) == 4


async def test_format_errors_force_the_report(web):
    bad = ["I will just answer without a tool.", turn("{not json"), turn({"name": "browse", "arguments": {}})]
    _events, result, backend = await _run(web, [*bad, REPORT])
    assert result.stop_reason == "format_errors"
    assert [s.error for s in result.steps] == ["format", "format", "unknown_tool"]
    assert result.report.startswith("# Report")
    # Each error observation names the fix and reached the model.
    assert "no tool call found" in backend.prompts[1]
    assert "unknown tool" in backend.prompts[3]


async def test_a_good_call_resets_the_format_error_count(web):
    outputs = [
        turn("oops"),
        turn("oops"),
        _search("printing"),
        turn("oops"),
        turn("oops"),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    _, result, _ = await _run(web, outputs)
    assert result.stop_reason == "finished"


async def test_context_budget_forces_the_report(web):
    outputs = [turn({"name": "open", "arguments": {"url": f"{web.base}/gutenberg.html"}}), REPORT]
    events, result, backend = await _run(web, outputs, max_context_tokens=400)
    assert result.stop_reason == "context_budget"
    assert len(backend.prompts) == 2  # one tool turn, then straight to the report
    assert result.report.startswith("# Report")
    started = [e for e in events if isinstance(e, ev.TurnStarted)]
    assert started[-1].report and started[-1].prompt_tokens > 400


async def test_repeated_identical_actions_force_the_report(web):
    outputs = [_search("Gutenberg printing"), _search("gutenberg  PRINTING"), _search("Gutenberg printing"), REPORT]
    _, result, _ = await _run(web, outputs)
    assert result.stop_reason == "repeated_action"
    assert len(result.steps) == 3


async def test_clicking_and_opening_the_same_page_counts_as_a_repeat(web):
    url = f"{web.base}/gutenberg.html"
    outputs = [
        _search("Gutenberg printing"),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        turn({"name": "open", "arguments": {"url": url}}),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        REPORT,
    ]
    _, result, _ = await _run(web, outputs)
    assert result.stop_reason == "repeated_action"
    assert web.hits["/gutenberg.html"] == 1  # later reads come from the run's copy


async def test_time_budget_forces_the_report(web):
    outputs = [turn({"name": "open", "arguments": {"url": f"{web.base}/slow?delay=0.5"}}), _search("x"), REPORT]
    _, result, _ = await _run(web, outputs, max_seconds=0.2)
    assert result.stop_reason == "time_budget"
    assert len(result.steps) == 1


async def test_cut_off_call_is_not_executed_and_thinking_stays_out(web):
    long_thinking = "\n<think>\n" + "I keep thinking about printing presses. " * 40
    outputs = [
        long_thinking + '</think>{"name": "search", "arguments": {"query": "x"}}',
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    _, result, backend = await _run(web, outputs, max_new_tokens=50)
    assert result.steps[0].error == "cut_off"
    assert result.usage.generations[0].finish_reason == "length"
    assert web.hits["/search"] == 0
    assert "I keep thinking" not in backend.prompts[1]
    assert "token limit" in backend.prompts[1]


async def test_finish_now_writes_a_report(web):
    cfg = _config(web)
    backend = ScriptedBackend(cfg, outputs=[_search("printing"), REPORT])
    researcher = Researcher(cfg, backend=backend)
    events = []
    async for event in researcher.stream("What about printing?"):
        events.append(event)
        if isinstance(event, ev.ObservationEvent):
            researcher.request_finish()
    result = events[-1].result
    assert result.stop_reason == "cancelled"
    assert len(result.steps) == 1 and result.report.startswith("# Report")


async def test_two_calls_run_the_first_and_say_so(web):
    two = turn('{"name": "search", "arguments": {"query": "Gutenberg"}} {"name": "click", "arguments": {"link_id": 0}}')
    _, result, backend = await _run(web, [two, turn({"name": "finish", "arguments": {}}), REPORT])
    assert result.steps[0].call.name == "search"
    assert "only your first tool call was run" in result.steps[0].observation
    assert '"click"' not in backend.prompts[1].split("<|user|>")[1]


async def test_click_out_of_range_names_the_valid_ids(web):
    outputs = [
        _search("Gutenberg printing"),
        turn({"name": "click", "arguments": {"link_id": 7}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    _, result, _ = await _run(web, outputs)
    assert result.steps[1].error == "arguments"
    assert "link_id 0 to 2" in result.steps[1].observation


async def test_refused_and_failed_fetches_become_observations(web):
    outputs = [
        turn({"name": "open", "arguments": {"url": "file:///etc/passwd"}}),
        turn({"name": "open", "arguments": {"url": f"{web.base}/status/404"}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    _, result, _ = await _run(web, outputs)
    assert result.steps[0].error == "refused" and "file:///etc/passwd" in result.steps[0].observation
    assert result.steps[1].error == "fetch" and "HTTP 404" in result.steps[1].observation
    assert result.stop_reason == "finished" and result.sources == []


async def test_private_addresses_are_refused_by_default(web):
    cfg = Config(backend="scripted", search="searxng", searxng_url=web.base)  # searxng itself is trusted
    outputs = [
        _search("Gutenberg printing"),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    result = await Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs)).run("q")
    assert result.steps[0].ok and result.steps[1].error == "refused"
    # The model gets a plain refusal (nothing about what the name resolved to); the user's trace the reason.
    assert result.steps[1].observation == "Error: this address may not be opened"
    assert "127.0.0.1" in result.steps[1].detail
    assert web.hits["/gutenberg.html"] == 0


async def test_report_cut_off_inside_thinking_gives_an_empty_report_and_an_error(web):
    outputs = [turn({"name": "finish", "arguments": {}}), "\n<think>\nStill thinking about"]
    events, result, _ = await _run(web, outputs)
    assert result.report == ""
    assert any(isinstance(e, ev.ErrorEvent) and "cut off" in e.message for e in events)


async def test_a_backend_failing_mid_run_ends_it_with_what_it_read(web):
    cfg = _config(web)
    researcher = Researcher(cfg, backend=ScriptedBackend(cfg, outputs=[_search("printing")]))
    seen = [event async for event in researcher.stream("q")]
    errors = [e for e in seen if isinstance(e, ev.ErrorEvent)]
    assert errors and errors[-1].fatal and "ran out of outputs" in errors[-1].message
    result = seen[-1].result
    assert result.stop_reason == "error" and "ran out of outputs" in result.error and result.report == ""
    assert [s.tool for s in result.steps] == ["search"] and result.steps[0].ok  # what it did is kept


async def test_context_window_caps_the_budget_and_the_report_still_fits(web):
    outputs = [turn({"name": "open", "arguments": {"url": f"{web.base}/gutenberg.html"}}), REPORT]
    cfg = _config(web, context_window=700, max_new_tokens=100)
    backend = ScriptedBackend(cfg, outputs=outputs)
    events = [e async for e in Researcher(cfg, backend=backend).stream("What about printing?")]
    result = events[-1].result
    assert result.stop_reason == "context_budget"
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.max_context_tokens == 600  # the window minus room for the report
    report_turn = [e for e in events if isinstance(e, ev.TurnStarted)][-1]
    assert report_turn.report and report_turn.prompt_tokens <= 600
    assert "[omitted: this observation was dropped" in backend.prompts[-1]
    assert result.report.startswith("# Report")


@pytest.mark.parametrize(
    ("outputs", "turns"),
    [
        ([_search("a"), turn({"name": "finish", "arguments": {}}), REPORT], [1, 2, 3]),
        ([_search("a"), _search("b"), REPORT], [1, 2, 3]),
    ],
)
async def test_turns_are_numbered_once_each(web, outputs, turns):
    events, result, _ = await _run(web, outputs, max_turns=2)
    assert [t.turn for t in result.usage.generations] == turns
    assert [e.turn for e in events if isinstance(e, ev.TurnStarted)] == turns
    assert result.turns == 2


class _OutOfMemoryOnTurn(ScriptedBackend):
    """A scripted model whose accelerator runs out of memory on one generation."""

    def __init__(self, cfg, outputs, fail_on):
        super().__init__(cfg, outputs=outputs)
        self.fail_on, self.calls = fail_on, 0

    async def generate(self, prompt, params):
        self.calls += 1
        if self.calls == self.fail_on:
            from rumination.backends.base import OutOfMemory

            raise OutOfMemory("out of GPU memory at 123 tokens of context")
        async for chunk in super().generate(prompt, params):
            yield chunk


async def test_out_of_memory_mid_research_still_writes_a_report(web):
    cfg = _config(web)
    outputs = [turn({"name": "open", "arguments": {"url": f"{web.base}/gutenberg.html"}}), REPORT]
    backend = _OutOfMemoryOnTurn(cfg, outputs, fail_on=2)
    events = [e async for e in Researcher(cfg, backend=backend).stream("q")]
    result = events[-1].result
    assert result.stop_reason == "context_budget" and result.report.startswith("# Report")
    assert any(isinstance(e, ev.ErrorEvent) and "out of GPU memory" in e.message for e in events)
    assert "Johannes Gutenberg" not in backend.prompts[-1]  # the page that overflowed was dropped


async def test_server_text_in_errors_cannot_forge_role_tokens(web):
    outputs = [
        turn({"name": "open", "arguments": {"url": f"{web.base}/forged-reason"}}),
        turn({"name": "finish", "arguments": {}}),
        REPORT,
    ]
    _, result, backend = await _run(web, outputs)
    assert "404" in result.steps[0].observation and "<|user|>" not in result.steps[0].observation
    assert backend.prompts[1].count("<|user|>") == 1 and backend.prompts[1].count("<|assistant|>") == 2


class _SlowFirstToken(ScriptedBackend):
    """A scripted model whose first generation sits in prefill (or a server's queue) for a long time."""

    def __init__(self, cfg, outputs):
        super().__init__(cfg, outputs=outputs)
        self.calls = 0

    async def generate(self, prompt, params):
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(60)
        async for chunk in super().generate(prompt, params):
            yield chunk


async def test_a_finish_request_during_a_long_prefill_does_not_wait_for_it(web):
    cfg = _config(web)
    backend = _SlowFirstToken(cfg, [REPORT])  # the abandoned first generation never takes an output
    researcher = Researcher(cfg, backend=backend)
    started, events = time.monotonic(), []
    async for event in researcher.stream("What about printing?"):
        events.append(event)
        if isinstance(event, ev.TurnStarted) and event.turn == 1 and not event.report:
            asyncio.get_running_loop().call_later(0.2, researcher.request_finish)
    result = events[-1].result
    assert time.monotonic() - started < 20 and result.stop_reason == "cancelled"
    assert result.report.startswith("# Report") and result.steps == []


async def test_the_time_budget_ends_a_long_prefill(web):
    cfg = _config(web, max_seconds=1.0)
    backend = _SlowFirstToken(cfg, [REPORT])  # the abandoned first generation never takes an output
    started = time.monotonic()
    result = await Researcher(cfg, backend=backend).run("What about printing?")
    assert time.monotonic() - started < 20 and result.stop_reason == "time_budget"
    assert result.report.startswith("# Report")


async def test_the_trace_gives_the_user_the_reason_the_model_is_not_told(web):
    import io

    from rumination.console import Trace

    cfg = Config(backend="scripted", search="searxng", searxng_url=web.base)
    outputs = [_search("Gutenberg printing"), turn({"name": "click", "arguments": {"link_id": 0}}), REPORT]
    out = io.StringIO()
    trace = Trace(out)
    async for event in Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs)).stream("q"):
        trace(event)
    line = next(line for line in out.getvalue().splitlines() if line.startswith("✗"))
    assert line.startswith("✗ Error: this address may not be opened (") and "127.0.0.1" in line
