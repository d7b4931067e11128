"""Check a report's citations against the pages the run actually read, and what the cited pages say.

Every form the model writes is resolved to a page read (a `Source`), or to nothing (unverified):

- GLM marks `【n†title†url】`, `【n†title】`, `【n†L1-L5】`, `【n】`: a URL inside, else a title equal to a page's
  title, else page id n;
- numbers `[n]`, `[n, m]`, `[n-m]` and footnotes `[^n]`: through the report's own definition of n (a reference-list
  line `[n] Title https://…`, `[n]: https://…`, `n. [Title](https://…)`, `[^n]: https://…`), else id n;
- Markdown links, autolinks and bare http(s) or local:// URLs: by URL (`urls.url_key`, the page's URL or final URL).

A definition line is no citation of its own, but the URL of a definition that the text never cites is checked like
a link. Text in code spans and code blocks is never read as a citation.

A verified citation is then checked against the text of its page (what the run showed the model of it: the
observation of every step that read it): the numbers, dates and quoted phrases of its claim (the sentence up to the
citation, from the previous citation in that sentence) must all be there. Dates are checked by their numbers (day
and year), not their format: "March 3, 1923" is supported by "3 March 1923" and by "1923-03-03".

Pure functions, no network; every pattern runs in linear time on hostile text.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from rumination.results import Citation, CitationForm, Source, Step
from rumination.urls import LINK_TARGET, URL_END, URL_PATTERN, url_key

# ---------------------------------------------------------------- patterns (each linear: no nested ambiguity)

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})([^\n]*)$", re.M)
_BACKTICKS = re.compile(r"`+")
_BLANK_LINE = re.compile(r"\n[ \t]*(?=\n)")
_MARK = re.compile(r"【[ \t]*([0-9]{1,6})[ \t]*(?:†([^【】\n]{0,1000}))?】")
# A Markdown link or image: text without brackets, then a destination (in <>, or bare with balanced parentheses, as
# Wikipedia's are) and an optional title. Groups: "!" of an image, text, <destination>, bare destination.
MARKDOWN_LINK = re.compile(
    r"(!?)\[([^\[\]\n]{0,1000})\]\([ \t]*(?:<([^<>\n]{0,4000})>|((?:[^\s()<>]|\([^\s()<>]{0,500}\)){0,4000}))"
    r"(?:[ \t]+(?:\"[^\"\n]{0,500}\"|'[^'\n]{0,500}'|\([^()\n]{0,500}\)))?[ \t]*\)"
)
_AUTOLINK = re.compile(r"<((?:https?|local)://[^\s<>]{1,4000})>")
_FOOTNOTE = re.compile(r"\[\^([^\[\]\s^]{1,40})\]")
_NUMBERS = re.compile(r"\[([0-9]{1,4}(?:[ \t]*[,;\-–—][ \t]*[0-9]{1,4}){0,50})\]")
_NUMBER_PARTS = re.compile(r"[0-9]+|[-–—]")
_URL_TAIL = URL_END + "!?*_~"  # the end of a URL written in a report: sentence punctuation, ! ?, emphasis
_DEFINITION = re.compile(r"[ \t]{0,3}(?:[-*+][ \t]+)?(?:\[(\^?)([^\[\]\s^]{1,40})\](:?)|([0-9]{1,4})[.)])(?=[ \t]|$)")
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s)|[。！？]")
_ADJACENT = re.compile(r"[ \t,;]*")
_ORDINAL = re.compile(r"^[ \t]*(?:>[ \t]*)*(?:[-*+][ \t]+)?(?:#{1,6}[ \t]+)?[0-9]{1,3}[.)](?=[ \t])", re.M)
# A number: digits grouped by comma, apostrophe or a space, or plain; a decimal part; never inside a Latin word.
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(?:[0-9]{1,3}(?:[,' ][0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?")
_QUOTES = (
    re.compile(r'"([^"\n]{1,300})"'),
    re.compile(r"“([^“”\n]{1,300})”"),
    re.compile(r"«([^«»\n]{1,300})»"),
    re.compile(r"「([^「」\n]{1,300})」"),
    re.compile(r"『([^『』\n]{1,300})』"),
)
# Full-width digits and the spaces that group digits, as ASCII (one character for one: offsets hold).
_DIGITS = str.maketrans({**{chr(0xFF10 + d): str(d) for d in range(10)}, "\u00a0": " ", "\u202f": " ", "\u2009": " "})
_ELLIPSIS = re.compile(r"\[?\.\.\.\]?")
_GROUP_SEPARATOR = re.compile(r"[,' ]")
_GROUPING = re.compile(r"(?<=[0-9])[,' ](?=[0-9]{3}(?![0-9]))")
_SPACES = re.compile(r"\s+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_UNIFY = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛′`", "'"),
        **dict.fromkeys("“”„‟″«»「」『』", '"'),
        **dict.fromkeys("‐‑‒–—―−⁃", "-"),
        **dict.fromkeys("*_", None),  # Markdown emphasis, on either side
        "【": "[",  # page text has the result markup defused (formatting.defuse_markup)
        "】": "]",
        "†": "+",
    }
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        (
            *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"),
            *("twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"),
        )
    )
}
_WORD = re.compile(r"[a-z]+")
_REFERENCE_HEADINGS = re.compile(
    r"(?:[0-9]{1,2}[.)]?\s*)?(?:references?|sources?(?:\s+(?:cited|read|used|consulted))?|bibliography|citations?"
    r"|works\s+cited|notes|footnotes|links|further\s+reading|参考(?:文献|资料|来源|链接)?|引用(?:来源|文献)?"
    r"|(?:信息|资料|数据)?来源|文献)\s*[:：]?"
)
_MAX_CLAIM = 2000  # characters of text before a citation that can be its claim
_STEPS_BACK = 4  # empty sentences (a full stop, blank lines) passed over to find the one a citation follows
_MAX_RANGE = 20  # [3-9] cites seven pages; a wider range cites its two ends


class _Spanned(Protocol):
    start: int
    end: int


_S = TypeVar("_S", bound=_Spanned)


@dataclass
class _Found:
    """A citation while it is resolved: one target of a span (a span like [1, 2] has several)."""

    start: int
    end: int
    form: CitationForm
    target: str
    source_id: int | None = None
    label: str = ""  # a link's text, which is part of its claim
    checked: bool = True  # False for a definition's own URL: it has no claim
    missing: list[str] = field(default_factory=list)


@dataclass
class _Definition:
    """The report's own definition of a reference label: its URL (or title) and where that URL is written."""

    url: str | None
    url_span: tuple[int, int] | None
    url_form: CitationForm
    text: str
    used: bool = False


