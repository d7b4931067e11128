"""Hostile pages against decoding and extraction: charset names, decoded size, extraction time and memory limits."""

from __future__ import annotations

import asyncio
import bz2
import codecs
import functools
import os
import signal
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Loopback, Reply

from rumination.web import extract
from rumination.web.base import Page
from rumination.web.extract import MAX_HTML_CHARS, decode_body, plain_text, web_codec
from rumination.web.fetcher import WebFetcher
from rumination.web.worker import WorkerFailed, WorkerPool

# Codec names Python's registry resolves that are not text encodings of the web: compression, binary-to-text,
# escapes and transforms (each decodes bytes to something else than a page's text, or raises), and names that raise.
DANGEROUS = [
    "zlib_codec",
    "zlib",
    "bz2",
    "bz2_codec",
    "base64",
    "base64_codec",
    "hex",
    "hex_codec",
    "uu",
    "uu_codec",
    "quopri",
    "rot13",
    "rot_13",
    "idna",
    "punycode",
    "unicode_escape",
    "raw_unicode_escape",
    "utf-7",
    "undefined",
    "charmap",
    "mbcs",
    "no-such-codec",
    "",
    "../../etc/passwd",
    "utf-8\x00",
]
TEXT = "Grüße aus Mainz: Gutenbergs Druckerpresse veränderte Europa, schrieb der Chronist über die Werkstatt."
PAGE = f"<html><head>{{meta}}<title>Mainz</title></head><body><article><h1>Mainz</h1><p>{TEXT}</p></article></body>"


BOMBS = ["zlib_codec", "bz2"]


@functools.cache
def bomb(codec: str) -> bytes:
    """A small body that `codec` would expand to 64 MB."""
    payload = b"<p>" + b"a" * 64_000_000 + b"</p>"
    return zlib.compress(payload, 9) if codec == "zlib_codec" else bz2.compress(payload, 9)


@pytest.fixture
def make_fetcher(make_fetcher: Callable[..., WebFetcher]) -> Callable[..., WebFetcher]:
    """conftest's fetcher factory, without robots.txt or the page cache unless asked."""
    return lambda **settings: make_fetcher(**{"robots_txt": False, "page_cache": False, **settings})


async def with_lag(work: Awaitable[Any]) -> tuple[Any, float, float]:
    """Await `work` while a 10 ms ticker runs; return its result, the seconds it took and the ticker's worst lag."""
    worst, done = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            expected = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - expected)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        done = True
        await tick
    return result, time.perf_counter() - started, worst


# --- charset names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DANGEROUS)
def test_a_non_text_codec_name_never_decodes(name: str) -> None:
    body = PAGE.format(meta="").encode()
    assert decode_body(body, name) == body.decode()
    assert decode_body(PAGE.format(meta=f'<meta charset="{name}">').encode(), None).count(TEXT) == 1


@pytest.mark.parametrize("name", BOMBS)
def test_a_compression_bomb_named_as_charset_decodes_to_at_most_its_own_size(name: str) -> None:
    body = bomb(name)
    assert len(body) < 100_000
    for text in (decode_body(body, name), decode_body(b'<meta charset="' + name.encode() + b'">' + body, None)):
        assert isinstance(text, str) and len(text) <= len(body) + 30


# A NUL cannot be sent in a header (the HTTP client refuses it before any page is read): that pair is not a case.
NAMED = [
    (place, name)
    for place in ("header", "meta", "http-equiv")
    for name in DANGEROUS
    if place != "header" or "\x00" not in name
]


@pytest.mark.parametrize(("place", "name"), NAMED)
async def test_a_page_naming_a_non_text_codec_is_read_as_text(loopback, make_fetcher, place: str, name: str) -> None:
    meta = {"meta": f'<meta charset="{name}">', "http-equiv": f'<meta http-equiv="Content-Type" content="text/html; '
            f'charset={name}">'}.get(place, "")  # fmt: skip
    content_type = f"text/html; charset={name}" if place == "header" else "text/html"
    server: Loopback = loopback({"/": Reply(200, PAGE.format(meta=meta).encode(), content_type)})
    page = await make_fetcher().fetch(server.url("/"))
    assert TEXT in page.text


@pytest.mark.parametrize("place", ["header", "meta"])
@pytest.mark.parametrize("name", BOMBS)
async def test_a_bomb_page_is_not_expanded(loopback, make_fetcher, place: str, name: str) -> None:
    body = bomb(name)
    if place == "meta":
        body = b'<html><head><meta charset="' + name.encode() + b'"></head><body>' + body
    content_type = f"text/html; charset={name}" if place == "header" else "text/html"
    server: Loopback = loopback({"/": Reply(200, body, content_type)})
    before = psutil.Process().memory_info().rss
    try:
        page: Page | None = await make_fetcher().fetch(server.url("/"))
    except Exception as exc:  # no readable text is a fine answer; a crash of another kind is not
        assert getattr(exc, "kind", None) == "empty", exc
        page = None
    assert page is None or len(page.text) <= len(body) + 200
    assert psutil.Process().memory_info().rss - before < 50 * 2**20


