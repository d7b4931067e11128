"""Why a tool turn failed: the one vocabulary the parser, the browser, steps and events share.

Each kind is described where the event stream carries it: `ToolResult.error` (so `ObservationEvent.error`).
"""

from __future__ import annotations

from typing import Literal

ParseErrorKind = Literal["format", "unknown_tool", "arguments", "cut_off"]  # no runnable call in the output
BrowserErrorKind = Literal["arguments", "search", "fetch", "refused", "cancelled"]  # a call that could not be run
ToolErrorKind = Literal[ParseErrorKind, BrowserErrorKind]