# ---------------------------------------------------------------- public


def check_citations(report: str, sources: list[Source], steps: list[Step]) -> list[Citation]:
    """Every citation in `report`, in order, resolved to the page read that it names and checked against its text."""
    pages = _Pages(sources)
    code = code_regions(report)
    definitions, taken = _definitions(report, code)
    found = _scan(report, code + taken, definitions, pages)
    for definition in definitions.values():
        if definition.url is not None and definition.url_span is not None and not definition.used:
            start, end = definition.url_span
            found.append(
                _Found(start, end, definition.url_form, definition.url, pages.by_url(definition.url), checked=False)
            )
    found.sort(key=lambda f: (f.start, f.end))
    _check_claims(report, found, code, _page_texts(steps))
    return [
        Citation(
            text=report[f.start : f.end],
            start=f.start,
            end=f.end,
            form=f.form,
            target=f.target,
            source_id=f.source_id,
            missing=f.missing,
        )
        for f in found
    ]


def mark_cited(sources: list[Source], citations: list[Citation]) -> list[Source]:
    """Copies of `sources` with `cited` set where a citation points at the page."""
    cited = {c.source_id for c in citations if c.source_id is not None}
    return [s.model_copy(update={"cited": s.id in cited}) for s in sources]


def unverified_urls(citations: list[Citation]) -> list[str]:
    """The distinct URLs the report cites that the run never read."""
    return sorted({c.target for c in citations if not c.verified and URL_PATTERN.match(c.target)})


