"""URL rules (rumination/urls.py) and the import boundary between the search and web layers."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from rumination.urls import (
    find_urls,
    is_local,
    local_url,
    normalize_domain,
    normalize_url,
    parse_local_url,
    url_key,
    without_userinfo,
)

PACKAGE = Path(__file__).resolve().parent.parent / "rumination"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("example.org", "https://example.org"),
        ("example.org/a/b?c=1", "https://example.org/a/b?c=1"),
        ("  example.org/x  ", "https://example.org/x"),
        ("http://example.org", "http://example.org"),
        ("https://example.org", "https://example.org"),
        ("HTTPS://example.org", "HTTPS://example.org"),
        ("local://docs/3", "local://docs/3"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("javascript:alert(1)", "javascript:alert(1)"),
        ("localhost:8080/admin", "localhost:8080/admin"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://www.Example.org/a/", "http://example.org/a"),
        ("https://example.org/a#part", "https://example.org/a"),
        ("https://example.org/a.", "https://example.org/a"),  # sentence punctuation after a URL in a report
        ("https://example.org:8443/a", "https://EXAMPLE.org:8443/a/"),
        ("https://de.wikipedia.org/wiki/K%C3%B6ln", "https://de.wikipedia.org/wiki/Köln"),  # as a model writes it
        ("https://example.org/%7Euser/?q=%C3%A9t%C3%A9", "https://example.org/~user?q=été"),
        ("https://example.org/a%2fb", "https://example.org/a%2Fb"),
        ("https://münchen.example/a", "https://xn--mnchen-3ya.example/a"),
        ("https://ｗｗｗ.example.org./a", "https://example.org/a"),  # full-width letters, a trailing dot
        ("https://example.org/100%", "https://example.org/100%25"),  # a bare % is sent as %25
        ("https://example.org/caf%e9", "https://example.org/caf%E9"),  # not UTF-8: compared as written
    ],
)
def test_url_key_equal(a: str, b: str) -> None:
    assert url_key(a) == url_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://example.org/a?x=1", "https://example.org/a?x=2"),
        ("https://example.org:8443/a", "https://example.org/a"),
        ("https://docs.example.org/a", "https://example.org/a"),
        ("https://example.org/a%2Fb", "https://example.org/a/b"),  # an escaped / is part of one path segment
        ("https://example.org/?q=a%26b", "https://example.org/?q=a&b"),
        ("https://example.org/?q=a%2Bb", "https://example.org/?q=a+b"),
        ("https://example.org/a%3Bb", "https://example.org/a;b"),  # ; may start a path parameter
        ("https://example.org/caf%E9", "https://example.org/caf%E8"),  # Latin-1 escapes are not one page
        ("https://example.org/x%%32%46b", "https://example.org/x%2Fb"),  # a literal % does not make an escape
        ("http://[fd00::1]:8080/app", "http://[fd00::1:8080]/app"),  # an IPv6 host's last group is not the port
    ],
)
def test_url_key_different(a: str, b: str) -> None:
    assert url_key(a) != url_key(b)


@pytest.mark.parametrize(
    "url", ["http://example.org:99999/", "http://[::1/x", "http://a:port/", f"http://{'a' * 70}.example/%ZZ%C3"]
)
def test_url_key_never_raises_on_malformed_urls(url: str) -> None:
    assert isinstance(url_key(url), str)


def test_a_long_unicode_host_costs_no_idna_work() -> None:
    host = "".join(chr(0x4E00 + i) for i in range(20_000))  # punycode's work grows with the square of this
    started = time.perf_counter()
    assert url_key(f"https://{host}/x") == f"{host}/x"
    assert time.perf_counter() - started < 0.5


def test_without_userinfo() -> None:
    assert without_userinfo("http://reader:s3cr@t@searx.lan:8888/x?q=1") == "http://searx.lan:8888/x?q=1"
    assert without_userinfo("http://u:p@[fd00::1]:80/") == "http://[fd00::1]:80/"
    assert without_userinfo("https://searx.example/") == "https://searx.example/"
    assert without_userinfo("http://[::1") == "http://[::1"  # malformed: as written


def test_find_urls() -> None:
    text = "See https://a.example/x. and (https://b.example/y), 【0†t†https://c.example/z】 or [rel](/docs/page)"
    assert find_urls(text) == ["https://a.example/x", "https://b.example/y", "https://c.example/z"]
    assert find_urls(text, base="https://site.example/dir/")[-1] == "https://site.example/docs/page"


def test_a_parenthesised_part_belongs_to_the_url_and_a_lone_closing_one_does_not() -> None:
    text = "(see https://en.wikipedia.org/wiki/Mercury_(planet)), https://a.example/x) and [t](/wiki/Type_(printing))"
    wiki = "https://en.wikipedia.org/wiki/"
    assert find_urls(text) == [f"{wiki}Mercury_(planet)", "https://a.example/x"]
    assert find_urls(text, base=wiki)[-1] == f"{wiki}Type_(printing)"


def test_a_malformed_link_in_a_page_is_skipped_not_raised() -> None:
    """urljoin raises on an unclosed IPv6 host; one such link in a page must not end the run."""
    text = "[bad](http://[::1) and [good](/ok)"
    assert find_urls(text, base="https://site.example/")[-1] == "https://site.example/ok"


def test_normalize_domain_survives_a_malformed_entry() -> None:
    assert normalize_domain("https://[::1/x") == ""
    assert normalize_domain("*.Example.COM") == "example.com"


def test_local_urls() -> None:
    assert local_url("docs", 7) == "local://docs/7"
    assert parse_local_url("local://docs/7") == ("docs", 7)
    assert parse_local_url(" local://docs/7/ ") == ("docs", 7)
    for bad in ("local://../../etc/1", "local://docs/abc", "local://docs/1】", "https://docs/1", "local://a b/1"):
        assert parse_local_url(bad) is None, bad
    assert is_local("LOCAL://docs/1") and not is_local("https://example.org/local://x")


# --- the search and web layers do not import each other -----------------------------------------------------------


def _imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names: set[str] = set()
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(parts[: len(parts) - node.level]) if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("layer", "other"), [("search", "web"), ("web", "search")])
def test_search_and_web_do_not_import_each_other(layer: str, other: str) -> None:
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    offending = {
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in files
        for name in _imported_modules(path)
        if name == f"rumination.{other}" or name.startswith(f"rumination.{other}.")
    }
    assert not offending, "shared rules belong in rumination/urls.py or a module both may import"


def test_the_import_walk_sees_lazy_and_relative_imports() -> None:
    """The boundary test would catch an import hidden in a function or written relative to the package."""
    assert "rumination.web.base" in _imported_modules(PACKAGE / "web" / "pdf.py")  # inside a function there
    source = "def f():\n    from ..web import fetch\n    from .base import SearchHit\n"
    names = _imported_modules(PACKAGE / "search" / "example.py", source)
    assert {"rumination.web.fetch", "rumination.search.base"} <= names


def test_domain_lists_do_not_filter_local_documents():
    from rumination.urls import domain_allowed, local_url

    url = local_url("papers", 3)
    assert domain_allowed(url, ["example.org"], []) and domain_allowed(url, [], ["papers"])
    assert not domain_allowed("https://papers/3", ["example.org"], [])


def test_reports_citing_local_documents_are_checked_like_web_pages():
    from datetime import UTC, datetime

    from rumination.citations import check_citations, mark_cited, unverified_urls
    from rumination.results import Source
    from rumination.urls import url_key

    read = Source(id=1, url="local://papers/1", final_url="local://papers/1", title="t", fetched_at=datetime.now(UTC))
    report = "See [1](local://papers/1) and [2](local://papers/99), and https://papers/1, and local://papers/1."
    citations = check_citations(report, [read], [])
    assert [(c.form, c.source_id) for c in citations] == [("link", 1), ("link", None), ("url", None), ("url", 1)]
    assert mark_cited([read], citations)[0].cited
    assert unverified_urls(citations) == ["https://papers/1", "local://papers/99"]
    assert url_key("local://papers/1/") != url_key("https://papers/1")


def test_a_resumed_run_keys_what_an_older_version_recorded_as_shown() -> None:
    from rumination.browser import Provenance

    seen = Provenance()
    seen.restore(
        {"de.wikipedia.org/wiki/K%C3%B6ln": True, "local://papers/3": False}, {"xn--mnchen-3ya.example": False}
    )
    assert seen.leads_inside("https://de.wikipedia.org/wiki/Köln") and "local://papers/3" in seen
    assert "https://münchen.example/" in seen and "https://de.wikipedia.org/wiki/Bonn" not in seen
