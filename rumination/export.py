"""A result as a document: Markdown, one self-contained HTML file, or JSON; with its citations flagged and checked.

Both documents flag each unverified or unsupported citation right after it (` [unverified]`, ` [unsupported: 1923,
"movable type"]`) and end with the pages cited, numbered by their source id (the id of the trace, `show` and the TUI),
then the pages read but not cited. The report's thinking never appears. Nothing in a document loads anything: images
become text, raw HTML is shown as text, and only http(s) links stay links (the HTML file's Content-Security-Policy
allows nothing but its own inline style).
"""

from __future__ import annotations

import bisect
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from rumination.citations import MARKDOWN_LINK, citation_groups, code_regions, in_spans, link_destination
from rumination.results import Citation, ResearchResult, Source

if TYPE_CHECKING:
    from markdown_it.token import Token

Format = Literal["md", "html", "json"]
_Span = tuple[int, int]
_Replacement = tuple[int, int, str]  # start, end, new text

_THINK_TAG = re.compile(r"</?think\s*>", re.I)
_THINK_CLOSE = re.compile(r"</think\s*>", re.I)
_BANG = re.compile(r"!\[")  # what starts any image, reference-style ones included
# A link reference definition ([x]: target); one whose target has a scheme other than _MD_SCHEMES is defused.
_DEFINITION = re.compile(r"^[ \t]{0,3}(\[)[^\[\]\n]{1,999}\]:[ \t]*<?([A-Za-z][A-Za-z0-9+.-]{0,31}):", re.M)
# "<" that may open raw HTML, or an autolink; an http(s), local:// or mailto autolink stays as it is.
_ANGLE = re.compile(r"<(?=[A-Za-z/!?])")
_SAFE_AUTOLINK = re.compile(r"<(?:(?:https?|local)://|mailto:)[^\s<>]*>", re.I)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}:")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_PLAIN_URL = re.compile(r"[A-Za-z0-9:/?#@!$&'+,;=%.~_-]+")
_MARKERS = 0xE000, 0xF8FF  # private-use code points: placeholders for HTML markup in the Markdown source
_NO_MARKERS = dict.fromkeys(range(_MARKERS[0], _MARKERS[1] + 1), 0xFFFD)
_MD_SCHEMES = {"http", "https", "local", "mailto"}
_SHOWN = 5  # items listed in a warning line
_ITEM_CHARS = 80


def render(result: ResearchResult, fmt: Format = "md", *, references: bool = True) -> str:
    """The result as a Markdown or self-contained HTML document, or as JSON."""
    if fmt == "json":
        return result.model_dump_json(indent=2)
    if fmt == "html":
        return _html_document(result, listed=references)
    if fmt == "md":
        return _markdown(result, listed=references)
    raise ValueError(f"unknown export format {fmt!r}: md, html or json")


def references(result: ResearchResult) -> str:
    """The Markdown list of the pages cited (by source id) and, after it, the pages read but not cited."""
    if not result.sources:
        return ""
    cited, other = _split_sources(result)
    lines = ["## References", ""]
    lines += [_md_reference(s) for s in cited] or ["The report cites none of the pages read."]
    if other:
        lines += ["", "Also read:" if cited else "Read:", ""] + [_md_reference(s) for s in other]
    return "\n".join(lines)


def warnings(result: ResearchResult) -> list[str]:
    """One plain line per problem with the report's citations: unverified ones, and unsupported sentences."""
    report, citations = _checked(result)
    lines = []
    unverified = [c for c in citations if not c.verified]
    if unverified:
        n, shown = len(unverified), list(dict.fromkeys(map(_shown, unverified)))
        what = "1 citation points at a page" if n == 1 else f"{n:,} citations point at pages"
        if 1 < len(shown) < n:
            what = f"{n:,} citations ({len(shown):,} different) point at pages"
        lines.append(f"{what} the run never read: {_listing(shown)}")
    sentences = []
    for group in citation_groups(report, citations):
        unsupported = [c for c in group if c.verified and not c.supported]
        if unsupported:
            label = "".join(dict.fromkeys(_shown(c, target=False) for c in unsupported))
            sentences.append(f"{label} {_items(_missing(unsupported))}")
    if sentences:
        n = len(sentences)
        what = "1 cited sentence has" if n == 1 else f"{n:,} cited sentences have"
        lines.append(
            f"{what} numbers, dates or quotes the cited page does not contain: {_listing(sentences, sep='; ')}"
        )
    return lines


# ---------------------------------------------------------------- the report's text, edited


@dataclass(frozen=True)
class _Insert:
    """Text put at a position of the report: `order` sorts what lands on one spot (closing, flags, opening)."""

    pos: int
    order: int
    text: str


def _checked(result: ResearchResult) -> tuple[str, list[Citation]]:
    """The report and those of its citations whose span matches it, in order."""
    report = result.report
    valid = [c for c in result.citations if 0 <= c.start <= c.end <= len(report) and report[c.start : c.end] == c.text]
    return report, sorted(valid, key=lambda c: (c.start, c.end))


def _thinking(report: str) -> list[_Span]:
    """Spans to drop: everything up to the last </think> (streaming.split_thinking's rule), and any stray tag."""
    closes = list(_THINK_CLOSE.finditer(report))
    cut = closes[-1].end() if closes else 0
    spans = [(0, cut)] if cut else []
    return spans + [m.span() for m in _THINK_TAG.finditer(report, cut)]


def _apply(text: str, deletions: list[_Span], replacements: list[_Replacement], inserts: list[_Insert]) -> str:
    """`text` with spans deleted or replaced and inserts put in.

    A replacement that overlaps a deletion or an earlier replacement is skipped. An insert inside a deleted span is
    dropped; one inside a replaced span goes right after it.
    """
    cuts = _cuts(deletions, replacements)
    starts = [c[0] for c in cuts]
    placed = []
    for insert in inserts:
        pos, i = insert.pos, bisect.bisect_right(starts, insert.pos) - 1
        if i >= 0 and cuts[i][0] < pos < cuts[i][1]:
            if cuts[i][3]:
                continue
            pos = cuts[i][1]
        placed.append((pos, insert.order, insert.text))
    placed.sort(key=lambda p: (p[0], p[1]))
    out, at, j = [], 0, 0
    for start, end, new, _ in [*cuts, (len(text), len(text), "", False)]:
        while j < len(placed) and placed[j][0] <= start:
            out += [text[at : placed[j][0]], placed[j][2]]
            at, j = placed[j][0], j + 1
        out += [text[at:start], new]
        at = max(at, end)
    return "".join(out)


def _cuts(deletions: list[_Span], replacements: list[_Replacement]) -> list[tuple[int, int, str, bool]]:
    """(start, end, new text, deleted) in order: the deletions (disjoint), and each replacement that overlaps none."""
    deleted = sorted(deletions)
    kept, last_end = [], 0
    for start, end, new in sorted(replacements, key=lambda r: (r[0], -r[1])):  # the longest of those at one spot
        i = bisect.bisect_left(deleted, (end,))
        if start >= last_end and not (i > 0 and deleted[i - 1][1] > start):
            kept.append((start, end, new, False))
            last_end = end
    return sorted([(s, e, "", True) for s, e in deleted] + kept)


def _neutralised(report: str) -> list[_Replacement]:
    """Markdown replacements that keep a viewer from loading or running anything. Code is left alone.

    Inline images become text and any other `![` is escaped; raw HTML and autolinks other than web, local and mail
    addresses are escaped; links and reference definitions to other schemes (javascript:, data:, file:) lose their
    target.
    """
    code = code_regions(report)
    starts = [s for s, _ in code]
    edits = []
    for m in MARKDOWN_LINK.finditer(report):
        target = link_destination(m)
        if m.group(1):
            shown = _inert(_image_text(m.group(2), target))
            if report[m.end() : m.end() + 1] in ("(", "[", ":"):  # it must not become a link's text
                shown = shown[:-1] + "\\]"
            edits.append((m.start(), m.end(), shown))
        elif (scheme := _SCHEME.match(target)) and scheme.group()[:-1].lower() not in _MD_SCHEMES:
            edits.append((m.start(), m.end(), _inert(m.group(2))))
    edits += [(m.start(), m.end(), "!\\[") for m in _BANG.finditer(report)]  # an inline image's text wins
    for m in _DEFINITION.finditer(report):
        if m.group(2).lower() not in _MD_SCHEMES:
            edits.append((m.start(1), m.end(1), "\\["))
    for m in _ANGLE.finditer(report):
        if not _SAFE_AUTOLINK.match(report, m.start()):
            edits.append((m.start(), m.end(), "\\<"))
    return [e for e in edits if not in_spans(code, starts, e[0])]


def _inert(text: str) -> str:
    """Markdown text in which no raw HTML can start."""
    return _ANGLE.sub(r"\\<", text)


def _image_text(alt: str, url: str) -> str:
    """What an image becomes: `[image: alt — url]`."""
    alt = " ".join(alt.split())
    return f"[image: {alt} — {url}]" if url else f"[image: {alt}]"


# ---------------------------------------------------------------- flags


def _flag_items(group: list[Citation]) -> tuple[str | None, list[str]]:
    """(what is unverified: "" for the whole group, else the targets; None if nothing), the unsupported items."""
    unverified = [c for c in group if not c.verified]
    what = None
    if unverified:
        listed = dict.fromkeys(_short(c.target, 40) for c in unverified)
        what = "" if len(unverified) == len(group) else ", ".join(listed)
    return what, _missing([c for c in group if c.verified and not c.supported])


def _flag_text(group: list[Citation]) -> str:
    """The Markdown flags after a group of citations: ` [unverified]`, ` [unsupported: 1923, "movable type"]`."""
    what, missing = _flag_items(group)
    text = ""
    if what is not None:
        text += " [unverified" + (f": {_md_escape(what)}" if what else "") + "]"
    if missing:
        text += f" [unsupported: {_md_escape(_items(missing))}]"
    return text


def _flag_html(group: list[Citation]) -> str:
    """The same flags as styled spans."""
    what, missing = _flag_items(group)
    text = ""
    if what is not None:
        label = "unverified" + (f": {what}" if what else "")
        text += f' <span class="flag unverified">[{html.escape(label)}]</span>'
    if missing:
        text += f' <span class="flag unsupported">[unsupported: {html.escape(_items(missing))}]</span>'
    return text


def _items(missing: list[str]) -> str:
    """The first few missing items, each short."""
    return ", ".join(_short(m, 40) for m in missing[:_SHOWN]) + (", …" if len(missing) > _SHOWN else "")


def _missing(citations: list[Citation]) -> list[str]:
    """What the citations' pages lack, each once."""
    return list(dict.fromkeys(m for c in citations for m in c.missing))


def _shown(c: Citation, *, target: bool = True) -> str:
    """A citation as a warning lists it: `[7]`, the URL of a link, or with `target` `[^2] https://…` (what it names)."""
    if c.form in ("link", "url"):
        return _short(c.target, _ITEM_CHARS)
    if c.form == "number" and c.target.isdigit():
        return f"[{c.target}]"
    text = _short(" ".join(c.text.split()), 40)
    named = target and c.target.startswith(("http", "local://"))
    return f"{text} {_short(c.target, _ITEM_CHARS)}" if named else text


def _short(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: its middle left out (URLs differ at their ends)."""
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 3
    return text[: limit - 1 - tail] + "…" + text[len(text) - tail :]


def _listing(items: list[str], sep: str = ", ") -> str:
    """The first few items, and how many more there are."""
    shown = sep.join(items[:_SHOWN])
    return shown + (f"{sep}and {len(items) - _SHOWN:,} more" if len(items) > _SHOWN else "")


# ---------------------------------------------------------------- Markdown


def _markdown(result: ResearchResult, *, listed: bool) -> str:
    """The report flagged and made inert (else what went wrong), then the references when `listed`."""
    report, citations = _checked(result)
    inserts = [_Insert(group[-1].end, 1, _flag_text(group)) for group in citation_groups(report, citations)]
    body = _apply(report, _thinking(report), _neutralised(report), [i for i in inserts if i.text]).strip()
    if not body:
        body = f"The run ended without a report: {result.error}" if result.error else "The model wrote no report."
    tail = references(result) if listed else ""
    return body + (f"\n\n{tail}" if tail else "")


def _split_sources(result: ResearchResult) -> tuple[list[Source], list[Source]]:
    """(pages cited, pages read but not cited), by id."""
    ids = {c.source_id for c in result.citations if c.source_id is not None} | {s.id for s in result.sources if s.cited}
    ordered = sorted(result.sources, key=lambda s: s.id)
    return [s for s in ordered if s.id in ids], [s for s in ordered if s.id not in ids]


def _md_reference(source: Source) -> str:
    """`- [id] Title — URL (read …)`."""
    title, url = _md_escape(_one_line(source.title)), _md_url(source.final_url or source.url)
    return f"- [{source.id}] {title} — {url} (read {_when(source.fetched_at)})"


def _md_url(url: str) -> str:
    """A web or local address as Markdown shows it (bare, else in <>); anything else as plain text, never a link."""
    if not re.match(r"(?:https?|local)://", url, re.I):
        return _md_escape(url)
    if _PLAIN_URL.fullmatch(url):
        return url
    return f"<{url}>" if not re.search(r"[\s<>]", url) else _md_escape(url)


def _md_escape(text: str) -> str:
    """Text that Markdown shows as it is."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _one_line(text: str) -> str:
    """`text` on one line, with single spaces."""
    return " ".join(text.split()) or "(untitled)"


def _when(moment: datetime) -> str:
    """A moment in UTC, to the minute."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- HTML

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; font-src 'none'; connect-src 'none'; "
    "media-src 'none'; object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'"
)
_STYLE = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #fff;
  max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
header { border-bottom: 1px solid #ddd; margin-bottom: 1.5rem; }
header .question { font-size: 1.15rem; font-weight: 600; }
header .meta, .read { color: #666; font-size: 0.85rem; }
pre, code { font-family: ui-monospace, monospace; background: #f5f5f7; }
pre { padding: 0.75rem; overflow-x: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 0.25rem 0.5rem; }
blockquote { border-left: 3px solid #ddd; margin-left: 0; padding-left: 1rem; color: #444; }
a.cite { text-decoration: none; }
.flag { font-size: 0.8em; font-weight: 600; border-radius: 3px; padding: 0 0.25em; }
.flag.unverified { background: #fde2e1; color: #9b1c1c; }
.flag.unsupported { background: #fef3c7; color: #8a4b00; }
.image { color: #666; font-style: italic; }
.warnings { background: #fffbea; border: 1px solid #f0d98a; padding: 0.5rem 1rem 0.5rem 2rem; }
.error { color: #9b1c1c; }
.references li { margin: 0.25rem 0; word-break: break-word; }
@media (prefers-color-scheme: dark) {
  body { color: #e8e8ea; background: #161618; } pre, code { background: #26262a; }
  a { color: #8ab4f8; } .flag.unverified { background: #5b1d1d; color: #fecaca; }
  .flag.unsupported { background: #4a3500; color: #fde68a; } .warnings { background: #2a2410; border-color: #5c4b14; }
}
"""


def _html_document(result: ResearchResult, *, listed: bool) -> str:
    """One HTML file: the question, warnings, the report (from Markdown, flagged), the references."""
    cited, other = _split_sources(result)
    body = _html_report(result, linked={s.id for s in cited} if listed else set())
    if not body.strip():
        why = f"The run ended without a report: {result.error}" if result.error else "The model wrote no report."
        body = f'<p class="error">{html.escape(why)}</p>'
    problems = warnings(result)
    parts = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_escape(_one_line(result.question))}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f'<p class="question">{_escape(result.question)}</p>',
        f'<p class="meta">{_escape(_meta(result))}</p>',
        "</header>",
    ]
    if problems:
        parts += ['<ul class="warnings">', *(f"<li>{_escape(p)}</li>" for p in problems), "</ul>"]
    parts += ["<main>", body, "</main>"]
    if listed and result.sources:
        parts += ['<section class="references">', "<h2>References</h2>"]
        if cited:
            parts += ["<ul>", *(_html_reference(s, anchor=True) for s in cited), "</ul>"]
        else:
            parts.append("<p>The report cites none of the pages read.</p>")
        if other:
            parts += [f"<h3>{'Also read' if cited else 'Read'}</h3>", "<ul>"]
            parts += [_html_reference(s, anchor=False) for s in other] + ["</ul>"]
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts)