def citation_groups(report: str, spans: Sequence[_S]) -> list[list[_S]]:
    """Citations written side by side (`[1][2]`, `[1], [2]`, `【1†a】【2†b】`, one `[1, 2]`): they share one claim.

    `spans` are in order; a group is a run with nothing but spaces and commas between its members.
    """
    groups: list[list[_S]] = []
    for item in spans:
        last = groups[-1][-1] if groups else None
        if last is not None and _adjacent(report, last.end, item.start):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def code_regions(text: str) -> list[tuple[int, int]]:
    """Spans of fenced code blocks and inline code spans (CommonMark's pairing of backtick runs), in order."""
    regions: list[tuple[int, int]] = []
    outside = 0
    fence: re.Match[str] | None = None
    for m in _FENCE.finditer(text):
        if fence is None:
            if m.group(1)[0] == "`" and "`" in m.group(2):
                continue  # an info string with a backtick: not a fence
            regions += _code_spans(text, outside, m.start())
            fence = m
        elif m.group(1)[0] == fence.group(1)[0] and len(m.group(1)) >= len(fence.group(1)) and not m.group(2).strip():
            regions.append((fence.start(), m.end()))
            outside, fence = m.end(), None
    if fence is not None:
        regions.append((fence.start(), len(text)))
    else:
        regions += _code_spans(text, outside, len(text))
    return regions


# ---------------------------------------------------------------- pages read


class _Pages:
    """The pages read, looked up by id, URL and title."""

    def __init__(self, sources: list[Source]):
        self.ids = {s.id for s in sources}
        self.urls: dict[str, int] = {}
        self.titles: dict[str, int] = {}
        for s in sorted(sources, key=lambda s: s.id):
            for url in (s.url, s.final_url):
                self.urls.setdefault(url_key(url), s.id)
            self.titles.setdefault(_title_key(s.title), s.id)

    def by_url(self, url: str) -> int | None:
        """The page read at `url` (its address or where it redirected)."""
        return self.urls.get(url_key(url))

    def by_title(self, title: str) -> int | None:
        """The page read whose title is `title`, ignoring case and spacing."""
        key = _title_key(title)
        return self.titles.get(key) if key else None

    def by_id(self, label: str) -> int | None:
        """The page read with id `label`."""
        n = int(label) if label.isascii() and label.isdigit() and len(label) <= 9 else None
        return n if n in self.ids else None


def _title_key(title: str) -> str:
    """A title compared without case or spacing."""
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def _page_texts(steps: list[Step]) -> dict[int, str]:
    """What the run showed the model of each page: every observation that read it."""
    texts: dict[int, list[str]] = {}
    for step in steps:
        if step.source_id is not None:
            texts.setdefault(step.source_id, []).append(step.observation)
    return {sid: "\n".join(parts) for sid, parts in texts.items()}


# ---------------------------------------------------------------- code


def _code_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Inline code spans in text[start:end]: a backtick run closed by the next run as long, in the same paragraph."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text, start, end)]
    if not runs:
        return []
    blanks = [m.start() for m in _BLANK_LINE.finditer(text, start, end)]
    keys = [(bisect.bisect(blanks, s), e - s) for s, e in runs]
    following: list[int | None] = [None] * len(runs)
    seen: dict[tuple[int, int], int] = {}
    for i in range(len(runs) - 1, -1, -1):
        following[i] = seen.get(keys[i])
        seen[keys[i]] = i
    spans, i = [], 0
    while i < len(runs):
        j = following[i]
        if j is None:
            i += 1
        else:
            spans.append((runs[i][0], runs[j][1]))
            i = j + 1
    return spans


