"""The short answer inside a long Markdown research report, for exact match and F1.

The rules, tried in order (the first that finds something wins):

1. an explicit answer: a line labelled "Answer:", "Final answer:", "Short answer:", "答案：", "最终答案：",
   "简短回答：" ... (bold or not; the text after the label, else the next line), or the first sentence under
   a heading named that way ("## Answer", "## 答案");
2. a bolded phrase in the report's first paragraph (labels ending in a colon and long phrases skipped);
3. the first sentence of a summary or conclusion section ("Summary", "Conclusion", "TL;DR", "Key findings",
   "总结", "结论", "摘要", "概述" ...);
4. the first sentence of the first paragraph.

Headings, code blocks and tables are never answers; a line that is only bold text counts as a heading.
Citation markers ([1](url), [1], 【1†...】) and Markdown emphasis are removed from what is returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rumination.streaming import split_thinking

_ANSWER_WORDS = r"final answer|short answer|direct answer|the answer|answer|最终答案|简短回答|简要回答|简答|答案|回答"
_SUMMARY_WORDS = (
    r"summary|executive summary|conclusions?|tl;?\s*dr|bottom line|key findings?|in short|overview|"
    r"总结|结论|摘要|概述|概要|小结|要点|核心结论"
)
_ANSWER_LINE = re.compile(
    rf"^[\s>*_#-]*(?:\*\*|__)?\s*(?:{_ANSWER_WORDS})\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?\s*(.*)$", re.IGNORECASE
)
_NUMBERED = r"(?:[\d一二三四五六七八九十]+\s*[.)、．]?\s*)?"  # "5. Conclusion", "五、结论"
_ANSWER_HEADING = re.compile(rf"^{_NUMBERED}(?:{_ANSWER_WORDS})\W*$", re.IGNORECASE)
_SUMMARY_HEADING = re.compile(rf"^{_NUMBERED}(?:{_SUMMARY_WORDS})", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BOLD_LINE = re.compile(r"^\s*(?:\*\*|__)([^*_]+?)(?:\*\*|__)\s*[:：]?\s*$")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "u.s", "u.k", "no", "nos"}
    | {"approx", "inc", "ltd", "co", "corp", "fig", "al", "ca", "est", "dept", "gen", "gov"}
)
_MAX_BOLD_CHARS = 80


@dataclass
class _Section:
    """A heading (None before the first one) and the paragraphs under it."""

    heading: str | None
    paragraphs: list[str] = field(default_factory=list)


def short_answer(report: str) -> str:
    """The report's short answer by the rules above; "" for an empty report."""
    lines = _prose_lines(split_thinking(report)[1])
    sections = _sections(lines)
    paragraphs = [p for s in sections for p in s.paragraphs]
    found = (
        _answer_line(lines)
        or _under_heading(sections, _ANSWER_HEADING)
        or (_first_bold(paragraphs[0]) if paragraphs else None)
        or _under_heading(sections, _SUMMARY_HEADING)
        or (first_sentence(clean(paragraphs[0])) if paragraphs else None)
    )
    return found or ""


def _prose_lines(report: str) -> list[str]:
    """The report's lines with code blocks (fences included) blanked out."""
    lines, in_code = [], False
    for line in report.splitlines():
        fence = line.lstrip().startswith(("```", "~~~"))
        in_code = in_code != fence
        lines.append("" if in_code or fence else line)
    return lines


def _sections(lines: list[str]) -> list[_Section]:
    """The report as sections of paragraphs, without tables and rules."""
    sections = [_Section(None)]
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            sections[-1].paragraphs.append(" ".join(line.strip() for line in paragraph))
            paragraph.clear()

    for line in lines:
        heading = _HEADING.match(line) or _BOLD_LINE.match(line)
        if heading or not line.strip() or line.lstrip().startswith("|") or _RULE.match(line):
            end_paragraph()
            if heading:
                sections.append(_Section(clean(heading.group(1))))
            continue
        paragraph.append(line)
    end_paragraph()
    return sections


def _answer_line(lines: list[str]) -> str | None:
    """The text after an "Answer:" label, or the next non-empty line when the label ends its line."""
    for i, line in enumerate(lines):
        match = _ANSWER_LINE.match(line)
        if not match:
            continue
        rest = clean(match.group(1))
        if not rest:
            rest = next((clean(later) for later in lines[i + 1 :] if later.strip()), "")
        if rest:
            return first_sentence(rest)
    return None


def _under_heading(sections: list[_Section], pattern: re.Pattern[str]) -> str | None:
    """The first sentence of the first paragraph under a heading that matches `pattern`."""
    for section in sections:
        if section.heading is not None and pattern.match(section.heading) and section.paragraphs:
            return first_sentence(clean(section.paragraphs[0])) or None
    return None


def _first_bold(paragraph: str) -> str | None:
    """The first bolded phrase that reads as an answer: not a label ending in a colon, not a long passage."""
    for match in _BOLD.finditer(paragraph):
        phrase = clean(match.group(1) or match.group(2))
        if phrase and not phrase.endswith((":", "：")) and len(phrase) <= _MAX_BOLD_CHARS:
            return phrase
    return None


def clean(text: str) -> str:
    """Markdown text as plain words: no citation markers, link targets, emphasis, list or quote markers."""
    text = re.sub(r"\[\^?\d+\]\([^)]*\)", "", text)  # [1](url): a citation
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url): the text
    text = re.sub(r"【[^】]*】|\[\^?\d+(?:\s*[,，-]\s*\^?\d+)*\]", "", text)  # 【1†title†url】, [1], [1, 2], [^1]
    text = re.sub(r"\*\*|__|(?<!\w)[*_]|[*_](?!\w)|`", "", text)
    text = re.sub(r"^\s*(?:>\s*)*(?:[-*+]\s+|\d+[.)]\s+)?", "", text)
    text = re.sub(r"\s+([.,;:!?。，；：！？、])", r"\1", text)  # the space a removed citation left
    return " ".join(text.split()).strip()


def first_sentence(text: str) -> str:
    """Text up to the first sentence end: 。！？ anywhere, or . ! ? before a space (not after an abbreviation)."""
    for match in re.finditer(r"[。！？]|[.!?](?=\s|$)", text):
        end = match.end()
        if match.group() == ".":
            before = text[: match.start()].split()
            word = before[-1].lower().lstrip("(\"'") if before else ""
            following = text[end:].lstrip()
            if (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS or following[:1].islower():
                continue
        return text[:end].strip()
    return text.strip()