def _meta(result: ResearchResult) -> str:
    """The line under the question: model, time, pages read, stop reason."""
    read = f"{len(result.sources)} page{'' if len(result.sources) == 1 else 's'} read"
    return f"{result.model} · {_when(result.finished_at)} · {read} · stop reason {result.stop_reason}"


def _html_reference(source: Source, *, anchor: bool) -> str:
    """One reference as a list item; `anchor` gives it the id citations link to."""
    url = source.final_url or source.url
    link = f'<a href="{_escape(url)}" rel="noreferrer noopener">{_escape(url)}</a>' if _web(url) else _escape(url)
    ident = f' id="ref-{source.id}"' if anchor else ""
    title = _escape(_one_line(source.title))
    return f'<li{ident}>[{source.id}] {title} — {link} <span class="read">(read {_when(source.fetched_at)})</span></li>'


def _escape(text: str) -> str:
    """Text, attribute-safe."""
    return html.escape(text, quote=True)


def _web(url: str) -> bool:
    """Whether `url` is an http(s) address (the only links an export keeps)."""
    try:
        return urlsplit(url.strip()).scheme.lower() in ("http", "https")
    except ValueError:
        return False


class _Markers:
    """Single private-use characters that stand for HTML markup in the Markdown source, swapped in after parsing."""

    def __init__(self) -> None:
        self.markup: dict[str, str] = {}

    def add(self, markup: str) -> str | None:
        """A new marker for `markup`; None once they run out."""
        code = _MARKERS[0] + len(self.markup)
        if code > _MARKERS[1]:
            return None
        self.markup[chr(code)] = markup
        return chr(code)


