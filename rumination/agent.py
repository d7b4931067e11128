"""The research loop: render, generate, parse, act, observe; then write the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from rumination import events as ev
from rumination import journal as jr
from rumination.backends.base import Chunk, ModelBackend, Outcome, OutOfMemory, Prompt, SamplingParams
from rumination.browser import Browser
from rumination.citations import check_citations, mark_cited, unverified_urls
from rumination.config import Config
from rumination.errors import BackendError, RuminationError
from rumination.factory import make_engine, make_fetcher
from rumination.formatting import observation as observation_text
from rumination.neterrors import brief
from rumination.parser import ToolCallError, parse_tool_call
from rumination.protocol import FINISH_CALL, THINK_CLOSE, THINK_OPEN
from rumination.registry import backends
from rumination.results import Message, ResearchResult, Step, StopReason, ToolCall, ToolResult, TurnUsage, Usage
from rumination.runs import Run, check_resumable, config_for, journaled
from rumination.sanitize import clean_text, terminal_safe
from rumination.search.base import SearchEngine
from rumination.streaming import ThinkSplitter, split_thinking
from rumination.system_prompt import PromptRenderer
from rumination.web.base import Fetcher

T = TypeVar("T")
log = logging.getLogger(__name__)
REPORT_ROOM = 4096  # tokens kept free below the window for the report
SMALL_CONTEXT = 8192  # research room below which a run is warned it will be short
OMITTED = "[omitted: this observation was dropped to leave room for the report]"


@dataclass
class _State:
    """Mutable state of one run."""

    question: str
    messages: list[dict[str, str]]
    browser: Browser
    prompts: PromptRenderer  # one per run: every turn's system segment is byte-identical
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    format_errors: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    outcome: Outcome | None = None
    interrupted: StopReason | None = None
    stop: StopReason | None = None  # research is over: the report comes next (set before the last checkpoint)
    run: Run | None = None  # the run's journal, when it keeps one
    outputs: dict[int, str] = field(default_factory=dict)  # the model's raw output of each turn not checkpointed yet
    saved: tuple[int, int, int] = (0, 0, 0)  # messages, steps and generations already in the journal

    def restore(self, state: jr.RunState) -> None:
        """Continue from a journal's last checkpoint: the budgets count what was spent."""
        if state.browser is None:  # interrupted before its first turn ended: it starts afresh
            return
        self.messages, self.steps = [dict(m) for m in state.messages], list(state.steps)
        for generation in state.usage:
            self.usage.add(generation)
        self.browser.restore(state.browser)
        self.format_errors, self.actions = state.format_errors, Counter(state.actions)
        self.started = time.monotonic() - state.elapsed
        self.stop = state.stop
        self.saved = (len(self.messages), len(self.steps), len(self.usage.generations))


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
        self._backend_given = backend is not None
        self._engine, self._fetcher = engine, fetcher
        self._finish = threading.Event()
        self._wake: Callable[[], None] = lambda: None

    def request_finish(self) -> None:
        """Ask the current run to stop researching and write its report now (safe from any thread)."""
        self._finish.set()
        self._wake()

    async def run(self, question: str) -> ResearchResult:
        """Research `question` and return the result."""
        return await _result_of(self.stream(question))

    def run_sync(self, question: str) -> ResearchResult:
        """Blocking wrapper around `run`."""
        return asyncio.run(self.run(question))

    async def stream(self, question: str, *, replay_of: str | None = None) -> AsyncIterator[ev.Event]:
        """Research `question`, yielding every event; the last one is RunFinished (or a fatal error).

        `replay_of` names the run this one replays (its journal's header says so).
        """
        question = question.strip()
        if not question:
            raise RuminationError("the question is empty")
        async with contextlib.aclosing(self._stream(question, None, replay_of)) as events:
            async for event in events:
                yield event

    async def resume_stream(self, run_id: str | jr.RunLog) -> AsyncIterator[ev.Event]:
        """Continue the interrupted run `run_id` (or a unique prefix, or its journal already read) from its last
        complete turn, yielding events.

        The run's recorded settings apply, except those this Researcher's config sets explicitly (for this stream
        only); the backend is made from them unless one was given to the constructor or is loaded already.
        """
        log = run_id if isinstance(run_id, jr.RunLog) else jr.load(self.config.data_dir, run_id)
        check_resumable(log)
        own = self.config, self.backend  # the run's settings hold for this stream only
        self.config = config_for(log, self.config)
        if not self._backend_given and self.backend.tokenizer is None:
            self.backend = backends.get(self.config.backend)(self.config)
        try:
            async with contextlib.aclosing(self._stream(log.header.question, log)) as events:
                async for event in events:
                    yield event
        finally:
            self.config = own[0]
            if self.backend.tokenizer is None:  # a backend loaded for the run is kept: loading is the slow part
                self.backend = own[1]

    async def resume(self, run_id: str) -> ResearchResult:
        """Continue the interrupted run `run_id` and return its result."""
        return await _result_of(self.resume_stream(run_id))

    def resume_sync(self, run_id: str) -> ResearchResult:
        """Blocking wrapper around `resume`."""
        return asyncio.run(self.resume(run_id))

    async def _stream(
        self, question: str, log: jr.RunLog | None, replay_of: str | None = None
    ) -> AsyncIterator[ev.Event]:
        engine = fetcher = run = None
        loading: list[ev.Event] = []  # a new run's journal opens after the load: its events are written then
        try:
            engine = self._engine or make_engine(self.config)
            fetcher = self._fetcher or make_fetcher(self.config)
            if log is not None:
                run = Run.resume(log)  # its lock first: a second resume of the run fails before loading anything
            if self.backend.tokenizer is None:
                async for event in journaled(run, self._load_backend()):
                    loading.append(event)  # read only for a new run, whose journal is not open yet
                    yield event
            if log is None and self.config.journal:  # after the load: a model that fails to load leaves no run
                try:
                    run = Run.start(question, self.config, replay_of)
                    for event in loading:
                        run.journal.event(event)
                except jr.JournalError as exc:  # a read-only or full disk costs the journal, not the research
                    yield ev.ErrorEvent(
                        message=f"{exc}; the run goes on without a journal (so it cannot be resumed)",
                        detail={"journal": True},
                    )
            async for event in journaled(run, self._research(question, engine, fetcher, run, log)):
                yield event
        except RuminationError as exc:
            event = ev.ErrorEvent(message=str(exc), fatal=True)
            if run is not None:
                run.journal.event(event)
            yield event
            raise
        finally:
            self._finish.clear()  # cleared at the end, so a request made as the run starts is not lost
            if run is not None:
                run.close()
            if engine is not None and self._engine is None:
                await engine.aclose()
            if fetcher is not None and self._fetcher is None:
                await fetcher.aclose()

    async def _load_backend(self) -> AsyncIterator[ev.Event]:
        """Load the model in a daemon thread, passing on its progress lines as status events."""
        yield ev.StatusEvent(message=f"loading the {self.backend.name} model: {self.backend.model_id} ...")
        start, loop = time.monotonic(), asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()
        load = asyncio.ensure_future(
            _in_daemon_thread(lambda: self.backend.load(lambda line: _call_soon(loop, lines.put_nowait, line)))
        )
        while not load.done():
            line = asyncio.ensure_future(lines.get())
            await asyncio.wait({load, line}, return_when=asyncio.FIRST_COMPLETED)
            if line.done():
                yield ev.StatusEvent(message=line.result(), transient=True)
            else:
                line.cancel()
        await load
        for note in getattr(self.backend, "load_notes", []):  # what fits, YaRN, fallbacks: kept on screen
            yield ev.StatusEvent(message=note)
        yield ev.StatusEvent(message=f"model loaded in {time.monotonic() - start:.1f} s")

    async def _research(
        self, question: str, engine: SearchEngine, fetcher: Fetcher, run: Run | None, log: jr.RunLog | None
    ) -> AsyncIterator[ev.Event]:
        cfg, tok = self.config, self.backend.tokenizer
        if run is not None:  # the run's own recorded web, in front of the engine and fetcher
            engine, fetcher = run.recording(engine, fetcher, cfg)
        browser = Browser.from_config(cfg, engine, fetcher, tok, question=question)
        st = _State(question, [{"role": "user", "content": question}], browser, PromptRenderer.for_run(tok, cfg))
        st.run = run
        if log is not None:
            st.restore(log.state)
            st.started_at = log.header.started_at
        try:
            async for event in self._run_browser(st, engine, resumed=log is not None):
                yield event
        except BackendError as exc:  # the model went away mid-run (a server lost twice): keep what was read
            yield ev.ErrorEvent(message=f"{exc}; the run ends with what it read", fatal=True)
            yield ev.RunFinished(result=self._result(st, "", "error", error=str(exc)))
        finally:
            await browser.aclose()

    async def _run_browser(self, st: _State, engine: SearchEngine, resumed: bool) -> AsyncIterator[ev.Event]:
        cfg, tok, question = self.config, self.backend.tokenizer, st.question
        yield ev.RunStarted(
            run_id=st.run.id if st.run else None,
            resumed_after=len(st.steps) if resumed else None,
            replay_of=st.run.replay_of if st.run else None,
            question=question,
            backend=self.backend.name,
            model=self.backend.model_id,
            search=" → ".join(cfg.engines) if self._engine is None else engine.name,
            max_turns=cfg.max_turns,
            context_window=self.backend.context_window,
            max_context_tokens=self._context_limit(),
        )
        if st.prompts.notice:
            yield ev.StatusEvent(message=st.prompts.notice)
        if self._context_limit() < SMALL_CONTEXT:
            window = self.backend.context_window
            yield ev.StatusEvent(
                message=f"a {window:,}-token context window leaves {max(self._context_limit(), 0):,} tokens for "
                f"research once {window - self._context_limit():,} are kept for the report: too little for more "
                "than a turn or two (a longer context, or a lower --max-new-tokens, leaves more)"
            )
        stop = st.stop
        while stop is None:
            turn = len(st.steps) + 1
            prompt = st.prompts.render(st.messages, turn)
            prompt_tokens = len(prompt.token_ids(tok))
            stop = self._budget_stop(st, turn, prompt_tokens)
            if stop:
                break
            async for event in self._generate(st, turn, prompt, prompt_tokens, report=False):
                yield event
            if st.outcome is None:
                stop = st.interrupted or "cancelled"
                break
            async for event in self._act(st, turn):
                yield event
            stop = self._loop_stop(st)
            if stop is None:
                self._checkpoint(st)
        if st.stop is None:  # research ended in this process (a resumed run may have ended it before)
            if stop != "finished":
                turns = len(st.steps)
                detail = f"stopped after {turns} tool turn{'' if turns == 1 else 's'}: {stop.replace('_', ' ')}"
                yield ev.ForcedFinish(reason=stop, detail=detail)
                st.messages.append({"role": "assistant", "content": FINISH_CALL})
            st.stop = stop
            self._checkpoint(st)
        async for event in self._report(st, stop):
            yield event

    @staticmethod
    def _checkpoint(st: _State) -> None:
        """Close a turn in the journal: what it added, and the state a resume starts from (made durable)."""
        if st.run is None:
            return
        messages, steps, generations = st.saved
        st.run.checkpoint(
            jr.Checkpoint(
                turn=len(st.steps),
                messages_from=messages,
                messages=[Message.model_validate(m) for m in st.messages[messages:]],
                steps=st.steps[steps:],
                usage=st.usage.generations[generations:],
                outputs=st.outputs,
                browser=st.browser.state(),
                format_errors=st.format_errors,
                actions=dict(st.actions),
                elapsed=time.monotonic() - st.started,
                stop=st.stop,
            )
        )
        st.outputs = {}
        st.saved = (len(st.messages), len(st.steps), len(st.usage.generations))

    def _context_limit(self) -> int:
        """Prompt tokens above which the report is forced: the setting, capped below the window."""
        room = min(self.config.max_new_tokens, REPORT_ROOM)
        return min(self.config.max_context_tokens, self.backend.context_window - room)

    def _over_time(self, st: _State) -> bool:
        return self.config.max_seconds is not None and time.monotonic() - st.started > self.config.max_seconds

    def _budget_stop(self, st: _State, turn: int, prompt_tokens: int) -> StopReason | None:
        if self._finish.is_set():
            return "cancelled"
        if turn > self.config.max_turns:
            return "max_turns"
        if prompt_tokens > self._context_limit():
            return "context_budget"
        if self._over_time(st):
            return "time_budget"
        return None

    def _loop_stop(self, st: _State) -> StopReason | None:
        last = st.steps[-1].call if st.steps else None
        if last is not None and last.name == "finish":
            return "finished"
        if st.format_errors >= self.config.max_format_errors:
            return "format_errors"
        if st.actions and max(st.actions.values()) >= self.config.max_repeats:
            return "repeated_action"
        return None

    async def _generate(
        self, st: _State, turn: int, prompt: Prompt, prompt_tokens: int, *, report: bool
    ) -> AsyncIterator[ev.Event]:
        """Stream one generation as thinking (and report) deltas; leave its Outcome in st.outcome."""
        cfg = self.config
        yield ev.TurnStarted(turn=turn, prompt_tokens=prompt_tokens, report=report)
        room = self.backend.context_window - prompt_tokens
        params = SamplingParams(
            max_new_tokens=max(1, min(cfg.max_new_tokens, room)),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=cfg.seed,
        )
        st.outcome, splitter = None, ThinkSplitter()
        gen = self.backend.generate(prompt, params)
        try:
            async for chunk in self._chunks(st, gen, report):
                if chunk.restart:
                    splitter = ThinkSplitter()
                    yield ev.StatusEvent(message=f"turn {turn}: {chunk.restart}; generating it again")
                    if report:
                        yield ev.ReportDelta(text="", reset=True)
                    continue
                if chunk.outcome is not None:
                    st.outcome = chunk.outcome
                    split = splitter.flush()
                else:
                    split = splitter.feed(chunk.text)
                if split.thinking:
                    yield ev.ThinkingDelta(turn=turn, text=split.thinking)
                if report and (split.answer or split.reset):
                    yield ev.ReportDelta(text=split.answer, reset=split.reset)
        except OutOfMemory as exc:
            if report:
                raise
            # Out of GPU memory mid-research: drop the observation that overflowed and write the report.
            st.interrupted = "context_budget"
            _shrink_last_observation(st)
            yield ev.ErrorEvent(message=f"{exc}; writing the report from what was gathered")
        finally:
            await gen.aclose()
        if st.outcome is not None:
            o = st.outcome
            st.outputs[turn] = o.text
            usage = TurnUsage(turn=turn, report=report, **o.model_dump(exclude={"text", "decode_tokens_per_second"}))
            st.usage.add(usage)
            yield ev.TurnFinished(
                usage=usage, context_tokens=o.prompt_tokens + o.generated_tokens, elapsed=time.monotonic() - st.started
            )

    async def _chunks(self, st: _State, gen: AsyncIterator[Chunk], report: bool) -> AsyncIterator[Chunk]:
        """The generation's chunks; a research turn ends early (even mid-prefill) on a finish request or time up."""
        if report:  # the report is always written to its end
            async for chunk in gen:
                yield chunk
            return
        loop, woken = asyncio.get_running_loop(), asyncio.Event()
        self._wake = lambda: loop.call_soon_threadsafe(woken.set)
        step: asyncio.Future[Chunk | None] | None = None
        try:
            while not (self._finish.is_set() or self._over_time(st)):
                step, waiter = asyncio.ensure_future(anext(gen, None)), asyncio.ensure_future(woken.wait())
                await asyncio.wait({step, waiter}, timeout=self._time_left(st), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not step.done():  # the model is still prefilling or queued: give up on this turn
                    break
                if (chunk := step.result()) is None:
                    return
                yield chunk
            st.interrupted = "cancelled" if self._finish.is_set() else "time_budget"
        finally:
            self._wake = lambda: None
            if step is not None and not step.done():  # never leave the generator running: it is closed next
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)

    def _time_left(self, st: _State) -> float | None:
        if self.config.max_seconds is None:
            return None
        return max(0.0, self.config.max_seconds - (time.monotonic() - st.started))

    async def _act(self, st: _State, turn: int) -> AsyncIterator[ev.Event]:
        """Parse the call in st.outcome, run it, and append the assistant and observation messages."""
        assert st.outcome is not None
        text = st.outcome.text
        try:
            parsed = parse_tool_call(text, cut_off=st.outcome.finish_reason == "length")
        except ToolCallError as err:
            # Keep only what the template would keep: a cut-off thinking trace must not enter the context.
            st.messages += [
                {"role": "assistant", "content": text if THINK_CLOSE in text else ""},
                {"role": "observation", "content": err.observation},
            ]
            st.format_errors += 1
            yield ev.ToolCallEvent(turn=turn, call=None, raw=split_thinking(text)[1].strip())
            yield self._record(st, Step(turn=turn, call=None, observation=err.observation, ok=False, error=err.kind))
            return
        call = parsed.call
        st.messages.append({"role": "assistant", "content": parsed.kept_text})
        yield ev.ToolCallEvent(turn=turn, call=call, raw=parsed.raw)
        if call.name == "finish":
            st.steps.append(Step(turn=turn, call=call, observation="", ok=True))
            return
        st.actions[st.browser.action_key(call)] += 1
        thinking = split_thinking(text)[0]
        result, failure = await self._unless_finished(call_tool(st.browser, call, thinking))
        if failure is not None:
            yield ev.ErrorEvent(
                message=f"turn {turn}: the {call.name} call failed unexpectedly ({failure}); the model was told, "
                "and the run goes on",
                detail={"turn": turn, "tool": call.name},
            )
        observation = observation_text(result)  # error texts can quote server-controlled strings
        if parsed.extra_calls:
            observation += (
                f"\n\n[Note: only your first tool call was run; {parsed.extra_calls} more were "
                "ignored. Make one call per turn.]"
            )
        st.messages.append({"role": "observation", "content": observation})
        st.format_errors = st.format_errors + 1 if result.error == "arguments" else 0
        step = Step.model_validate({**result.model_dump(), "observation": observation, "turn": turn, "call": call})
        yield self._record(st, step)

    @staticmethod
    def _record(st: _State, step: Step) -> ev.ObservationEvent:
        """Keep a tool turn's Step and announce it."""
        st.steps.append(step)
        return ev.ObservationEvent.model_validate(step.model_dump())

    async def _unless_finished(self, action: Awaitable[tuple[ToolResult, str | None]]) -> tuple[ToolResult, str | None]:
        """Run a tool call (`call_tool`), abandoning it if the user asks to finish meanwhile."""
        loop, woken = asyncio.get_running_loop(), asyncio.Event()
        self._wake = lambda: loop.call_soon_threadsafe(woken.set)
        task, waiter = asyncio.ensure_future(action), asyncio.ensure_future(woken.wait())
        try:
            if not self._finish.is_set():
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake = lambda: None
            waiter.cancel()
            if not task.done():  # abandoned, or this run is being cancelled: the call never outlives it
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()  # call_tool raises nothing but a cancellation
        return ToolResult(
            observation="Error: cancelled because the user asked for the report now.", ok=False, error="cancelled"
        ), None

    async def _report(self, st: _State, stop: StopReason) -> AsyncIterator[ev.Event]:
        """Generate the report after the (real or synthetic) finish call, and emit the result."""
        tok, turn = self.backend.tokenizer, len(st.steps) + 1
        prompt = st.prompts.render(st.messages, turn)
        prompt_tokens = len(prompt.token_ids(tok))
        room = min(self.config.max_new_tokens, REPORT_ROOM)
        while prompt_tokens > self.backend.context_window - room and _shrink_largest_observation(st):
            prompt = st.prompts.render(st.messages, turn)
            prompt_tokens = len(prompt.token_ids(tok))
        async for event in self._generate(st, turn, prompt, prompt_tokens, report=True):
            yield event
        text = st.outcome.text if st.outcome else ""
        report = split_thinking(text)[1].strip()
        if THINK_CLOSE not in text and text.lstrip().startswith(THINK_OPEN):
            yield ev.ErrorEvent(message="the model's report was cut off before its thinking ended; no report")
        elif st.outcome is not None and st.outcome.finish_reason == "length":
            yield ev.ErrorEvent(message="the report was cut off at the token limit (raise --max-new-tokens)")
        st.messages.append({"role": "assistant", "content": text})
        yield ev.RunFinished(result=self._result(st, report, stop))

    def _result(self, st: _State, report: str, stop: StopReason, error: str | None = None) -> ResearchResult:
        citations = check_citations(report, st.browser.sources, st.steps)
        sources = mark_cited(st.browser.sources, citations)
        return ResearchResult(
            question=st.question,
            report=report,
            sources=sources,
            steps=st.steps,
            turns=len(st.steps),
            stop_reason=stop,
            error=error,
            usage=st.usage,
            backend=self.backend.name,
            model=self.backend.model_id,
            started_at=st.started_at,
            finished_at=datetime.now(UTC),
            unverified_urls=unverified_urls(citations),
            messages=[Message.model_validate(m) for m in st.messages],
            citations=citations,
            run_id=st.run.id if st.run else None,
        )