# ---------------------------------------------------------------- the report's own reference list


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line) for each line, without its newline."""
    offset = 0
    for line in text.split("\n"):
        yield offset, line
        offset += len(line) + 1


def _heading(line: str) -> tuple[int, str] | None:
    """(level, text) of a heading line: `## X`, or a line that is all bold or ends with a colon (level 7)."""
    s = line.strip()
    if s.startswith("#"):
        level = len(s) - len(s.lstrip("#"))
        if level <= 6 and (len(s) == level or s[level] in " \t"):
            return level, s[level:].strip().rstrip("#").strip()
        return None
    if len(s) > 4 and s.startswith(("**", "__")) and s.rstrip(":：").endswith(("**", "__")):
        return 7, s.strip("*_:： \t")
    if s.endswith((":", "：")) and len(s) < 60:
        return 7, s
    return None


def _reference_section(text: str, lines: list[tuple[int, str]]) -> int:
    """Where the report's reference list begins (its heading, else a trailing run of reference lines); else -1."""
    start, level = -1, 0
    for offset, line in lines:
        heading = _heading(line)
        if heading is None:
            continue
        if start >= 0 and heading[0] <= level:
            start = -1  # a section after the reference list: it is not at the end
        name = heading[1].strip("*_ \t").casefold()
        if start < 0 and _REFERENCE_HEADINGS.fullmatch(name):
            start, level = offset, heading[0]
    if start >= 0:
        return start
    trailing = -1
    for offset, line in reversed(lines):
        if not line.strip():
            continue
        if not (_DEFINITION.match(line) and _first_url(text, offset, offset + len(line))):
            break
        trailing = offset
    return trailing


def _definitions(report: str, code: list[tuple[int, int]]) -> tuple[dict[str, _Definition], list[tuple[int, int]]]:
    """The report's own reference definitions by label ("3", "^3", "^note"), and the spans they take from the text."""
    lines = list(_lines(report))
    section = _reference_section(report, lines)
    code_starts = [s for s, _ in code]
    definitions: dict[str, _Definition] = {}
    taken: list[tuple[int, int]] = []
    for offset, line in lines:
        m = _DEFINITION.match(line)
        if m is None or in_spans(code, code_starts, offset):
            continue
        caret, label, colon, ordinal = m.groups()
        markdown = bool(caret or colon)  # [^x]: and [x]: define anywhere; [n] and n. only in the reference list
        if not markdown and (section < 0 or offset < section):
            continue
        if not markdown and not (ordinal or label.isdigit()):
            continue
        taken.append((offset + m.start(), offset + m.end()))  # the label is no citation
        key = (("^" if caret else "") + (label or ordinal)).casefold()
        if key in definitions:
            continue  # the first definition of a label counts, as in Markdown; a later one's URL is a link
        end = offset + len(line)
        url = _first_url(report, offset + m.end(), end)
        rest = report[offset + m.end() : end].strip()
        if url is None:
            definitions[key] = _Definition(None, None, "url", rest)
        else:
            definitions[key] = _Definition(url[2], (url[0], url[1]), url[3], rest)
            taken.append((url[0], url[1]))
    return definitions, taken


def _first_url(text: str, start: int, end: int) -> tuple[int, int, str, CitationForm] | None:
    """(start, end, URL, form) of the first link, autolink or bare URL in text[start:end]."""
    best: tuple[int, int, str, CitationForm] | None = None
    for m in MARKDOWN_LINK.finditer(text, start, end):
        target = _link_target(m)
        if target:
            best = (m.start(), m.end(), target, "link")
            break
    auto = _AUTOLINK.search(text, start, end)
    if auto and (best is None or auto.start() < best[0]):
        best = (auto.start(), auto.end(), auto.group(1), "url")
    bare = URL_PATTERN.search(text, start, end)
    if bare and (best is None or bare.start() < best[0]):
        s, e = _bare_url(bare)
        if e > s:
            best = (s, e, text[s:e], "url")
    return best


# ---------------------------------------------------------------- finding citations


def _scan(
    report: str, taken: list[tuple[int, int]], definitions: dict[str, _Definition], pages: _Pages
) -> list[_Found]:
    """Every citation outside `taken`, form by form: marks, links, autolinks, footnotes, numbers, bare URLs."""
    found: list[_Found] = []
    occupied = _merge(taken)
    for finder in (_marks, _links, _autolinks, _footnotes, _numbers, _bare_urls):
        # A finder resolves what it finds (and marks the definitions it uses) only outside `occupied`.
        new = list(finder(report, _Free(occupied), definitions, pages))
        found += new
        occupied = _merge(occupied + [(f.start, f.end) for f in new])
    return found


