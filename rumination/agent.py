"""The research loop: render, generate, parse, act, observe; then write the report."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from rumination import events as ev
from rumination.backends.base import ModelBackend, Outcome, SamplingParams, render
from rumination.browser import Browser
from rumination.config import Config
from rumination.errors import RuminationError
from rumination.parser import ToolCallError, parse_tool_call, split_thinking
from rumination.protocol import FINISH_CALL, THINK_CLOSE, THINK_OPEN
from rumination.registry import backends, fetchers, search_engines
from rumination.results import Message, ResearchResult, Source, Step, StopReason, TurnUsage, Usage
from rumination.search.base import SearchEngine
from rumination.tokens import count_tokens, truncate_tokens
from rumination.web.base import Fetcher

_URL = re.compile(r"https?://[^\s<>\"')\]】]+")


@dataclass
class _State:
    """Mutable state of one run."""

    question: str
    messages: list[dict[str, str]]
    browser: Browser
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    format_errors: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    outcome: Outcome | None = None


class Researcher:
    """Drives the model through research runs; front-ends consume the events of `stream`."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: ModelBackend | None = None,
        engine: SearchEngine | None = None,
        fetcher: Fetcher | None = None,
    ):
        self.config = config or Config()
        self.backend: ModelBackend = backend or backends.get(self.config.backend)(self.config)
        self._engine, self._fetcher = engine, fetcher
        self._finish_requested = False

    def request_finish(self) -> None:
        """Ask the current run to stop researching and write its report now."""
        self._finish_requested = True

    async def run(self, question: str) -> ResearchResult:
        """Research `question` and return the result."""
        async for event in self.stream(question):
            if isinstance(event, ev.RunFinished):
                return event.result
        raise RuminationError("the run ended without a result")  # pragma: no cover

    def run_sync(self, question: str) -> ResearchResult:
        """Blocking wrapper around `run`."""
        return asyncio.run(self.run(question))

    async def stream(self, question: str) -> AsyncIterator[ev.Event]:
        """Research `question`, yielding every event; the last one is RunFinished (or a fatal error)."""
        question = question.strip()
        if not question:
            raise RuminationError("the question is empty")
        self._finish_requested = False
        if self.backend.tokenizer is None:
            yield ev.StatusEvent(message=f"loading {self.backend.name} model {self.backend.model_id} ...")
            start = time.monotonic()
            await asyncio.to_thread(self.backend.load)
            yield ev.StatusEvent(message=f"model loaded in {time.monotonic() - start:.1f} s")
        engine = self._engine or search_engines.get(self.config.search)(self.config)
        fetcher = self._fetcher or fetchers.get(self.config.fetcher)(self.config)
        try:
            async for event in self._research(question, engine, fetcher):
                yield event
        except RuminationError as exc:
            yield ev.ErrorEvent(message=str(exc), fatal=True)
            raise
        finally:
            if self._engine is None:
                await engine.aclose()
            if self._fetcher is None:
                await fetcher.aclose()

    async def _research(self, question: str, engine: SearchEngine, fetcher: Fetcher) -> AsyncIterator[ev.Event]:
        cfg, tok = self.config, self.backend.tokenizer
        browser = Browser(
            engine,
            fetcher,
            partial(truncate_tokens, tok),
            max_results=cfg.search_results,
            layout=cfg.search_layout,
            page_max_tokens=cfg.page_max_tokens,
        )
        st = _State(question, [{"role": "user", "content": question}], browser)
        yield ev.RunStarted(
            question=question,
            backend=self.backend.name,
            model=self.backend.model_id,
            search=engine.name,
            max_turns=cfg.max_turns,
            context_window=self.backend.context_window,
            max_context_tokens=cfg.max_context_tokens,
        )
        stop: StopReason | None = None
        turn = 0
        while stop is None:
            turn += 1
            prompt = render(tok, st.messages)
            stop = self._budget_stop(st, turn, count_tokens(tok, prompt))
            if stop:
                break
            async for event in self._generate(st, turn, prompt, report=False):
                yield event
            if st.outcome is None:
                stop = "cancelled"
                break
            async for event in self._act(st, turn):
                yield event
            stop = self._loop_stop(st)
        if stop != "finished":
            detail = f"stopped after {turn - 1} turns: {stop.replace('_', ' ')}"
            yield ev.ForcedFinish(reason=stop, detail=detail)
            st.messages.append({"role": "assistant", "content": FINISH_CALL})
        async for event in self._report(st, turn, stop):
            yield event

    def _budget_stop(self, st: _State, turn: int, prompt_tokens: int) -> StopReason | None:
        cfg = self.config
        if self._finish_requested:
            return "cancelled"
        if turn > cfg.max_turns:
            return "max_turns"
        if prompt_tokens > cfg.max_context_tokens:
            return "context_budget"
        if cfg.max_seconds is not None and time.monotonic() - st.started > cfg.max_seconds:
            return "time_budget"
        return None

    def _loop_stop(self, st: _State) -> StopReason | None:
        last = st.steps[-1] if st.steps else None
        if last is not None and last.call is not None and last.call.name == "finish":
            return "finished"
        if st.format_errors >= self.config.max_format_errors:
            return "format_errors"
        if st.actions and max(st.actions.values()) >= self.config.max_repeats:
            return "repeated_action"
        return None

    async def _generate(self, st: _State, turn: int, prompt: str, *, report: bool) -> AsyncIterator[ev.Event]:
        """Stream one generation as thinking (and report) deltas; leave its Outcome in st.outcome."""
        cfg = self.config
        prompt_tokens = count_tokens(self.backend.tokenizer, prompt)
        yield ev.TurnStarted(turn=turn, prompt_tokens=prompt_tokens, report=report)
        room = self.backend.context_window - prompt_tokens
        params = SamplingParams(max(1, min(cfg.max_new_tokens, room)), cfg.temperature, cfg.top_p, cfg.seed)
        st.outcome = None
        splitter = _ThinkSplitter()
        gen = self.backend.generate(prompt, params)
        try:
            async for chunk in gen:
                if chunk.outcome is not None:
                    st.outcome = chunk.outcome
                    thinking, answer = splitter.flush()
                elif self._finish_requested and not report:
                    break
                else:
                    thinking, answer = splitter.feed(chunk.text)
                if thinking:
                    yield ev.ThinkingDelta(turn=turn, text=thinking)
                if answer and report:
                    yield ev.ReportDelta(text=answer)
        finally:
            await gen.aclose()
        if st.outcome is not None:
            o = st.outcome
            usage = TurnUsage(
                turn=turn,
                prompt_tokens=o.prompt_tokens,
                generated_tokens=o.generated_tokens,
                prefilled_tokens=o.prefilled_tokens,
                reused_tokens=o.reused_tokens,
                finish_reason=o.finish_reason,
                seconds=o.seconds,
                first_token_seconds=o.first_token_seconds,
            )
            st.usage.add(usage)
            yield ev.TurnFinished(
                usage=usage, context_tokens=o.prompt_tokens + o.generated_tokens, elapsed=time.monotonic() - st.started
            )

    async def _act(self, st: _State, turn: int) -> AsyncIterator[ev.Event]:
        """Parse the call in st.outcome, run it, and append the assistant and observation messages."""
        assert st.outcome is not None
        text = st.outcome.text
        raw = split_thinking(text)[1].strip()
        try:
            parsed = parse_tool_call(text, cut_off=st.outcome.finish_reason == "length")
        except ToolCallError as err:
            # Keep only what the template would keep: a cut-off thinking trace must not enter the context.
            st.messages += [
                {"role": "assistant", "content": text if THINK_CLOSE in text else ""},
                {"role": "observation", "content": err.observation},
            ]
            st.format_errors += 1
            st.steps.append(Step(turn=turn, call=None, observation=err.observation, ok=False, error=err.kind))
            yield ev.ToolCallEvent(turn=turn, call=None, raw=raw)
            yield ev.ObservationEvent(turn=turn, tool=None, content=err.observation, ok=False, error=err.kind)
            return
        call = parsed.call
        st.messages.append({"role": "assistant", "content": parsed.kept_text})
        yield ev.ToolCallEvent(turn=turn, call=call, raw=parsed.raw)
        if call.name == "finish":
            st.steps.append(Step(turn=turn, call=call, observation="", ok=True))
            return
        st.actions[st.browser.action_key(call)] += 1
        result = await st.browser.run(call)
        observation = result.observation
        if parsed.extra_calls:
            observation += (
                f"\n\n[Note: only your first tool call was run; {parsed.extra_calls} more were "
                "ignored. Make one call per turn.]"
            )
        st.messages.append({"role": "observation", "content": observation})
        st.format_errors = st.format_errors + 1 if result.error == "arguments" else 0
        st.steps.append(Step(turn=turn, call=call, observation=observation, ok=result.ok, error=result.error))
        yield ev.ObservationEvent(
            turn=turn,
            tool=call.name,
            content=observation,
            ok=result.ok,
            error=result.error,
            seconds=result.seconds,
            source_id=result.source_id,
            url=result.url,
            title=result.title,
            results=result.results,
        )

    async def _report(self, st: _State, turn: int, stop: StopReason) -> AsyncIterator[ev.Event]:
        """Generate the report after the (real or synthetic) finish call, and emit the result."""
        prompt = render(self.backend.tokenizer, st.messages)
        async for event in self._generate(st, turn, prompt, report=True):
            yield event
        text = st.outcome.text if st.outcome else ""
        report = split_thinking(text)[1]
        if THINK_CLOSE not in text and THINK_OPEN in text:
            report = ""
            yield ev.ErrorEvent(message="the model's report was cut off before its thinking ended; no report")
        report = report.strip()
        sources = _mark_cited(st.browser.sources, report)
        st.messages.append({"role": "assistant", "content": text})
        result = ResearchResult(
            question=st.question,
            report=report,
            sources=sources,
            steps=st.steps,
            turns=turn,
            stop_reason=stop,
            usage=st.usage,
            backend=self.backend.name,
            model=self.backend.model_id,
            started_at=st.started_at,
            finished_at=datetime.now(UTC),
            unverified_urls=_unverified(sources, report),
            messages=[Message.model_validate(m) for m in st.messages],
        )
        yield ev.RunFinished(result=result)