def _html_report(result: ResearchResult, *, linked: set[int]) -> str:
    """The report as HTML: Markdown rendered with raw HTML escaped, images as text, only http(s) links kept."""
    from markdown_it import MarkdownIt

    report, citations = _checked(result)
    text = report.translate(_NO_MARKERS)  # the report's own private-use characters: U+FFFD, so offsets hold
    markers, inserts = _Markers(), []
    for group in citation_groups(report, citations):
        for c in _by_span(group):
            sid = next((x.source_id for x in group if (x.start, x.end) == (c.start, c.end) and x.verified), None)
            if sid in linked and c.form in ("number", "mark", "footnote"):
                opened, closed = markers.add(f'<a class="cite" href="#ref-{sid}">'), markers.add("</a>")
                if opened and closed:
                    inserts += [_Insert(c.start, 2, opened), _Insert(c.end, 0, closed)]
            elif sid in linked:
                sup = markers.add(f'<sup><a class="cite" href="#ref-{sid}">{sid}</a></sup>')
                if sup:
                    inserts.append(_Insert(c.end, 0, sup))
        flags = _flag_html(group)
        if flags:
            marker = markers.add(flags)
            inserts.append(_Insert(group[-1].end, 1, marker or _flag_text(group)))
    source = _apply(text, _thinking(report), [], inserts)
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"]).disable(["reference"])  # [1]: url lines stay text, [1] never a link
    tokens = md.parse(source)
    for token in tokens:
        if token.type == "inline" and token.children is not None:
            token.children = _inline(token.children, markers.markup)
        else:
            _scrub(token, markers.markup)
    return md.renderer.render(tokens, md.options, {}).translate(dict.fromkeys(map(ord, markers.markup)))