async def call_tool(browser: Browser, call: ToolCall, thinking: str = "") -> tuple[ToolResult, str | None]:
    """Run `call` in `browser` (`thinking`: what the model wrote before it); a failure becomes an error result."""
    # THE one boundary on the tool path: the browser turns the failures it knows (HTTP errors, refusals) into
    # observations itself; whatever else is raised (a decoder, the extractor, the PDF reader, a fetcher, the page's
    # formatting, a prefetch a click awaits) is logged with its traceback and shown to the model as a plain error,
    # so one page never ends a run. Only a cancellation of this call (and KeyboardInterrupt, SystemExit) passes.
    try:
        return await browser.run(call, thinking), None
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        failure: BaseException = exc  # a task the call awaited (a prefetch) was cancelled under it, not the call
    except Exception as exc:  # MemoryError and RecursionError too: only the call that raised them is lost
        failure = exc
    reason = brief(clean_text(f"{type(failure).__name__}: {failure}"), 200)
    # Formatted here and made terminal-safe, not left to a handler: exception texts quote what servers sent.
    trace = "".join(traceback.format_exception(failure))
    log.warning(
        "%s", terminal_safe(f"the {call.name} call {call.arguments!r} failed unexpectedly; the model was told\n{trace}")
    )
    if call.name == "search":
        text, kind = "Error: the search failed (internal error). Try again, or search with other words.", "search"
    else:
        text, kind = "Error: the page could not be read (internal error). Try another source.", "fetch"
    url = call.arguments.get("url") if call.name == "open" else None
    return ToolResult(observation=text, ok=False, error=kind, detail=reason, url=url), reason