def test_the_decoded_size_is_capped() -> None:
    body = "Grüße ".encode() * 100_000
    for charset in ("utf-8", "latin1", "utf-16le", None):
        assert len(decode_body(body, charset, max_chars=1000)) == 1000
    assert len(decode_body(body, None, max_chars=10**9)) == 600_000


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300),
    name=st.sampled_from([*DANGEROUS, "utf-8", "latin1", "shift_jis", "gbk", "utf-16", "iso-2022-jp"]) | st.text(),
)
def test_any_charset_name_gives_text_no_longer_than_the_body(body: bytes, name: str) -> None:
    for meta in (False, True):
        data = b'<meta charset="' + name.encode("utf-8", "replace") + b'">' + body if meta else body
        text = decode_body(data, None if meta else name)
        assert isinstance(text, str) and len(text) <= len(data)


def test_every_web_label_maps_to_a_text_codec() -> None:
    for label, codec in extract._CODEC_BY_LABEL.items():
        assert codecs.lookup(codec)._is_text_encoding, label  # type: ignore[attr-defined]
        assert decode_body(b"abcd", label) == b"abcd".decode(codec), label
    assert len(extract._CODEC_BY_LABEL) > 200


def test_labels_follow_the_whatwg_standard() -> None:
    assert web_codec("  UTF-8\t") == "utf-8"
    assert web_codec("latin1") == web_codec("ISO-8859-1") == web_codec("ascii") == "cp1252"
    assert decode_body(b"\x93quoted\x94", "iso-8859-1") == "\u201cquoted\u201d"
    assert decode_body("Привет, мир".encode("cp1251"), "windows-1251") == "Привет, мир"
    assert decode_body("日本語の文章".encode("shift_jis"), "Shift_JIS") == "日本語の文章"
    assert decode_body("中文网页".encode("gb18030"), "gb2312") == "中文网页"
    for replacement in ("iso-2022-kr", "hz-gb-2312", "replacement", "x-user-defined"):
        assert web_codec(replacement) is None


def test_a_bom_wins_and_is_dropped() -> None:
    assert decode_body(codecs.BOM_UTF8 + "Grüße".encode(), "iso-8859-1") == "Grüße"
    assert decode_body(codecs.BOM_UTF16_LE + "Grüße".encode("utf-16-le"), None) == "Grüße"
    assert decode_body(b'<meta charset="utf-16">Gr\xc3\xbc\xc3\x9fe', None).endswith("Grüße")


def test_an_undeclared_or_wrong_charset_is_detected() -> None:
    russian = ("Съешь же ещё этих мягких французских булок, да выпей чаю. " * 20).encode("cp1251")
    assert "французских" in decode_body(russian, None)
    assert "французских" in decode_body(russian, "zlib_codec")
    assert "французских" in decode_body(b'<meta charset="rot13">' + russian, None)


# --- extraction limits ----------------------------------------------------------------------------------------------
# Stand-ins for the extractor, run in the worker (pickled by reference, so defined at module level; the worker imports
# this module within the task's time, hence a limit of 2 s for them).


def spin(html: str, url: str) -> tuple[str, str]:
    """An extractor that never finishes."""
    while True:
        pass


def hog(html: str, url: str) -> tuple[str, str]:
    """An extractor that wants 4 GB."""
    blocks = [bytearray(2**28) for _ in range(16)]
    return "", str(len(blocks))


def crash(html: str, url: str) -> tuple[str, str]:
    """An extractor whose process dies."""
    os.kill(os.getpid(), signal.SIGKILL)
    return "", ""


def explode(html: str, url: str) -> tuple[str, str]:
    """An extractor that raises."""
    raise RecursionError("maximum recursion depth exceeded")


def pid(html: str, url: str) -> tuple[str, str]:
    """An extractor that tells which process it ran in."""
    return "", str(os.getpid())


def nap(html: str, url: str) -> tuple[str, str]:
    """An extractor that takes a moment, then tells which process it ran in."""
    time.sleep(0.3)
    return pid(html, url)


ARTICLE = (
    "<html><head><title>Printing</title><style>.x{color:red}</style><script>var secret = 1;</script></head><body>"
    "<nav>Home</nav><article><h1>Printing</h1><p>The press spread across Europe within decades.</p></article>"
    "</body></html>"
)


