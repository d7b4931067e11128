"""The files of a folder that can be indexed, and the title and text of each."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from rumination.web.base import FetchError
from rumination.web.extract import MAX_TITLE_CHARS, decode_body, extract_html, markdown_title, text_title

MAX_FILE_BYTES = 50 * 1024 * 1024
HTML_SUFFIXES = frozenset({".html", ".htm"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = MARKDOWN_SUFFIXES | {".txt", ".rst"}
PDF_SUFFIXES = frozenset({".pdf"})
INDEXED_SUFFIXES = HTML_SUFFIXES | TEXT_SUFFIXES | PDF_SUFFIXES

Progress = Callable[[str], None]
PdfExtractor = Callable[..., tuple[str, str]]


class SkipFile(Exception):
    """A file that cannot be indexed; the message says why."""


def say(progress: Progress | None, message: str) -> None:
    """Report a progress message when someone listens."""
    if progress is not None:
        progress(message)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relative posix path, path) of every visible regular file under `root`, staying inside it."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.islink(Path(dirpath, d)))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(dirpath, filename)
            if path.is_symlink() and not _inside(path, root):
                continue
            if path.is_file():
                yield path.relative_to(root).as_posix(), path


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, links resolved, lies inside `root` (already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def content_type(relpath: str) -> str:
    """The content type a document's text is given as."""
    suffix = Path(relpath).suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "application/pdf"
    if suffix == ".txt":
        return "text/plain"
    if suffix == ".rst":
        return "text/x-rst"
    return "text/markdown"


def _decode_text(data: bytes) -> str:
    """Decode a text file, rejecting binary content."""
    if b"\x00" in data[:8192]:
        raise SkipFile("binary content")
    text = decode_body(data, None)
    sample = text[:8192]
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    if sample and (controls + sample.count("\ufffd")) > len(sample) * 0.05:
        raise SkipFile("binary content")
    return text


def load_pdf_extractor(progress: Progress | None) -> PdfExtractor | None:
    """rumination.web.pdf.extract_pdf_sync, or None (with a progress message) when it is unavailable."""
    try:
        from rumination.web.pdf import extract_pdf_sync
    except ImportError:
        say(progress, "PDF support is unavailable: PDF files will be skipped")
        return None
    return extract_pdf_sync


def read_candidate(path: Path, stat: os.stat_result) -> bytes:
    """The bytes of a file to index; SkipFile when too large or unreadable."""
    if stat.st_size > MAX_FILE_BYTES:
        raise SkipFile(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or type(exc).__name__})") from None


def extract(path: Path, data: bytes, pdf: PdfExtractor | None, pdf_opts: dict) -> tuple[str, str]:
    """Return (title, text) of one file; raise SkipFile when it has nothing to index."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        title, text = extract_html(decode_body(data, None), "")
        title = title or text_title(text)
    elif suffix in PDF_SUFFIXES:
        if pdf is None:
            raise SkipFile("PDF support is unavailable")
        title, text = pdf(data, **pdf_opts)
        title = (title or "").strip() or text_title(text)
    else:
        text = _decode_text(data)
        title = markdown_title(text) if suffix in MARKDOWN_SUFFIXES else text_title(text)
    if not text.strip():
        raise SkipFile("no readable text")
    return title[:MAX_TITLE_CHARS], text


def skip_reason(exc: Exception) -> str:
    """Why a file was skipped, for the progress line."""
    return str(exc) if isinstance(exc, SkipFile | FetchError) else f"{type(exc).__name__}: {exc}"
