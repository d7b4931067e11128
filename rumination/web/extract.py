"""Turn fetched bytes into readable text: charset decoding, trafilatura extraction to Markdown, page titles."""

from __future__ import annotations

import codecs
import re
from html import unescape
from typing import Any

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-:.]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*(\n|$)")
_INLINE_MARKUP = str.maketrans("", "", "*_`#")
_TAG = re.compile(r"<[^<>]*>")  # linear: a tag never spans another "<"
_BLOCKS = ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "nav", "header", "footer", "section")
_BLOCKS += ("article", "aside", "main", "ul", "ol", "table", "blockquote", "pre", "dd", "dt", "figcaption")

# The labels of the WHATWG Encoding Standard (encoding.spec.whatwg.org, "Names and labels"), by the Python codec that
# decodes them: a charset name is data from the server, and Python's codec registry also holds compression and
# binary-to-text codecs. The "replacement" labels (ISO-2022-KR, HZ-GB-2312...) and x-user-defined go to detection.
_WHATWG_LABELS = {
    "utf-8": "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
    "cp866": "866 cp866 csibm866 ibm866",
    "iso8859-2": "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2",
    "iso8859-3": "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3",
    "iso8859-4": "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4",
    "iso8859-5": "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 iso_8859-5:1988",
    "iso8859-6": "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e "
    "iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987",
    "iso8859-7": "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 "
    "iso_8859-7 iso_8859-7:1987 sun_eu_greek",
    "iso8859-8": "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 "
    "iso_8859-8 iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical",
    "iso8859-10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
    "iso8859-13": "iso-8859-13 iso8859-13 iso885913",
    "iso8859-14": "iso-8859-14 iso8859-14 iso885914",
    "iso8859-15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9",
    "iso8859-16": "iso-8859-16",
    "koi8-r": "cskoi8r koi koi8 koi8-r koi8_r",
    "koi8-u": "koi8-ru koi8-u",
    "mac-roman": "csmacintosh mac macintosh x-mac-roman",
    "cp874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
    "cp1250": "cp1250 windows-1250 x-cp1250",
    "cp1251": "cp1251 windows-1251 x-cp1251",
    "cp1252": "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
    "iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
    "cp1253": "cp1253 windows-1253 x-cp1253",
    "cp1254": "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 latin5 "
    "windows-1254 x-cp1254",
    "cp1255": "cp1255 windows-1255 x-cp1255",
    "cp1256": "cp1256 windows-1256 x-cp1256",
    "cp1257": "cp1257 windows-1257 x-cp1257",
    "cp1258": "cp1258 windows-1258 x-cp1258",
    "mac-cyrillic": "x-mac-cyrillic x-mac-ukrainian",
    "gb18030": "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030",
    "big5hkscs": "big5 big5-hkscs cn-big5 csbig5 x-x-big5",
    "euc-jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
    "iso2022-jp": "csiso2022jp iso-2022-jp",
    "cp932": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
    "cp949": "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 "
    "windows-949",
    "utf-16-be": "unicodefffe utf-16be",
    "utf-16-le": "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
}
_CODEC_BY_LABEL = {label: codec for codec, labels in _WHATWG_LABELS.items() for label in labels.split()}
_WEB_CODECS = frozenset(codecs.lookup(codec).name for codec in _WHATWG_LABELS)
_DECODE_CHUNK = 1 << 20
DETECT_BYTES = 1_000_000  # charset detection looks at the head of a page

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MARKDOWN_TYPES = frozenset({"text/markdown", "text/x-markdown"})
TEXT_TYPES = frozenset({"text/plain", "application/json"}) | MARKDOWN_TYPES
MAX_TITLE_CHARS = 300
TITLE_SCAN_CHARS = 65_536  # a title is looked for near the top; pages are attacker-sized
# trafilatura takes about 1 s per MB of an ordinary page and 8 s per MB of nested lists: what it is given is cut here.
MAX_HTML_CHARS = 2_000_000


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


def web_codec(label: str | None) -> str | None:
    """The Python codec of a WHATWG encoding label (any case, surrounding spaces), or None for any other name."""
    return _CODEC_BY_LABEL.get(label.strip("\t\n\f\r ").lower()) if label else None