def nested_lists(size: int) -> bytes:
    """A page of lists nested 100 deep: trafilatura needs several seconds per megabyte of it."""
    unit = "<ul><li>" * 100 + "deeply nested list item " + "</li></ul>" * 100
    return ("<html><head><title>Lists</title></head><body><article>" + unit * (size // len(unit))).encode()


@pytest.mark.parametrize(
    ("extractor", "reason"),
    [
        (spin, "timed out after 2 s"),
        (hog, "needed more than 256 MB"),
        (crash, "the worker died (SIGKILL"),
        (explode, "RecursionError: maximum recursion depth exceeded"),
    ],
    ids=["time", "memory", "death", "exception"],
)
async def test_a_failing_extractor_falls_back_to_plain_text_without_blocking_the_loop(
    loopback, make_fetcher, monkeypatch: pytest.MonkeyPatch, extractor: Callable[..., Any], reason: str
) -> None:
    monkeypatch.setattr(extract, "extract_html", extractor)
    server: Loopback = loopback({"/": Reply(200, ARTICLE.encode())})
    fetcher = make_fetcher(extract_timeout=2.0, extract_max_memory_mb=256)
    page, seconds, lag = await with_lag(fetcher.fetch(server.url("/")))
    assert page.title == "Printing"
    assert "Home\nPrinting\nThe press spread across Europe within decades." in page.text
    assert "secret" not in page.text and "color" not in page.text
    assert f"[plain text: the main-text extractor failed ({reason}" in page.text
    assert seconds < 10 and lag < 0.5


async def test_a_slow_page_is_cut_off_at_the_time_limit(loopback, make_fetcher) -> None:
    server: Loopback = loopback({"/": Reply(200, nested_lists(1_000_000))})
    page, seconds, lag = await with_lag(make_fetcher(extract_timeout=1.0).fetch(server.url("/")))
    assert "deeply nested list item" in page.text
    assert "extractor failed (timed out after 1 s)" in page.text
    assert seconds < 5 and lag < 0.5


async def test_a_huge_page_is_cut_before_extraction(loopback, make_fetcher) -> None:
    paragraph = "<p>The press spread across Europe within decades, changing how ideas travelled.</p>"
    body = f"<html><body><article><h1>Start marker</h1>{paragraph * 40_000}<p>End marker</p></article></body></html>"
    assert len(body) > MAX_HTML_CHARS + 1_000_000
    server: Loopback = loopback({"/": Reply(200, body.encode())})
    page, _, lag = await with_lag(make_fetcher().fetch(server.url("/")))
    assert "Start marker" in page.text and "End marker" not in page.text
    assert page.text.endswith(f"[truncated: only the first {MAX_HTML_CHARS:,} characters of the page's HTML were read]")
    assert page.truncated and lag < 0.5


async def test_the_worker_is_replaced_after_a_timeout_and_the_killed_one_reaped(monkeypatch) -> None:
    pool = WorkerPool(1, 256)
    try:
        first = int((await pool.run(10, pid, "", ""))[1])
        with pytest.raises(WorkerFailed, match="timed out after 0.5 s"):
            await pool.run(0.5, spin, "", "")
        assert not psutil.pid_exists(first)
        second = int((await pool.run(10, pid, "", ""))[1])
        assert second != first and int((await pool.run(10, pid, "", ""))[1]) == second
    finally:
        pool.close()
    assert not psutil.pid_exists(second)


async def test_ctrl_c_at_the_terminal_leaves_the_workers_alone() -> None:
    pool = WorkerPool(1, 256)
    try:
        worker = int((await pool.run(10, pid, "", ""))[1])
        os.kill(worker, signal.SIGINT)  # what the terminal sends the whole process group
        await asyncio.sleep(0.2)
        assert int((await pool.run(10, pid, "", ""))[1]) == worker
    finally:
        pool.close()


async def test_closing_a_pool_stops_every_idle_worker() -> None:
    pool = WorkerPool(2, 256)
    slow = asyncio.gather(*(pool.run(10, nap, "", "") for _ in range(2)))  # both workers busy at once
    workers = {int(reply[1]) for reply in await slow}
    assert len(workers) == 2
    pool.close()
    assert not any(psutil.pid_exists(worker) for worker in workers)
    with pytest.raises(WorkerFailed, match="closed"):
        pool.call(1, pid, "", "")
    with pytest.raises(WorkerFailed, match="closed"):
        pool.call(1, pid, "", "")


def test_plain_text_keeps_blocks_apart_and_drops_scripts() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?><html><head><title> A\n title </title></head><body><p>Caf&eacute;'
    html += "<br>au lait</p><script>var x;</script><ul><li>one</li><li>two</li></ul></body></html>"
    assert plain_text(html) == ("A title", "Café\nau lait\none\ntwo")


@pytest.mark.parametrize(
    "html",
    ["", "<" * 2_000_000, "<a " * 700_000 + "text", "<p>" * 700_000 + "text"],
    ids=["empty", "unclosed", "attributes", "paragraphs"],
)
def test_plain_text_takes_linear_time_on_broken_markup(html: str) -> None:
    started = time.perf_counter()
    _, text = plain_text(html)
    assert isinstance(text, str) and time.perf_counter() - started < 5
