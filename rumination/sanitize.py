"""Make untrusted page and search text safe to put in front of the model, and anything printed safe for a terminal."""

from __future__ import annotations

import re
import unicodedata

from rumination.protocol import SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN

# One rule, by Unicode class rather than by list (terminal_safe; clean_text also defuses the model's own tokens):
# - line breaks of every kind (CR, CRLF, VT, FF, FS/GS/RS, NEL, U+2028/2029) become a newline, so that
#   str.splitlines() and a terminal agree with split("\n"); tab stays;
# - removed: categories Cc (other controls: terminal escapes), Cf (format: zero-width, bidi controls, BOM, tags,
#   the invisible math operators, U+061C, U+180E, ...), Cs (lone surrogates: no encoder or tokenizer takes them),
#   Co (private use: no meaning a reader can check) and Cn (unassigned and noncharacters: this Python's Unicode
#   version cannot say they are visible, so an emoji newer than it is lost too); the Variation_Selector property
#   (U+180B-180D, U+180F, U+FE00-FE0F, U+E0100-E01EF: they hide bytes after any visible character); and the
#   assigned Other_Default_Ignorable_Code_Point characters (U+034F, the Hangul fillers, U+17B4-17B5);
# - kept: a single ZWNJ or ZWJ (U+200C/U+200D) between two letters or marks, where Persian and Indic spelling
#   needs it. Anywhere else, and in runs, they go: emoji ZWJ sequences fall apart into their emoji (the meaning
#   stays; the model does not need the joined glyph), and no run of joiners can carry a hidden message.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# Other_Default_Ignorable_Code_Point (PropList.txt) minus its unassigned code points, which Cn covers.
_IGNORABLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
_VARIATION_SELECTORS = ((0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
_KEPT = frozenset("\t\n\u200c\u200d")  # the joiners are judged by their neighbours (_joiner)
_VERDICTS_KEPT = 200_000  # code points whose verdict is remembered: a page of a million distinct ones stays bounded

_NEWLINES = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_JOINERS = re.compile("[\u200c\u200d]+")
# Role tokens, and the think tags the chat template splits every message on.
_SPECIAL = re.compile("|".join(re.escape(t) for t in (*SPECIAL_TOKENS, THINK_OPEN, THINK_CLOSE)))


def is_hidden(ch: str) -> bool:
    """Whether the character `ch` never shows as text (the classes of the rule, the joiners included)."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in _HIDDEN_CATEGORIES
        or ch in _IGNORABLE
        or any(lo <= cp <= hi for lo, hi in _VARIATION_SELECTORS)
    )


class _Verdicts(dict[int, str | None]):
    """str.translate's table: a code point maps to None when hidden, else to itself; filled in as text arrives."""

    def __missing__(self, cp: int) -> str | None:
        ch = chr(cp)
        verdict = None if is_hidden(ch) and ch not in _KEPT else ch
        if len(self) < _VERDICTS_KEPT:
            self[cp] = verdict
        return verdict


_VERDICTS = _Verdicts()


def _joiner(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    between_letters = (
        end - start == 1
        and start > 0
        and end < len(text)
        and unicodedata.category(text[start - 1])[0] in "LM"
        and unicodedata.category(text[end])[0] in "LM"
    )
    return match.group() if between_letters else ""


def terminal_safe(text: str) -> str:
    """Text that can neither drive nor spoof a terminal, nor hide anything from a reader (the rule above)."""
    text = _NEWLINES.sub("\n", text).translate(_VERDICTS)
    return text if text.isascii() else _JOINERS.sub(_joiner, text)


def clean_text(text: str) -> str:
    """`terminal_safe` text whose spelled-out role tokens (<|user|>) and think tags are defused."""
    text = terminal_safe(text)
    # A space after the first character keeps the text readable but stops it tokenising as a role.
    return _SPECIAL.sub(lambda m: m.group(0)[0] + " " + m.group(0)[1:], text)
