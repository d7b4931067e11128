"""Make untrusted page and search text safe to put in front of the model."""

from __future__ import annotations

import re

from rumination.protocol import SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN

# Zero-width and bidi controls, BOM, and the Unicode tag block (used to hide instructions).
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]")
# C0 and C1 control characters but tab and newline (a carriage return becomes a newline first): terminal escapes.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Role tokens, and the think tags the chat template splits every message on.
_SPECIAL = re.compile("|".join(re.escape(t) for t in (*SPECIAL_TOKENS, THINK_OPEN, THINK_CLOSE)))


def terminal_safe(text: str) -> str:
    """Text that cannot drive or spoof a terminal: control (escapes), bidi and zero-width characters removed."""
    return _INVISIBLE.sub("", _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def clean_text(text: str) -> str:
    """Strip control and invisible characters; defuse spelled-out role tokens (<|user|>) and think tags."""
    text = terminal_safe(text)
    # A space after the first character keeps the text readable but stops it tokenising as a role.
    return _SPECIAL.sub(lambda m: m.group(0)[0] + " " + m.group(0)[1:], text)
