"""Reading a long page: the lead, an outline, and the passages that matter to what the model is looking for."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

from rumination.urls import URL_PATTERN

# A page over its token budget is split into passages (paragraphs; a long one at sentence ends). The model is shown
# the passages of the page's lead, an outline of its section headings, then the passages that BM25 ranks highest for
# the question, the latest search query and the thinking the model wrote before this click or open (with the page's
# headings as each passage's context), then the rest in page order while room is left: all in page order, with a
# marker wherever text was left out. A page read again shows what it has not shown yet, ranked the same way.
MAX_PASSAGE_CHARS = 1200  # at most; a small budget gets passages of half as many characters as it has tokens
MIN_PASSAGE_CHARS = 80
LEAD_SHARE = 0.12  # of the budget, for the page's opening passages
OUTLINE_SHARE = 0.08  # of the budget, for the headings
SECTION_CHARS = 60  # of a section's name in a marker
CONTINUED = "[continued: the parts of this page not shown before]"
THINKING_CHARS = 1500  # the end of the thinking, where the model says what it will look for
BM25_K1, BM25_B = 1.2, 0.75
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_WORDS = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+", re.UNICODE)
_STOP_WORDS = """a an and are as at be by for from has have i in is it its of on or that the this to was were what when
where which who will with let me my we should need find look about more page search open click see now also
http https www com org net html htm"""
_STOP = frozenset(_STOP_WORDS.split())

# The longest prefix of a text within a token budget, and the text's token count (tokens.truncate_tokens).
Truncator = Callable[[str, int], tuple[str, int]]
_ALL = 1 << 40  # a budget no text reaches: the truncator then counts it whole


@dataclass(frozen=True)
class Passage:
    """A span of the page's text, with the heading path it sits under."""

    start: int
    end: int
    section: str
    heading: bool


@dataclass
class Cut:
    """What to show of a page, and what it covers."""

    text: str
    shown: set[int] = field(default_factory=set)  # indexes of the passages shown this time
    spans: list[tuple[int, int]] = field(default_factory=list)  # their places in the page's text, in order
    total_tokens: int = 0  # the page's size, about
    kept_tokens: int = 0
    cut: bool = False  # something was left out
    continued: bool = False  # a read again: only passages not shown before
    left: int = 0  # passages still unseen after this


def split(text: str, size: int = MAX_PASSAGE_CHARS) -> list[Passage]:
    """Paragraphs of `text` (one over `size` characters cut at sentence ends), with their heading paths and headings."""
    passages: list[Passage] = []
    path: list[tuple[int, str]] = []
    for match in re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*", text):
        block, start = match.group(), match.start()
        heading = HEADING.match(block) if "\n" not in block and len(block) <= 300 else None
        if heading:
            level = len(heading.group(1))
            path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, heading.group(2))]
        section = " › ".join(name for _, name in path)
        if heading or len(block) <= size:
            passages.append(Passage(start, match.end(), section, bool(heading)))
            continue
        for piece_start, piece_end in _pieces(block, size):
            passages.append(Passage(start + piece_start, start + piece_end, section, False))
    return passages