async def _result_of(stream: AsyncIterator[ev.Event]) -> ResearchResult:
    """The result a run's event stream ends with."""
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            if isinstance(event, ev.RunFinished):
                return event.result
    raise RuminationError("the run ended without a result")  # pragma: no cover


def _shrink_last_observation(st: _State) -> None:
    if st.messages and st.messages[-1]["role"] == "observation":
        st.messages[-1]["content"] = OMITTED
        st.saved = (min(st.saved[0], len(st.messages) - 1), *st.saved[1:])  # the journal has it in full


def _shrink_largest_observation(st: _State) -> bool:
    """Replace the longest observation with a marker; False when nothing is left to shrink."""
    candidates = [m for m in st.messages if m["role"] == "observation" and m["content"] != OMITTED]
    if not candidates:
        return False
    max(candidates, key=lambda m: len(m["content"]))["content"] = OMITTED
    return True


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Hand `callback` to `loop` from another thread; a loop that has closed (run abandoned) is ignored."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run blocking `fn` in a daemon thread, so an interrupted program need not wait for it to end."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_result(result) if exc is None else future.set_exception(exc)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            _call_soon(loop, settle, None, exc)
        else:
            _call_soon(loop, settle, result, None)

    threading.Thread(target=target, name="rumination-load", daemon=True).start()
    return await future
