"""Human-readable rendering of the event stream for a terminal (the CLI's stderr trace)."""

from __future__ import annotations

from typing import TextIO

from rumination import events as ev
from rumination import export
from rumination.sanitize import terminal_safe


class Trace:
    """Write thinking and tool activity as they happen."""

    def __init__(self, out: TextIO, *, color: bool | None = None):
        self.out = out
        self.color = out.isatty() if color is None else color
        self.at_line_start = True

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _write(self, text: str, code: str = "") -> None:
        text = terminal_safe(text)  # page titles, URLs and the model's text may carry escape sequences
        if text:
            self.out.write(self._style(text, code) if code else text)
            self.out.flush()
            self.at_line_start = text.endswith("\n")

    def _line(self, text: str, code: str = "", *, gap: bool = False) -> None:
        """Write `text` on a line of its own (after a blank line when `gap`)."""
        self._write(("" if self.at_line_start else "\n") + ("\n" if gap else ""))
        self._write(text, code)
        self._write("\n")

    def __call__(self, event: ev.Event) -> None:
        """Render one event."""
        match event:
            case ev.StatusEvent(transient=True, message=message):
                if self.color:  # a live terminal: overwrite the progress line in place
                    if not self.at_line_start:
                        self.out.write("\r\x1b[K")
                    self._write(f"· {message}", "2")
            case ev.StatusEvent(message=message):
                self._line(f"· {message}", "2")
            case ev.RunStarted():
                if event.replay_of:
                    self._line(f"Replaying run {event.replay_of}: {event.question}", "1")
                elif event.resumed_after is not None:
                    turns = plural(event.resumed_after, "tool turn")
                    self._line(f"Resuming run {event.run_id} after {turns}: {event.question}", "1")
                else:
                    self._line(f"Researching: {event.question}", "1")
                run = f"run {event.run_id} · " if event.run_id else ""
                self._line(f"  {run}backend: {event.backend} · model: {event.model} · search: {event.search}", "2")
            case ev.TurnStarted(report=True):
                self._line(f"── writing the report · {event.prompt_tokens:,} tokens of context ──", "2", gap=True)
            case ev.TurnStarted():
                self._line(f"── turn {event.turn} · {event.prompt_tokens:,} tokens of context ──", "2", gap=True)
            case ev.ThinkingDelta(text=text):
                self._write(text, "2")
            case ev.ToolCallEvent(call=None):
                self._line("✗ no valid tool call", "31")
            case ev.ToolCallEvent(call=call) if call is not None:
                arg = next(iter(call.arguments.values()), "")
                self._line(f"→ {call.name} {arg}".rstrip(), "36")
            case ev.ObservationEvent(ok=False):
                shown = event.observation.splitlines()[0]
                why = f" ({event.detail})" if event.detail and event.detail not in shown else ""  # the user may know
                self._line(f"✗ {shown}{why}", "31")
            case ev.ObservationEvent(results=int(n)):
                self._line(f"← {plural(n, 'result')} ({event.seconds:.1f} s)", "32")
            case ev.ObservationEvent(source_id=int(n)):
                cut = f"; {note}" if (note := cut_note(event)) else ""
                self._line(f"← [{n}] {event.title} ({event.url}, {event.seconds:.1f} s{cut})", "32")
            case ev.TurnFinished(usage=u) if u.prefill_seconds is not None and u.prefilled_tokens is not None:
                speed = f" · decode {u.decode_tokens_per_second:.1f} tok/s" if u.decode_tokens_per_second else ""
                if u.drafted_tokens:
                    speed += f" ({u.accepted_tokens:,} of {u.drafted_tokens:,} drafted tokens accepted)"
                reused = f" ({u.reused_tokens:,} reused)" if u.reused_tokens else ""
                prefill = f"· prefilled {plural(u.prefilled_tokens, 'token')}{reused} in {u.prefill_seconds:.2f} s"
                self._line(prefill + speed, "2")
            case ev.ForcedFinish(detail=detail):
                self._line(f"! writing the report now: {detail}", "33")
            case ev.ErrorEvent(fatal=False, message=message):
                self._line(f"warning: {message}", "33")
            case ev.RunFinished(result=r):
                self._line(
                    f"Done: {plural(r.turns, 'tool turn')}, stop reason {r.stop_reason}, "
                    f"{plural(len(r.sources), 'source')} read, {plural(r.usage.generated_tokens, 'token')} generated",
                    "2",
                    gap=True,
                )
                if r.error:
                    self._line(f"error: {r.error}; no report", "31")
                for source in r.sources:
                    cited = " (cited)" if source.cited else ""
                    self._line(f"  [{source.id}] {source.title} · {source.final_url}{cited}", "2")
                if not r.sources:
                    self._line("warning: no page was read; the report rests on the model's own knowledge", "33")
                for problem in export.warnings(r):  # unverified and unsupported citations
                    self._line(f"warning: {problem}", "33")


def cut_note(step: ev.ObservationEvent) -> str:
    """How much of a long page was shown, e.g. "8,000 of about 42,000 tokens, read on"; "" for a page shown whole."""
    if step.page_tokens is None or step.kept_tokens is None:
        return "read on" if step.continued else ""
    return f"{step.kept_tokens:,} of about {step.page_tokens:,} tokens" + (", read on" if step.continued else "")


def plural(count: int, noun: str) -> str:
    """'1 source', '2 sources', '1,024 tokens'."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
