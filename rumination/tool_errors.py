"""Why a tool turn failed: the one vocabulary the parser, the browser, steps and events share."""

from __future__ import annotations

from typing import Literal

# The model's output held no runnable call: none found, an unknown tool, bad arguments, cut off by the token limit.
ParseErrorKind = Literal["format", "unknown_tool", "arguments", "cut_off"]
# A call that could not be carried out: a click outside the results ("arguments"), the search engine or the fetch
# failed, the URL was refused (deny list, provenance, egress guard, robots.txt), or the user asked for the report.
BrowserErrorKind = Literal["arguments", "search", "fetch", "refused", "cancelled"]
ToolErrorKind = Literal[ParseErrorKind, BrowserErrorKind]
