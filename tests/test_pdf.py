"""PDF extraction in a limited child process, on real hand-built PDFs."""

from __future__ import annotations

import io
import os
import resource
import sys
import time
import zlib
from pathlib import Path

import psutil
import pytest
from pypdf import PdfReader, PdfWriter

from rumination.web import pdf
from rumination.web.base import FetchError
from rumination.web.pdf import extract_pdf, extract_pdf_sync


def _escape(text: str) -> bytes:
    """A PDF literal string body."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def build_pdf(streams: list[tuple[bytes, bytes]], title: str | None = None) -> bytes:
    """A minimal valid PDF with one page per (extra stream dict entries, stream data) and a Helvetica font."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for extra, data in streams:
        page, content = len(objects) + 1, len(objects) + 2
        kids.append(f"{page} 0 R".encode())
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            + f"/Contents {content} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream")
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    if title is not None:
        objects.append(b"<< /Title (" + _escape(title) + b") >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info = b" /Info %d 0 R" % len(objects) if title is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return bytes(out)


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A PDF whose pages show the given text, one text line per line."""
    streams = []
    for text in pages:
        lines = [
            b"BT /F1 12 Tf 72 %d Td (%s) Tj ET" % (720 - 16 * i, _escape(line))
            for i, line in enumerate(text.split("\n"))
        ]
        streams.append((b"", b"\n".join(lines)))
    return build_pdf(streams, title)


def bomb_pdf(megabytes: int, operator: bytes = b"0 0 m ") -> bytes:
    """A one-page PDF whose FlateDecode content stream inflates to `megabytes` MB of one repeated operator."""
    chunk, packer = operator * (2**20 // len(operator)), zlib.compressobj(9)
    compressed = b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()
    return build_pdf([(b"/Filter /FlateDecode ", compressed)])


def blank_pdf() -> bytes:
    """A one-page PDF without any text, written by pypdf."""
    writer, out = PdfWriter(), io.BytesIO()
    writer.add_blank_page(width=612, height=792)
    writer.write(out)
    return out.getvalue()


def test_hand_built_pdf_is_valid():
    reader = PdfReader(io.BytesIO(make_pdf(["a", "b"], "T")), strict=True)
    assert len(reader.pages) == 2 and reader.metadata.title == "T"


async def test_text_and_title_from_two_pages():
    data = make_pdf(["Quarterly report\nRevenue grew (a lot)", "Page two says goodbye"], title="The Report")
    title, text = await extract_pdf(data)
    assert title == "The Report"
    assert "Quarterly report" in text and "Revenue grew (a lot)" in text and "Page two says goodbye" in text
    assert text.index("Revenue") < text.index("Page two")
    assert "\n\n" in text


async def test_title_falls_back_to_first_line():
    title, _ = await extract_pdf(make_pdf(["", "  First real line\nsecond"]))
    assert title == "First real line"
    title, _ = await extract_pdf(make_pdf(["First real line"], title="Metadata wins"))
    assert title == "Metadata wins"


async def test_garbage_is_not_a_pdf():
    with pytest.raises(FetchError) as info:
        await extract_pdf(b"<html>this is not a pdf</html>" * 10)
    assert info.value.kind == "pdf" and str(info.value).startswith("could not read the PDF: ")


async def test_encrypted_pdf():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret text"]))))
    writer.encrypt(user_password="hunter2", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(FetchError, match="could not read the PDF: the PDF is encrypted") as info:
        await extract_pdf(out.getvalue())
    assert info.value.kind == "pdf"


async def test_blank_pdf_has_no_text():
    with pytest.raises(FetchError) as info:
        await extract_pdf(blank_pdf())
    assert info.value.kind == "pdf"
    assert str(info.value) == "the PDF has no extractable text (it may be scanned images)"


async def test_page_cap_adds_truncated_marker():
    title, text = await extract_pdf(make_pdf([f"page {i}" for i in range(pdf.MAX_PAGES + 3)]), timeout=60)
    assert title == "page 0"
    assert f"page {pdf.MAX_PAGES - 1}" in text and f"page {pdf.MAX_PAGES}" not in text
    assert text.endswith(f"[truncated] stopped after {pdf.MAX_PAGES} of {pdf.MAX_PAGES + 3} pages")


def _sleeper(pidfile: Path):
    """A stand-in child command that records its pid and hangs."""
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    return lambda timeout, max_memory_mb: [sys.executable, "-c", script]


def _assert_gone(pidfile: Path, before: set[int]) -> None:
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # neither running nor a zombie: it was killed and reaped
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.mark.slow
async def test_timeout_kills_and_reaps_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    monkeypatch.setattr(pdf, "_command", _sleeper(tmp_path / "pid"))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^PDF parsing timed out after 1 s$") as info:
        await extract_pdf(make_pdf(["x"]), timeout=1.0)
    assert info.value.kind == "pdf" and time.monotonic() - started < 5
    _assert_gone(tmp_path / "pid", before)


@pytest.mark.slow
def test_sync_timeout_kills_and_reaps_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    monkeypatch.setattr(pdf, "_command", _sleeper(tmp_path / "pid"))
    with pytest.raises(FetchError, match=r"^PDF parsing timed out after 0.5 s$"):
        extract_pdf_sync(make_pdf(["x"]), timeout=0.5)
    _assert_gone(tmp_path / "pid", before)


@pytest.mark.parametrize(
    ("megabytes", "operator", "expected"),
    [
        # 300 MB of path operators: beyond pypdf's own 75 MB inflate limit, a clean read error.
        (300, b"0 0 m ", "could not read the PDF: page 1: LimitReachedError"),
        # 10 MB of text operators inflates fine, but pypdf's parse of it needs far more than 200 MB.
        (10, b"BT /F1 12 Tf (x) Tj ET ", "PDF needs more than 200 MB to parse"),
    ],
    ids=["inflate-limit", "memory-limit"],
)
@pytest.mark.slow
async def test_flate_bomb_is_contained(megabytes: int, operator: bytes, expected: str):
    data = bomb_pdf(megabytes, operator)
    assert len(data) < 2_000_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await extract_pdf(data, timeout=30, max_memory_mb=200)
    assert info.value.kind == "pdf" and str(info.value).startswith(expected)
    assert time.monotonic() - started < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB on Linux


@pytest.mark.slow
async def test_real_child_is_killed_on_timeout():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^PDF parsing timed out after 1.5 s$"):
        await extract_pdf(bomb_pdf(10, b"BT /F1 12 Tf (x) Tj ET "), timeout=1.5, max_memory_mb=4096)
    assert time.monotonic() - started < 4
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_sync_extracts_the_same():
    data = make_pdf(["Hello sync world", "Second page"], title="Sync")
    assert extract_pdf_sync(data) == ("Sync", "Hello sync world\n\nSecond page")
    with pytest.raises(FetchError, match="no extractable text"):
        extract_pdf_sync(blank_pdf())