def _norm(url: str) -> str:
    return url.rstrip("/.,;:").removeprefix("https://").removeprefix("http://").removeprefix("www.")


def _mark_cited(sources: list[Source], report: str) -> list[Source]:
    cited = {_norm(u) for u in _URL.findall(report)}
    return [s.model_copy(update={"cited": _norm(s.url) in cited or _norm(s.final_url) in cited}) for s in sources]


def _unverified(sources: list[Source], report: str) -> list[str]:
    read = {_norm(s.url) for s in sources} | {_norm(s.final_url) for s in sources}
    return sorted({u.rstrip(".,;:") for u in _URL.findall(report) if _norm(u) not in read})


class _ThinkSplitter:
    """Split streamed text into thinking (inside <think>...</think>) and answer, across chunk borders."""

    def __init__(self) -> None:
        self.buffer, self.opened, self.after = "", False, False

    def feed(self, text: str) -> tuple[str, str]:
        if self.after:
            return "", text
        self.buffer += text
        if not self.opened:
            stripped = self.buffer.lstrip()
            if THINK_OPEN.startswith(stripped):  # may still become the opening tag
                return "", ""
            self.opened = True
            if stripped.startswith(THINK_OPEN):
                self.buffer = stripped[len(THINK_OPEN) :].lstrip("\n")
        head, sep, tail = self.buffer.partition(THINK_CLOSE)
        if sep:
            self.after, self.buffer = True, ""
            return head, tail
        keep = _partial_suffix(self.buffer, THINK_CLOSE)
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out, ""

    def flush(self) -> tuple[str, str]:
        out, self.buffer = self.buffer, ""
        return ("", out) if self.after else (out, "")


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
