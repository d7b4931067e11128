"""Turn fetched bytes into readable text: charset decoding and trafilatura extraction to Markdown."""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-:.]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/x-markdown", "application/json"})


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
    """Return (title, main text as Markdown). Blocking: call it off the event loop."""
    import trafilatura

    text = trafilatura.extract(
        html, url=url, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )
    if not text:
        text = trafilatura.html2txt(html) or ""
    meta = trafilatura.extract_metadata(html, default_url=url)
    title = (meta.title if meta and meta.title else "") or ""
    return title.strip(), text.strip()
