"""Parse and validate the model's tool call: the JSON object after its last </think>."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rumination.protocol import THINK_CLOSE, THINK_OPEN, TOOL_NAMES
from rumination.results import ToolCall
from rumination.sanitize import clean_text
from rumination.streaming import split_thinking
from rumination.tool_errors import ParseErrorKind

_EXAMPLES = {
    "search": '{"name": "search", "arguments": {"query": "your keywords"}}',
    "click": '{"name": "click", "arguments": {"link_id": 0}}',
    "open": '{"name": "open", "arguments": {"url": "https://example.org/page"}}',
    "finish": '{"name": "finish", "arguments": {}}',
}
_MAX_CANDIDATES = 64


class ToolCallError(Exception):
    """A tool call that cannot be executed; `observation` is the message shown to the model."""

    def __init__(self, kind: ParseErrorKind, observation: str):
        super().__init__(observation)
        self.kind: ParseErrorKind = kind
        self.observation = observation


@dataclass(frozen=True)
class ParsedCall:
    """A valid call, where it ends in the assistant text, and what was ignored around it."""

    call: ToolCall
    raw: str
    kept_text: str
    extra_calls: int
    trailing: str


def parse_tool_call(text: str, *, cut_off: bool = False) -> ParsedCall:
    """Return the call in `text`, or raise ToolCallError naming the fix.

    Policy: only the text after the last </think> counts; the first JSON object with a "name" is the
    call; any further calls are ignored (and counted); text after the call is cut.
    """
    if cut_off:
        raise ToolCallError(
            "cut_off",
            "Error: your output hit the token limit before a complete tool call, so nothing was run. "
            "Think more briefly, then write exactly one tool call such as " + _EXAMPLES["search"],
        )
    _, after = split_thinking(text)
    found = _find_calls(after)
    unclosed = THINK_CLOSE not in text and not after and bool(text.strip())  # cut off inside its thinking
    opened = 0 if unclosed else after.find(THINK_OPEN)
    if opened >= 0 and (not found or opened < found[0][1]):
        raise ToolCallError(
            "format",
            "Error: your thinking was never closed (the closing think tag is missing), so no tool call was found. "
            "Close your thinking, then write one tool call such as " + _EXAMPLES["search"],
        )
    if not found:
        raise ToolCallError(
            "format",
            'Error: no tool call found after your thinking. Write exactly one JSON object with "name" and '
            '"arguments", for example ' + _EXAMPLES["search"] + " or " + _EXAMPLES["finish"],
        )
    (obj, _start, end), *rest = found
    call = validate_call(obj)
    kept = text[: len(text) - len(after) + end]
    return ParsedCall(call, after.strip(), kept, len(rest), after[end:].strip())


def _find_calls(text: str) -> list[tuple[dict[str, Any], int, int]]:
    """Every JSON object with a "name" key in `text`, as (object, start, end), fences tolerated."""
    decoder = json.JSONDecoder()
    calls: list[tuple[dict[str, Any], int, int]] = []
    pos, tries = 0, 0
    while tries < _MAX_CANDIDATES:
        start = text.find("{", pos)
        if start < 0:
            break
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        if isinstance(obj, dict) and "name" in obj:
            calls.append((obj, start, end))
            pos = end
        else:
            pos = start + 1
    return calls


def validate_call(obj: dict[str, Any]) -> ToolCall:
    """Check the name and arguments of one decoded call object."""
    name = obj.get("name")
    if not isinstance(name, str) or name not in TOOL_NAMES:
        raise ToolCallError(
            "unknown_tool",
            f"Error: unknown tool {_show(name)}. The tools are search, click, "
            "open and finish, for example " + _EXAMPLES["search"],
        )
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            args = None
    if args is None and name == "finish":
        args = {}
    if not isinstance(args, dict):
        raise ToolCallError("arguments", f'Error: "arguments" must be a JSON object. Write it as {_EXAMPLES[name]}')
    if name == "search":
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _arg_error(name, '"query" must be a non-empty string')
        return ToolCall(name=name, arguments={"query": query.strip()})
    if name == "click":
        link_id = _as_int(args.get("link_id"))
        if link_id is None:
            raise _arg_error(name, '"link_id" must be an integer: the number of a result in the latest search')
        return ToolCall(name=name, arguments={"link_id": link_id})
    if name == "open":
        url = args.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _arg_error(name, '"url" must be a non-empty string: a URL or a domain')
        return ToolCall(name=name, arguments={"url": url.strip()})
    return ToolCall(name="finish", arguments={})


def _show(value: Any) -> str:
    """A short, safe rendering of a model-supplied value for an error message."""
    if isinstance(value, dict | list):
        return "(a JSON " + ("object" if isinstance(value, dict) else "array") + ")"
    return clean_text(json.dumps(value, ensure_ascii=False)[:80])


def _arg_error(name: str, problem: str) -> ToolCallError:
    return ToolCallError("arguments", f"Error: the {name} tool's {problem}. Write it as {_EXAMPLES[name]}")


def _as_int(value: Any) -> int | None:
    """Accept an int, an integral float or a digit string; refuse bools and everything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None