class _Free:
    """Whether a span is clear of the citations (and code, and definition labels) found so far."""

    def __init__(self, occupied: list[tuple[int, int]]):
        self.occupied = occupied

    def __call__(self, start: int, end: int) -> bool:
        return not _overlaps(self.occupied, start, end)

    def match(self, m: re.Match[str]) -> bool:
        """Whether a match is clear."""
        return self(m.start(), m.end())


def _marks(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """【n†title†url】 by its URL, else 【n†title】 by its title, else 【n】 by id."""
    for m in filter(free.match, _MARK.finditer(report)):
        number, inside = m.group(1), m.group(2) or ""
        parts = [p.strip() for p in inside.split("†")]
        urls = [u for p in parts for u in _urls_in(p)]
        if urls:
            yield _Found(m.start(), m.end(), "mark", urls[0], pages.by_url(urls[0]))
            continue
        titled = next(((p, sid) for p in parts if (sid := pages.by_title(p)) is not None), None)
        if titled:
            yield _Found(m.start(), m.end(), "mark", titled[0], titled[1])
        else:
            yield _Found(m.start(), m.end(), "mark", number.lstrip("0") or "0", pages.by_id(number))


def _links(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """[text](url) and ![alt](url) to a web page or local document, by URL."""
    for m in filter(free.match, MARKDOWN_LINK.finditer(report)):
        target = _link_target(m)
        if target:
            yield _Found(m.start(), m.end(), "link", target, pages.by_url(target), label=m.group(2))


def _autolinks(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """<https://…>, by URL."""
    for m in filter(free.match, _AUTOLINK.finditer(report)):
        yield _Found(m.start(), m.end(), "url", m.group(1), pages.by_url(m.group(1)))


def _footnotes(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """[^n], through its definition, else by id."""
    for m in filter(free.match, _FOOTNOTE.finditer(report)):
        label = m.group(1)
        target, sid = _resolve_label(label, ("^" + label, label), definitions, pages)
        yield _Found(m.start(), m.end(), "footnote", target, sid)


def _numbers(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """[n], [n, m], [n-m]: each number through its definition, else by id."""
    for m in filter(free.match, _NUMBERS.finditer(report)):
        for n in _expand(m.group(1)):
            target, sid = _resolve_label(n, (n, "^" + n), definitions, pages)
            yield _Found(m.start(), m.end(), "number", target, sid)


def _bare_urls(report: str, free: _Free, definitions: dict[str, _Definition], pages: _Pages) -> Iterator[_Found]:
    """http(s):// and local:// URLs written out, by URL."""
    for m in URL_PATTERN.finditer(report):
        start, end = _bare_url(m)
        url = report[start:end]
        if len(url) > url.index("://") + 3 and free(start, end):
            yield _Found(start, end, "url", url, pages.by_url(url))


def _resolve_label(
    label: str, keys: tuple[str, ...], definitions: dict[str, _Definition], pages: _Pages
) -> tuple[str, int | None]:
    """(target, page id) of a cited label: through the report's definition of it, else as a page id."""
    definition = next((d for k in keys if (d := definitions.get(k.casefold())) is not None), None)
    if definition is None:
        number = (label.lstrip("0") or "0") if label.isdigit() else label
        return number, pages.by_id(label)
    definition.used = True
    if definition.url is not None:
        return definition.url, pages.by_url(definition.url)
    title = definition.text.strip(" \t*_\"'“”.,;:")
    sid = pages.by_title(title)
    return (title or label)[:200], sid


def _expand(group: str) -> list[str]:
    """The numbers of `1, 3-5` in order (each once): 1, 3, 4, 5."""
    parts = _NUMBER_PARTS.findall(group)
    numbers: list[str] = []
    for i, part in enumerate(parts):
        if part.isdigit():
            if i >= 2 and not parts[i - 1].isdigit() and parts[i - 2].isdigit():
                lo, hi = int(parts[i - 2]), int(part)
                if lo < hi <= lo + _MAX_RANGE:
                    numbers += [str(n) for n in range(lo + 1, hi)]
            numbers.append(str(int(part)))
    return list(dict.fromkeys(numbers))


def link_destination(m: re.Match[str]) -> str:
    """A MARKDOWN_LINK match's destination, whatever it is."""
    return (m.group(3) if m.group(3) is not None else m.group(4) or "").strip()


def _link_target(m: re.Match[str]) -> str | None:
    """A Markdown link's destination when it is a web page or local document."""
    target = link_destination(m)
    return target if URL_PATTERN.match(target) else None


def _bare_url(m: re.Match[str]) -> tuple[int, int]:
    """The span of a URL written in text, less the punctuation that ends its sentence."""
    return m.start(), m.start() + len(m.group().rstrip(_URL_TAIL))


def _urls_in(text: str) -> list[str]:
    """The URLs written in `text`."""
    spans = (_bare_url(m) for m in URL_PATTERN.finditer(text))
    return [text[s:e] for s, e in spans if e > s]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping spans covering `spans`."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) meets any of the sorted, disjoint `spans`."""
    i = bisect.bisect_right(spans, start, key=_first) - 1
    if i >= 0 and spans[i][1] > start:
        return True
    return i + 1 < len(spans) and spans[i + 1][0] < end


def _first(span: tuple[int, int]) -> int:
    """A span's start (a bisect key)."""
    return span[0]


def in_spans(spans: list[tuple[int, int]], starts: list[int], pos: int) -> bool:
    """Whether `pos` lies in one of the sorted, disjoint `spans` (whose starts are `starts`)."""
    i = bisect.bisect_right(starts, pos) - 1
    return i >= 0 and spans[i][0] <= pos < spans[i][1]


def _adjacent(report: str, end: int, next_start: int) -> bool:
    """Whether a citation at `next_start` sits right after one ending at `end`: nothing but spaces, commas between."""
    return next_start <= end or _ADJACENT.fullmatch(report, end, next_start) is not None


# ---------------------------------------------------------------- claims


def _check_claims(report: str, found: list[_Found], code: list[tuple[int, int]], texts: dict[int, str]) -> None:
    """Set `missing` on each verified citation: its claim's numbers, dates and quotes its pages' text lacks."""
    sentence_starts = [0] + [m.end() for m in _SENTENCE_END.finditer(report)]
    blanked = [(f.start, f.end) for f in found] + code
    blanked += [m.span() for pattern in (URL_PATTERN, LINK_TARGET, _ORDINAL) for m in pattern.finditer(report)]
    spans = _merge(blanked)
    pages: dict[int, _PageText] = {}
    previous_end = 0
    for group in citation_groups(report, found):
        first = group[0]
        checked = [f for f in group if f.checked and f.source_id is not None and f.source_id in texts]
        if checked:
            claim = _claim(report, sentence_starts, spans, previous_end, first)
            missing = _missing(claim, [_page(pages, texts, f.source_id) for f in checked if f.source_id is not None])
            for f in checked:
                f.missing = list(missing)
        previous_end = max(f.end for f in group)


def _page(cache: dict[int, _PageText], texts: dict[int, str], sid: int) -> _PageText:
    """Page `sid`'s text, normalised once."""
    if sid not in cache:
        cache[sid] = _PageText(texts[sid])
    return cache[sid]


def _claim(
    report: str, sentence_starts: list[int], spans: list[tuple[int, int]], previous_end: int, first: _Found
) -> str:
    """The text a citation vouches for: its sentence up to it (from a citation before it in that sentence).

    A citation after the sentence's full stop (`… in 1440. [1]`) vouches for the sentence before it.
    """
    i = bisect.bisect_right(sentence_starts, first.start) - 1
    start = max(sentence_starts[i], previous_end, first.start - _MAX_CLAIM)
    claim = _masked(report, spans, start, first.start)
    for _ in range(_STEPS_BACK):
        if any(ch.isalnum() for ch in claim) or i == 0 or sentence_starts[i] <= first.start - _MAX_CLAIM:
            break
        end, i = sentence_starts[i], i - 1
        claim = _masked(report, spans, max(sentence_starts[i], first.start - _MAX_CLAIM), end)
    if first.form == "link" and len(first.label.split()) >= 2:  # [the 1455 Bible](url) says something itself
        claim += " " + first.label
    return claim


def _masked(report: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """report[start:end] less the sorted, disjoint `spans` (citations, code, URLs, link targets, list ordinals)."""
    parts, pos = [], start
    i = max(bisect.bisect_left(spans, start, key=_first) - 1, 0)
    while i < len(spans) and spans[i][0] < end:
        s, e = spans[i]
        if e > pos:
            parts += [report[pos : max(s, pos)], " "]
            pos = e
        i += 1
    parts.append(report[pos:end])
    return "".join(parts)


@dataclass(frozen=True)
class _Item:
    """Something a claim states that its page must contain."""

    shown: str  # as the report wrote it
    number: str | None = None  # a number, normalised; its parts, when it was grouped by spaces
    parts: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()  # a quote, normalised, split at its ellipses


class _PageText:
    """A page's text, normalised once: for quotes, and the numbers it states."""

    def __init__(self, text: str):
        text = unicodedata.normalize("NFKC", text)
        self.numbers: set[str] = set()
        for written in set(_NUMBER.findall(text)):
            self.numbers.add(_number_value(written))
            if not written.isdigit():  # "page 12 345" may be two numbers: the parts count too
                self.numbers.update(_number_value(p) for p in _GROUP_SEPARATOR.split(written))
        self.numbers.update(_NUMBER_WORDS[w] for w in set(_WORD.findall(text.casefold())) if w in _NUMBER_WORDS)
        self.text = _normalise(text)

    def has(self, item: _Item) -> bool:
        """Whether the page states `item`."""
        if item.number is not None:
            return item.number in self.numbers or (bool(item.parts) and all(p in self.numbers for p in item.parts))
        return all(phrase in self.text for phrase in item.phrases)


def _missing(claim: str, pages: list[_PageText]) -> list[str]:
    """The items of `claim` that none of `pages` states (as written, each once)."""
    return [item.shown for item in _items(claim) if not any(page.has(item) for page in pages)]


def _items(claim: str) -> list[_Item]:
    """The quoted phrases of two or more words and the numbers (outside quotes) of `claim`, in order."""
    found: list[tuple[int, _Item]] = []
    quoted: list[tuple[int, int]] = []
    for pattern in _QUOTES:
        for m in pattern.finditer(claim):
            phrase = m.group(1).strip()
            if len(phrase.split()) >= 2 or len(_CJK.findall(phrase)) >= 2:
                fragments = tuple(f for f in (_fragment(p) for p in _ELLIPSIS.split(_normalise(phrase))) if f)
                if fragments:
                    found.append((m.start(), _Item(f'"{phrase}"', phrases=fragments)))
            quoted.append(m.span())
    quoted = _merge(quoted)
    digits = claim.translate(_DIGITS)  # same length: offsets hold
    for m in _NUMBER.finditer(digits):
        if not _overlaps(quoted, m.start(), m.end()):
            parts = tuple(_number_value(p) for p in m.group().split(" ")) if " " in m.group() else ()
            found.append((m.start(), _Item(m.group(), number=_number_value(m.group()), parts=parts)))
    items: dict[tuple[str | None, tuple[str, ...]], _Item] = {}
    for _, item in sorted(found, key=lambda f: f[0]):
        items.setdefault((item.number, item.phrases), item)
    return list(items.values())


def _fragment(text: str) -> str:
    """A piece of a quote without the punctuation around it; "" when no word is left."""
    text = text.strip(" .,;:!?'\"-")
    return text if any(ch.isalnum() for ch in text) else ""


def _number_value(written: str) -> str:
    """A number without its grouping, leading zeros or trailing decimal zeros: 1,234.50 → 1234.5."""
    if written.isdigit():
        return written.lstrip("0") or "0"
    whole, _, fraction = _GROUP_SEPARATOR.sub("", written).partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _normalise(text: str) -> str:
    """Text compared for quotes: NFKC, casefolded, quotes and dashes unified, no digit grouping, single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_UNIFY)
    return _SPACES.sub(" ", _GROUPING.sub("", text)).strip()
