"""The guarded fetch and the WebFetcher, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, urlsplit

import pytest
from conftest import closed_port
from localweb import LocalWeb
from loopback import Exchange, Loopback, Reply

import rumination.web.fetch as fetch_module
from rumination.web import guard
from rumination.web.base import FetchError
from rumination.web.fetch import FetchPolicy, guarded_get, make_client


def cookies_sent(server: Loopback, path: str) -> list[str | None]:
    """The Cookie header of each request for `path` (None where there was none)."""
    return [request.headers.get("Cookie") for request in server.requests_to(path)]


@pytest.fixture
async def client() -> AsyncIterator:
    http = make_client("rumination-tests")
    yield http
    await http.aclose()


HTML = b"<html><head><title>Tiny</title></head><body><p>A page about the printing press in Mainz.</p></body></html>"


# --- the local site through WebFetcher --------------------------------------------------------------------------------


async def test_html_page_gives_title_and_main_text_without_boilerplate(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/gutenberg.html"))
    assert page.title == "Johannes Gutenberg and movable type"
    assert "goldsmith from Mainz" in page.text
    assert "Gutenberg Bible" in page.text
    assert "Menu: Home" not in page.text
    assert "Copyright the archive" not in page.text
    assert page.content_type == "text/html"
    assert page.url == page.final_url == web.url("/gutenberg.html")
    assert page.truncated is False


async def test_index_page_drops_nav_and_footer(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/"))
    assert page.title == "Printing Press Archive"
    assert "history of printing" in page.text
    assert "Archive footer" not in page.text


async def test_plain_text_is_returned_verbatim(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/plain"))
    assert page.text == "Plain text notes: Gutenberg's press, 1440."
    assert page.content_type == "text/plain"
    assert page.title == ""


async def test_meta_charset_latin1_is_decoded(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/latin1"))
    assert "café" in page.text
    assert "écrite" in page.text
    assert "\ufffd" not in page.text
    assert "Ã©" not in page.text
    assert page.title == "Café"


@pytest.mark.parametrize(
    ("path", "kind", "needle"),
    [("/binary", "unsupported", "binary content"), ("/pdf", "pdf", "could not read the PDF")],
)
async def test_binary_is_skipped_and_a_broken_pdf_reported(web: LocalWeb, make_fetcher, path, kind, needle) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url(path))
    assert info.value.kind == kind
    assert needle in str(info.value)


async def test_http_error_status_is_reported_without_retrying(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url("/status/404"))
    assert info.value.kind == "http"
    assert "404" in str(info.value)
    assert web.hits["/status/404"] == 1


async def test_missing_page_is_http_404(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url("/no-such-page.html"))
    assert info.value.kind == "http"
    assert "404" in str(info.value)


async def test_redirects_are_followed(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/redirect/3"))
    assert page.url == web.url("/redirect/3")
    assert page.final_url == web.url("/gutenberg.html")
    assert page.title == "Johannes Gutenberg and movable type"
    assert [web.hits[f"/redirect/{n}"] for n in (3, 2, 1, 0)] == [1, 1, 1, 1]


async def test_redirect_limit_boundary(web: LocalWeb, make_fetcher) -> None:
    fetcher = make_fetcher()
    page = await fetcher.fetch(web.url("/redirect/4"))  # five redirects: exactly the limit
    assert page.final_url == web.url("/gutenberg.html")
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(web.url("/redirect/5"))  # six redirects: one too many
    assert info.value.kind == "redirects"


async def test_too_many_redirects(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url("/redirect/9"))
    assert info.value.kind == "redirects"
    assert "5" in str(info.value)
    assert web.hits["/gutenberg.html"] == 0
    assert web.hits["/redirect/3"] == 0  # stopped after 6 requests: /redirect/9 .. /redirect/4


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "http://user:pw@127.0.0.1/"])
async def test_redirect_target_syntax_is_rechecked(web: LocalWeb, make_fetcher, target: str) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url("/redirect-to?url=" + quote(target, safe="")))
    assert info.value.kind == "refused"


@pytest.mark.parametrize("location", ["http://a]/", "//[bad", "http://a[b]/"])
async def test_malformed_redirect_location_is_a_fetch_error(web: LocalWeb, make_fetcher, location: str) -> None:
    """A Location that httpx accepts but urljoin rejects must end in FetchError, not an unhandled ValueError."""
    with pytest.raises(FetchError):
        await make_fetcher().fetch(web.url("/redirect-to?url=" + quote(location, safe="")))
    assert web.hits["/redirect-to"] == 1


@pytest.mark.parametrize("url", ["http://xn--a.com/", "http://\u00e9\u200b.com/", "http://\uff21.com/"])
async def test_host_httpx_cannot_encode_is_a_fetch_error(make_fetcher, url: str) -> None:
    """With private addresses allowed there is no DNS check first; a host httpx rejects must still be a FetchError."""
    with pytest.raises(FetchError):
        await make_fetcher().fetch(url)


# --- the guard inside guarded_get -------------------------------------------------------------------------------------


async def test_private_address_is_refused_before_any_request(web: LocalWeb, client) -> None:
    policy = FetchPolicy(allow_private=False)
    for url in (web.url("/gutenberg.html"), web.url("/redirect/1"), web.base.replace("127.0.0.1", "localhost") + "/"):
        with pytest.raises(FetchError) as info:
            await guarded_get(client, url, policy)
        assert info.value.kind == "refused"
        assert "private or local" in str(info.value)
    assert sum(web.hits.values()) == 0


async def test_default_fetcher_refuses_the_local_site(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher(allow_private_network=False).fetch(web.url("/gutenberg.html"))
    assert info.value.kind == "refused"
    assert sum(web.hits.values()) == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:{port}/gutenberg.html",
        "http://localhost:{port}/gutenberg.html",
        "http://2130706433:{port}/gutenberg.html",
        "http://127.0.0.1:{port}/gutenberg.html",
    ],
)
async def test_every_redirect_hop_is_rechecked(web: LocalWeb, client, monkeypatch, target: str) -> None:
    """Treat only the first URL (the redirector) as public; the guard must refuse the private hop it points to."""
    real_check = guard.check_url
    start = web.url("/redirect-to?url=" + quote(target.format(port=urlsplit(web.base).port), safe=""))

    async def check_url(url: str, *, allow_private: bool, resolver=None) -> str:
        if url == start:
            return "127.0.0.1"
        return await real_check(url, allow_private=allow_private, resolver=resolver)

    monkeypatch.setattr(fetch_module, "check_url", check_url)
    with pytest.raises(FetchError) as info:
        await guarded_get(client, start, FetchPolicy(allow_private=False))
    assert info.value.kind == "refused"
    assert web.hits["/redirect-to"] == 1
    assert web.hits["/gutenberg.html"] == 0


# --- retries ---------------------------------------------------------------------------------------------------------


async def test_transient_503_recovers_by_retrying(web: LocalWeb, make_fetcher) -> None:
    page = await make_fetcher().fetch(web.url("/flaky?fail=1"))
    assert "Recovered page text" in page.text
    assert web.hits["/flaky"] == 2


async def test_persistent_503_fails_after_retries(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(web.url("/flaky?fail=5"))
    assert info.value.kind == "http"
    assert "503" in str(info.value)
    assert web.hits["/flaky"] == 3  # one try and two retries


async def test_retry_after_is_capped(web: LocalWeb, make_fetcher, monkeypatch) -> None:
    monkeypatch.setattr(fetch_module, "MAX_RETRY_AFTER", 0.2)
    started = time.monotonic()
    page = await make_fetcher().fetch(web.url("/flaky?fail=1&retry_after=3600"))
    assert time.monotonic() - started < 5
    assert "Recovered page text" in page.text
    assert web.hits["/flaky"] == 2


async def test_retry_after_is_honoured_below_the_cap(web: LocalWeb, make_fetcher) -> None:
    started = time.monotonic()
    await make_fetcher().fetch(web.url("/flaky?fail=1&retry_after=1"))
    assert time.monotonic() - started >= 0.8
    assert web.hits["/flaky"] == 2


async def test_server_error_500_is_retried(web: LocalWeb, client) -> None:
    with pytest.raises(FetchError) as info:
        await guarded_get(client, web.url("/status/500"), FetchPolicy(allow_private=True, retries=1))
    assert info.value.kind == "http"
    assert "500" in str(info.value)
    assert web.hits["/status/500"] == 2


# --- size, time and network limits ------------------------------------------------------------------------------------


async def test_declared_content_length_over_the_cap_is_refused(web: LocalWeb, make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher(fetch_max_bytes=100_000).fetch(web.url("/big?n=300000"))
    assert info.value.kind == "too_large"
    assert "100,000" in str(info.value)


async def test_page_under_the_cap_is_not_truncated(web: LocalWeb, client) -> None:
    raw = await guarded_get(client, web.url("/big?n=50000"), FetchPolicy(allow_private=True, max_bytes=100_000))
    assert raw.truncated is False
    assert len(raw.body) == 50_000 + len(b"<html><body><p></p></body></html>")


async def test_endless_chunked_body_is_cut_at_the_cap(loopback, make_fetcher) -> None:
    def endless(exchange: Exchange) -> None:
        def chunks() -> Iterator[bytes]:
            yield b"<html><head><title>Endless</title></head><body><p>"
            for _ in range(4096):  # 64 MiB at most, so the thread ends even if nobody hangs up
                yield b"printing press " * 1092

        exchange.send_chunked(chunks())

    server = loopback({"/endless": endless})
    started = time.monotonic()
    page = await make_fetcher(fetch_max_bytes=20_000).fetch(server.url("/endless"))
    assert time.monotonic() - started < 20
    assert page.truncated is True
    assert "printing press" in page.text
    body, marker = page.text.rsplit("\n\n", 1)
    assert len(body) <= 20_000 and marker.startswith("[truncated")


async def test_raw_body_is_cut_to_exactly_the_cap(loopback, client) -> None:
    server = loopback({"/stream": lambda ex: ex.send_chunked([b"a" * 700, b"b" * 700], "text/plain")})
    raw = await guarded_get(client, server.url("/stream"), FetchPolicy(allow_private=True, max_bytes=1000))
    assert raw.truncated is True
    assert raw.body == b"a" * 700 + b"b" * 300


async def test_body_of_exactly_the_cap_is_not_truncated(loopback, client) -> None:
    server = loopback({"/exact": Reply(200, b"x" * 1000, "text/plain")})
    raw = await guarded_get(client, server.url("/exact"), FetchPolicy(allow_private=True, max_bytes=1000))
    assert raw.body == b"x" * 1000
    assert raw.truncated is False  # nothing was cut


async def test_utf8_page_cut_inside_a_character_still_decodes(loopback, make_fetcher) -> None:
    """The byte cap can split a multi-byte character; the rest of the page must not turn into mojibake."""
    cap = 10_000
    unit = "The printing press changed Europe; café culture followed. ".encode()
    body = unit * (2 * cap // len(unit))
    cut = body.index("é".encode(), cap - len(unit)) + 1  # just after the first byte of an é
    body = b"-" * (cap - cut) + body  # shift so the cap falls there
    assert body[cap - 1] == 0xC3 and body[cap] == 0xA9

    server = loopback({"/utf8": lambda ex: ex.send_chunked([body], "text/plain; charset=utf-8")})
    page = await make_fetcher(fetch_max_bytes=cap).fetch(server.url("/utf8"))
    assert page.truncated is True
    assert "café culture" in page.text
    assert "Ã" not in page.text


async def test_slow_server_times_out(web: LocalWeb, make_fetcher) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await make_fetcher(fetch_timeout=1).fetch(web.url("/slow?delay=3"))
    assert time.monotonic() - started < 3
    assert info.value.kind == "timeout"


async def test_closed_port_is_a_network_error(make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(f"http://127.0.0.1:{closed_port()}/")
    assert info.value.kind == "network"
    assert str(info.value) == "network error: the connection was refused"  # plain words, no library internals


async def test_broken_gzip_is_a_fetch_error(loopback, make_fetcher) -> None:
    """A body that fails to decompress must end in FetchError, not an unhandled httpx.DecodingError."""
    server = loopback({"/gz": Reply(200, b"this is not gzip" * 8, "text/plain", {"Content-Encoding": "gzip"})})
    with pytest.raises(FetchError):
        await make_fetcher().fetch(server.url("/gz"))


async def test_gzip_body_is_decoded(loopback, make_fetcher) -> None:
    server = loopback({"/gz": Reply(200, gzip.compress(HTML), "text/html", {"Content-Encoding": "gzip"})})
    page = await make_fetcher().fetch(server.url("/gz"))
    assert "printing press in Mainz" in page.text


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (HTML, None, "text/html"),
        (HTML, "application/octet-stream", "text/html"),
        (b"Just a plain note about movable type.", None, "text/plain"),
    ],
)
async def test_missing_or_generic_content_type_is_sniffed(
    loopback, make_fetcher, body: bytes, content_type: str | None, expected: str
) -> None:
    server = loopback({"/page": Reply(200, body, content_type)})
    page = await make_fetcher().fetch(server.url("/page"))
    assert page.content_type == expected
    assert "movable type" in page.text or "printing press in Mainz" in page.text


async def test_pdf_without_content_type_is_sniffed_and_parsed(loopback, make_fetcher) -> None:
    server = loopback({"/doc": Reply(200, b"%PDF-1.7\n" + bytes(range(256)), None)})
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(server.url("/doc"))
    assert info.value.kind == "pdf"  # routed to the PDF parser, which finds it broken
    assert "could not read the PDF" in str(info.value)


async def test_page_without_text_is_empty(loopback, make_fetcher) -> None:
    server = loopback({"/blank": Reply(200, b"   \n  ", "text/plain")})
    with pytest.raises(FetchError) as info:
        await make_fetcher().fetch(server.url("/blank"))
    assert info.value.kind == "empty"


# --- no ambient authority: cookies, proxies ---------------------------------------------------------------------------


_set_cookie = Reply(200, HTML, headers={"Set-Cookie": "sid=secret; Path=/"})


def _echo(exchange: Exchange) -> None:
    exchange.send(200, f"cookie header: {exchange.headers.get('Cookie')}".encode(), "text/plain")


async def test_cookies_are_not_sent_back(loopback, make_fetcher) -> None:
    server = loopback({"/set": _set_cookie, "/echo": _echo})
    fetcher = make_fetcher()
    await fetcher.fetch(server.url("/set"))
    page = await fetcher.fetch(server.url("/echo"))
    assert page.text == "cookie header: None"
    assert cookies_sent(server, "/echo") == [None]


async def test_cookies_are_not_carried_along_a_redirect(loopback, make_fetcher) -> None:
    redirect = Reply(302, b"", None, {"Location": "/echo", "Set-Cookie": "sid=secret; Path=/"})
    server = loopback({"/go": redirect, "/echo": _echo})
    page = await make_fetcher().fetch(server.url("/go"))
    assert page.text == "cookie header: None"


async def test_cookies_are_not_sent_on_a_retry(loopback, make_fetcher) -> None:
    def flaky(exchange: Exchange) -> None:
        if exchange.hit == 1:
            exchange.send(503, b"busy", headers={"Set-Cookie": "sid=secret; Path=/", "Retry-After": "0"})
        else:
            exchange.send(200, HTML)

    server = loopback({"/flaky": flaky})
    await make_fetcher().fetch(server.url("/flaky"))
    assert cookies_sent(server, "/flaky") == [None, None]


async def test_cookies_from_a_failed_fetch_do_not_leak_into_the_next(loopback, make_fetcher) -> None:
    busy = Reply(503, b"busy", headers={"Set-Cookie": "sid=secret; Path=/", "Retry-After": "0"})
    server = loopback({"/busy": busy, "/echo": _echo})
    fetcher = make_fetcher()
    with pytest.raises(FetchError):
        await fetcher.fetch(server.url("/busy"))
    page = await fetcher.fetch(server.url("/echo"))
    assert page.text == "cookie header: None"


async def test_proxy_environment_is_ignored(web: LocalWeb, make_fetcher, monkeypatch) -> None:
    dead_proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    page = await make_fetcher().fetch(web.url("/gutenberg.html"))
    assert page.title == "Johannes Gutenberg and movable type"
    assert web.hits["/gutenberg.html"] == 1


async def test_user_agent_is_sent(loopback, make_fetcher) -> None:
    server = loopback({"/page": Reply(200, HTML)})
    await make_fetcher(user_agent="RuminationTest/9").fetch(server.url("/page"))
    request, *_ = server.requests
    assert request.headers["User-Agent"] == "RuminationTest/9"
    assert "Authorization" not in request.headers


# --- URL normalisation ------------------------------------------------------------------------------------------------


async def test_bare_domain_is_fetched_over_https_and_guarded(make_fetcher) -> None:
    with pytest.raises(FetchError) as info:
        await make_fetcher(allow_private_network=False).fetch("localhost/admin")
    assert info.value.kind == "refused"