def decode_body(body: bytes, header_charset: str | None, max_chars: int | None = None) -> str:
    """Decode by the BOM, the header's charset, a <meta> charset, UTF-8, then detection; at most `max_chars` chars."""
    candidates = []
    for bom, codec in _BOMS:
        if body.startswith(bom):
            body = body[len(bom) :]
            candidates.append(codec)
            break
    candidates += [web_codec(header_charset), _meta_codec(body), "utf-8"]
    for codec in dict.fromkeys(c for c in candidates if c):
        try:
            return _decode(body, codec, "strict", max_chars)
        except UnicodeDecodeError:
            continue
    return _decode(body, _detect(body) or "utf-8", "replace", max_chars)


def _meta_codec(body: bytes) -> str | None:
    """The codec a <meta> charset near the top names; UTF-16 there means UTF-8 (the tag was read as ASCII)."""
    match = _META_CHARSET.search(body[:4096])
    codec = web_codec(match.group(1).decode("ascii")) if match else None
    return "utf-8" if codec in ("utf-16-be", "utf-16-le") else codec


def _detect(body: bytes) -> str | None:
    """The web encoding charset-normalizer finds in the head of `body`, if any."""
    from charset_normalizer import from_bytes

    best = from_bytes(body[:DETECT_BYTES]).best()
    if best is None:
        return None
    try:
        name = codecs.lookup(best.encoding).name
    except LookupError:
        return None
    return web_codec(name) or (name if name in _WEB_CODECS else None)


def _decode(body: bytes, codec: str, errors: str, max_chars: int | None) -> str:
    """`body` decoded piece by piece, stopping once `max_chars` characters are out."""
    decoder = codecs.getincrementaldecoder(codec)(errors=errors)
    parts: list[str] = []
    size = 0
    for start in range(0, len(body), _DECODE_CHUNK):
        # Not final: a body cut at the size cap may end inside a character.
        parts.append(decoder.decode(body[start : start + _DECODE_CHUNK], final=False))
        size += len(parts[-1])
        if max_chars is not None and size >= max_chars:
            break
    return "".join(parts)[:max_chars]


async def extract_page(html: str, url: str, *, timeout: float, max_memory_mb: int) -> tuple[str, str, bool]:
    """(title, Markdown, cut) from a limited worker process; the page's plain text when that fails."""
    import asyncio

    from rumination.web.worker import WorkerFailed, shared_pool

    head, notes = html[:MAX_HTML_CHARS], []
    try:
        title, text = await shared_pool(max_memory_mb, warm_up).run(timeout, extract_html, head, url)
    except Exception as exc:  # the worker's own failures, and any in reaching it (a closed pool, no processes left)
        reason = str(exc) if isinstance(exc, WorkerFailed) else f"{type(exc).__name__}: {exc}"
        title, text = await asyncio.to_thread(plain_text, head)
        notes.append(f"[plain text: the main-text extractor failed ({reason}), so this is all of the page's text]")
    cut = len(html) > len(head)
    if cut:
        notes.append(f"[truncated: only the first {MAX_HTML_CHARS:,} characters of the page's HTML were read]")
    return title, "\n\n".join([text, *notes]) if text.strip() else "", cut


def warm_up() -> None:
    """Import trafilatura and pay its first-call costs (a new worker does this before its limits are set)."""
    extract_html("<html><head><title>T</title></head><body><article><h1>T</h1><p>Warm.</p></article></body></html>", "")


def plain_text(html: str) -> tuple[str, str]:
    """(title, text) without the extractor: the page's text minus scripts and styles, or else its tags stripped."""
    import lxml.etree
    import lxml.html

    try:
        parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
        doc = lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=parser)
        title = doc.findtext(".//title") or ""
        lxml.etree.strip_elements(doc, "script", "style", "noscript", "template", "head", with_tail=False)
        for block in doc.iter(*_BLOCKS):
            block.tail = "\n" + (block.tail or "")
        text = doc.text_content()
    except Exception:  # the last resort: nothing a page holds may stop it
        title, text = "", unescape(_TAG.sub(" ", html))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return " ".join(title.split())[:MAX_TITLE_CHARS], "\n".join(line for line in lines if line)


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