def _by_span(group: list[Citation]) -> list[Citation]:
    """One citation per distinct span ([1, 2] is one span with two citations)."""
    return list({(c.start, c.end): c for c in group}.values())


def _inline(children: list[Token], markup: dict[str, str]) -> list[Token]:
    """Inline tokens with images as text, links other than http(s) unwrapped, and markers swapped for markup."""
    from markdown_it.token import Token

    out: list[Token] = []
    kept: list[bool] = []  # per open link: whether it stays a link
    for token in children:
        if token.type == "image":
            alt = "".join(t.content for t in token.children or [] if t.type in ("text", "code_inline"))
            shown = _escape(_image_text(alt, str(token.attrGet("src") or "")))
            out.append(Token("html_inline", "", 0, content=f'<span class="image">{shown}</span>'))
        elif token.type == "link_open":
            href = str(token.attrGet("href") or "")
            kept.append(_web(href))
            if kept[-1]:
                token.attrs = {"href": _unmark(href, markup), "rel": "noreferrer noopener"}
                out.append(token)
        elif token.type == "link_close":
            if kept.pop() if kept else False:
                out.append(token)
        elif token.type == "text":
            out += _split_markers(token.content, markup)
        else:
            _scrub(token, markup)
            out.append(token)
    return out


def _split_markers(text: str, markup: dict[str, str]) -> list[Token]:
    """A text token's content as text tokens and, for each marker in it, the markup it stands for."""
    from markdown_it.token import Token

    tokens, piece = [], []
    for ch in text:
        if ch in markup:
            if piece:
                tokens.append(Token("text", "", 0, content="".join(piece)))
                piece = []
            tokens.append(Token("html_inline", "", 0, content=markup[ch]))
        else:
            piece.append(ch)
    if piece or not tokens:
        tokens.append(Token("text", "", 0, content="".join(piece)))
    return tokens


def _unmark(text: str, markup: dict[str, str]) -> str:
    """`text` without markers."""
    return text.translate(dict.fromkeys(map(ord, markup))) if markup else text


def _scrub(token: Token, markup: dict[str, str]) -> None:
    """Markers that landed in code or an attribute are dropped there."""
    token.content = _unmark(token.content, markup)
    token.attrs = {k: _unmark(v, markup) if isinstance(v, str) else v for k, v in token.attrs.items()}