def passage_size(max_tokens: int) -> int:
    """The longest passage, in characters, for a budget of `max_tokens`."""
    return max(MIN_PASSAGE_CHARS, min(MAX_PASSAGE_CHARS, max_tokens // 2))


def _pieces(block: str, size: int) -> list[tuple[int, int]]:
    """A long block in pieces of at most `size` characters, cut at sentence ends (else spaces) where it can be."""
    pieces, start = [], 0
    while len(block) - start > size:
        window = block[start : start + size]
        ends = [m.start() for m in _SENTENCE_END.finditer(window) if m.start() > size // 3]
        space = window.rfind(" ")
        cut = ends[-1] if ends else (space if space > size // 3 else len(window))
        pieces.append((start, start + cut))
        start += cut
        while start < len(block) and block[start].isspace():
            start += 1
    if start < len(block):
        pieces.append((start, len(block)))
    return pieces


def terms(text: str) -> list[str]:
    """Lower-cased words (each CJK character one; other single characters and stop words left out)."""
    return [w for w in _WORDS.findall(text.lower()) if w not in _STOP and (len(w) > 1 or w > "\u3000")]


def query_terms(question: str, search: str, thinking: str) -> Counter[str]:
    """What the model is looking for (the URLs it names are where, not what): each source counts once per term."""
    weights: Counter[str] = Counter()
    for source in (question, search, thinking[-THINKING_CHARS:]):
        weights.update(set(terms(URL_PATTERN.sub(" ", source))))
    return weights


def scores(text: str, passages: Sequence[Passage], query: Counter[str]) -> list[float]:
    """BM25 of each passage (its words and its section's) for the weighted query terms."""
    docs = [Counter(terms(text[p.start : p.end]) + terms(p.section)) for p in passages]
    if not docs or not query:
        return [0.0] * len(docs)
    average = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    frequency = Counter(term for d in docs for term in d if term in query)
    n = len(docs)
    idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
    result = []
    for doc in docs:
        length, score = sum(doc.values()), 0.0
        for term, weight in query.items():
            tf = doc.get(term, 0)
            if tf:
                norm = BM25_K1 * (1 - BM25_B + BM25_B * length / average)
                score += weight * idf[term] * tf * (BM25_K1 + 1) / (tf + norm)
        result.append(score)
    return result


def cut(text: str, max_tokens: int, truncate: Truncator, query: Counter[str], seen: Collection[int] = ()) -> Cut:
    """What of `text` to show within `max_tokens`: all of it if it fits, else the lead, outline and best passages.

    `seen` holds the passages shown by earlier reads: a read again shows only the others (`continued`), and
    nothing (an empty text) once every passage has been shown.
    """
    passages = split(text, passage_size(max_tokens))
    head, total = truncate(text, max_tokens)
    if not seen and head == text:
        return Cut(text, set(range(len(passages))), [(0, len(text))], total, total)
    unseen = [i for i in range(len(passages)) if i not in seen]
    if not unseen:
        return Cut("", total_tokens=total, continued=True)

    def count(piece: str) -> int:
        return truncate(piece, _ALL)[1]

    chosen, outline = _choose(text, passages, unseen, max_tokens, count, query, continued=bool(seen))
    while True:
        rendered = _render(text, passages, chosen, outline, continued=bool(seen))
        kept = count(rendered)
        if kept <= max_tokens or not chosen:
            break
        chosen = chosen[:-1]  # the last chosen is the least wanted: markers took more room than kept for them
    if not chosen:  # a budget too small for any passage whole: the head of the first one unseen, as a plain cut
        return _head(text, passages, unseen, max_tokens, truncate, count, total, bool(seen))
    order = sorted(chosen)
    return Cut(
        rendered,
        set(order),
        [(passages[i].start, passages[i].end) for i in order],
        total,
        kept,
        cut=True,
        continued=bool(seen),
        left=len(unseen) - len(order),
    )


def _head(
    text: str,
    passages: Sequence[Passage],
    unseen: list[int],
    max_tokens: int,
    truncate: Truncator,
    count: Callable[[str], int],
    total: int,
    continued: bool,
) -> Cut:
    """As much of the first unseen passage as fits, with the notes that fit too (the gap's first, then the header)."""
    first = passages[unseen[0]]
    notes = [CONTINUED if continued else "", _marker(text, passages[unseen[0] :])]
    for drop in (None, 1, 0):
        if drop is not None:
            notes[drop] = ""
        room = max_tokens - sum(count(note) + 1 for note in notes if note)
        if room >= min(8, max_tokens):
            break
    shown = truncate(text[first.start : first.end], max(room, 0))[0]
    while True:
        rendered = "\n\n".join(part for part in (notes[0], shown, notes[1]) if part)
        over = count(rendered) - max_tokens
        if over <= 0 or not shown:
            break
        shown = truncate(shown, max(count(shown) - over, 0))[0]
    span = [(first.start, first.start + len(shown))] if shown else []
    return Cut(rendered, {unseen[0]}, span, total, count(rendered), True, continued, len(unseen) - 1)


def _choose(
    text: str,
    passages: Sequence[Passage],
    unseen: list[int],
    max_tokens: int,
    count: Callable[[str], int],
    query: Counter[str],
    continued: bool,
) -> tuple[list[int], str]:
    """The passages to show, most wanted first, and the outline; within the budget less room for markers."""
    outline = _outline(text, passages, int(max_tokens * OUTLINE_SHARE), count)
    longest = max(passages, key=lambda p: min(len(p.section), SECTION_CHARS))
    marker_tokens = count(_marker(text, [replace(longest, start=0, end=99_999)] * 999)) + 1  # the largest there is
    room = max_tokens - count(outline) - marker_tokens - (count(CONTINUED) + 1 if continued else 0)
    chosen: list[int] = []
    lead_room = int(max_tokens * LEAD_SHARE)
    if not continued:  # the page's opening: what it is and who wrote it
        for i in unseen:
            need = count(text[passages[i].start : passages[i].end]) + 1
            if need > min(room, lead_room) and chosen:
                break
            if need <= room:
                chosen.append(i)
                room -= need
                lead_room -= need
            if lead_room <= 0:
                break
    ranked = scores(text, passages, query)
    rest = sorted((i for i in unseen if i not in chosen), key=lambda i: (-ranked[i], i))
    taken = set(chosen)
    for i in rest:  # the wanted ones, best first, then the others in page order until one does not fit
        need = count(text[passages[i].start : passages[i].end]) + 1
        need += 0 if i - 1 in taken or i + 1 in taken else marker_tokens
        if need <= room:
            chosen.append(i)
            taken.add(i)
            room -= need
        elif ranked[i] <= 0:
            break
        if room < 8:
            break
    return chosen, outline


def _outline(text: str, passages: Sequence[Passage], max_tokens: int, count: Callable[[str], int]) -> str:
    """The page's section headings on one line, as many as fit."""
    names = [HEADING.match(text[p.start : p.end]) for p in passages if p.heading]
    headings = [m.group(2) for m in names if m]
    if len(headings) < 2:
        return ""
    line = ""
    for i, heading in enumerate(headings):
        candidate = f"{line} · {heading}" if line else heading
        if count(f"[Sections: {candidate}]") > max_tokens:
            line += f" · … {len(headings) - i} more"
            break
        line = candidate
    return f"[Sections: {line}]"


def _render(text: str, passages: Sequence[Passage], chosen: list[int], outline: str, continued: bool) -> str:
    """The chosen passages in page order, a marker for each gap, the outline after the lead."""
    order = sorted(chosen)
    parts: list[str] = []
    if continued:
        parts.append(CONTINUED)
    placed = False
    expected = 0
    for i in order:
        if i > expected:
            if not placed and outline:
                parts.append(outline)
                placed = True
            parts.append(_marker(text, passages[expected:i]))
        parts.append(text[passages[i].start : passages[i].end])
        expected = i + 1
    if not placed and outline:
        parts.append(outline)
    if expected < len(passages):
        parts.append(_marker(text, passages[expected:]))
    return "\n\n".join(parts)


def _marker(text: str, gap: Sequence[Passage]) -> str:
    """What a gap left out: how much, and under which sections (the first named)."""
    chars = sum(p.end - p.start for p in gap)
    sections = list(dict.fromkeys(p.section for p in gap if p.section))
    where = ""
    if sections:
        name = sections[0] if len(sections[0]) <= SECTION_CHARS else sections[0][: SECTION_CHARS - 1] + "…"
        more = len(sections) - 1
        where = f' in "{name}"' + (f" and {more} more section{'' if more == 1 else 's'}" if more else "")
    return f"[… {len(gap):,} passage{'' if len(gap) == 1 else 's'} (about {chars:,} characters) left out{where}]"
