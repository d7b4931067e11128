"""Turn fetched bytes into readable text: charset decoding, trafilatura extraction to Markdown, page titles."""

from __future__ import annotations

import codecs
import re
from typing import Any

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-:.]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*(\n|$)")
_INLINE_MARKUP = str.maketrans("", "", "*_`#")

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MARKDOWN_TYPES = frozenset({"text/markdown", "text/x-markdown"})
TEXT_TYPES = frozenset({"text/plain", "application/json"}) | MARKDOWN_TYPES
MAX_TITLE_CHARS = 300
TITLE_SCAN_CHARS = 65_536  # a title is looked for near the top; pages are attacker-sized


def sniff_type(content_type: str, body: bytes) -> str:
    """The content type to act on: the header's, or a guess from the first bytes when absent or generic."""
    if content_type and content_type not in ("application/octet-stream", "binary/octet-stream"):
        return content_type
    head = body[:1024].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "text/html"
    try:
        body[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def decode_body(body: bytes, header_charset: str | None) -> str:
    """Decode with the header's charset, then a BOM, then a <meta> charset, then detection."""
    candidates: list[str] = [header_charset] if header_charset else []
    candidates += [name for bom, name in _BOMS if body.startswith(bom)]
    if match := _META_CHARSET.search(body[:4096]):
        candidates.append(match.group(1).decode("ascii"))
    for name in [*candidates, "utf-8"]:
        try:
            # Not final: a body cut at the size cap may end inside a character.
            return codecs.getincrementaldecoder(name)(errors="strict").decode(body, final=False)
        except (LookupError, UnicodeDecodeError):
            continue
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    return str(best) if best is not None else body.decode("utf-8", errors="replace")


def extract_html(html: str, url: str) -> tuple[str, str]:
    """Return (title, main text as Markdown), keeping the page's heading. Blocking: call it off the event loop."""
    import trafilatura

    text = trafilatura.extract(
        html, url=url, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )
    if not text:
        text = trafilatura.html2txt(html) or ""
    tree = trafilatura.load_html(html)
    heading = _sole_h1(tree) if tree is not None else ""
    meta = trafilatura.extract_metadata(tree, default_url=url) if tree is not None else None
    title = ((meta.title if meta and meta.title else "") or "").strip()
    # trafilatura drops an H1 outside the element it takes for the article (a WordPress entry-header), and takes
    # the title from og:title or <title> when the page has them: then the heading is nowhere unless put back.
    if heading and _key(heading) != _key(title) and _key(heading) not in _key(text):
        text = f"# {heading}\n\n{text}"
    return title[:MAX_TITLE_CHARS], text.strip()


def _sole_h1(tree: Any) -> str:
    """The text of the page's H1 when it has exactly one (the page's own heading), else ''."""
    headings = [" ".join(h.text_content().split()) for h in tree.iter("h1")]
    headings = [h for h in headings if h]
    return headings[0][:MAX_TITLE_CHARS] if len(headings) == 1 else ""


def _key(text: str) -> str:
    """`text` for comparing titles and headings: case, spacing and inline Markdown marks ignored."""
    return " ".join(text.translate(_INLINE_MARKUP).split()).casefold()


def _first_line(text: str) -> str:
    """The first line with a letter or digit, without Markdown heading marks."""
    for line in text.splitlines():
        if any(ch.isalnum() for ch in line):
            return line.strip().lstrip("#").strip()[:MAX_TITLE_CHARS]
    return ""


def _front_matter_end(text: str) -> int:
    """Where a leading YAML front-matter block ends (after its closing ---), or 0 when there is none."""
    if not text.startswith("---\n"):
        return 0
    end = text.find("\n---", 3)
    if end < 0:
        return 0
    line_end = text.find("\n", end + 4)
    return len(text) if line_end < 0 else line_end + 1


def without_front_matter(text: str) -> str:
    """A Markdown document without its leading YAML front-matter block, if any."""
    return text[_front_matter_end(text) :].lstrip("\n")


def markdown_title(text: str) -> str:
    """A Markdown document's title: its front matter's title, else the first ATX heading, else the first line."""
    head = text[:TITLE_SCAN_CHARS]
    end = _front_matter_end(head)
    for line in head[4:end].splitlines() if end else ():
        if line.startswith("title:") and (value := line[6:].strip().strip("\"'").strip()):
            return value[:MAX_TITLE_CHARS]
    for line in head.splitlines():
        if heading := _atx_heading(line):
            return heading
    return _first_line(head)


def _atx_heading(line: str) -> str:
    """The text of a `# Heading` line (up to three spaces of indent, one to six #, an optional closing run), or ''."""
    marks = line.lstrip(" ")
    level = len(marks) - len(marks.lstrip("#"))
    if len(line) - len(marks) > 3 or not 1 <= level <= 6 or marks[level : level + 1] not in (" ", "\t"):
        return ""
    heading = marks[level:].strip()
    if heading.endswith("#") and (unclosed := heading.rstrip("#")).endswith((" ", "\t")):
        heading = unclosed.strip()
    return heading[:MAX_TITLE_CHARS]


def text_title(text: str) -> str:
    """A plain-text document's title: its first line with a letter or digit."""
    return _first_line(text)


def strip_title(text: str, title: str) -> str:
    """`text` without its first line (after any front matter) when that line repeats `title` (as a heading or not)."""
    if not _key(title):
        return text
    start = _front_matter_end(text)
    head, body = text[:start], text[start:].lstrip("\n")
    first, _, rest = body.partition("\n")
    if _key(first.strip().strip("#")) != _key(title):
        return text
    if underline := _SETEXT_UNDERLINE.match(rest):
        rest = rest[underline.end() :]
    return head + ("\n" if head else "") + rest.lstrip("\n")
