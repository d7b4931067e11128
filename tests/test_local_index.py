"""Local-document search: building an FTS5 index of a real folder, searching it and opening its documents."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.local import documents
from rumination.local.build import IndexStats, build_index
from rumination.local.engine import LocalEngine, fts_query
from rumination.local.fetcher import LocalFetcher
from rumination.local.store import index_file
from rumination.search.base import SearchEngine, SearchError
from rumination.web.base import Fetcher, FetchError

HAS_PDF = importlib.util.find_spec("rumination.web.pdf") is not None

NAV = """<header><nav><a href="/">Home</a> | <a href="/about.html">About</a> | <a href="/webring">Webring</a>
<a href="/contact">Contact the Zeppelinhangar staff</a></nav></header>"""
FOOTER = """<footer><p>Copyright 2024 Acme Webring. All rights reserved. Zeppelinhangar mirror.</p>
<ul><li><a href="/privacy">Privacy</a></li><li><a href="/terms">Terms</a></li></ul></footer>"""


def html_page(title: str, heading: str, paragraphs: list[str]) -> str:
    """A page with boilerplate navigation and footer around an article."""
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body>{NAV}
<main><article><h1>{heading}</h1>
{body}
</article></main>
{FOOTER}</body></html>"""


SPICE = html_page(
    "Cloves of the Zanzibar archipelago",
    "Cloves of the Zanzibar archipelago",
    [
        "The Zanzibar archipelago lies off the coast of East Africa and was once the world's largest producer of "
        "cloves. Clove plantations spread across Unguja and Pemba during the nineteenth century.",
        "Cloves are the dried flower buds of the clove tree. Harvesters pick the buds by hand before they open, "
        "then dry them in the sun on woven mats until they turn dark brown.",
        "Today the islands export cloves, nutmeg and cinnamon, and spice tours are a popular attraction for "
        "visitors who want to see how the plants are grown and processed.",
    ],
)
LEAVES = html_page(
    "Photosynthesis explained",
    "Photosynthesis explained",
    [
        "Photosynthesis is the process by which green plants turn light, water and carbon dioxide into sugar. "
        "The green pigment chlorophyll absorbs red and blue light and reflects green light.",
        "Inside the chloroplast, the light reactions split water and release oxygen, while the Calvin cycle "
        "fixes carbon into three-carbon sugars that the plant uses to build starch and cellulose.",
        "Some plants, such as maize, use a variant called C4 photosynthesis that concentrates carbon dioxide "
        "and works better in hot, dry climates. A single pulsar of sunlight is not needed.",
    ],
)
STARS = """---
layout: post
---

# Neutron stars and pulsars

A pulsar is a rotating neutron star that emits beams of radiation. As the pulsar spins, its beams sweep
across space like a lighthouse, so observers see regular pulses.

## Discovery

The first pulsar was discovered in 1967 by Jocelyn Bell Burnell. Millisecond pulsar timing is so precise
that pulsar timing arrays are used to search for gravitational waves. Every pulsar slowly spins down.
"""
WATER_BEARS = """# Tardigrade

Also known as water bears, these microscopic animals survive being dried out for decades.
They live in moss and lichen and can endure extreme cold, heat and radiation.
"""
MOSS = """Notes on moss gardens

Mosses grow best in shade on damp soil. A tardigrade may live among the leaves, but the gardener
rarely notices the tiny animals that share the garden with the moss plants and liverworts.
"""
RST = """Sourdough baking
================

A sourdough starter is a culture of wild yeast and lactic acid bacteria. Feed the starter with flour
and water every day, and bake when it doubles in size after feeding.
"""
HIDDEN = "# Secret\n\nThe word xylophonist appears only in hidden files.\n"
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa" * 40


def make_pdf(title: str, lines: list[str]) -> bytes:
    """A small, valid one-page PDF with real text and an Info title."""
    content = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >>"
        " /Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        f"<< /Title ({title}) >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


PDF = make_pdf("Quasar survey", ["Quasars are the luminous cores of distant galaxies.", "Quasar light is redshifted."])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder of real documents, some of which must not be indexed."""
    root = tmp_path / "my-documents"
    files: dict[str, str | bytes] = {
        "site/spice.html": SPICE,
        "site/leaves.htm": LEAVES,
        "notes/stars.md": STARS,
        "notes/water-bears.markdown": WATER_BEARS,
        "moss.txt": MOSS,
        "baking.rst": RST,
        "survey.pdf": PDF,
        "broken.txt": BINARY,
        "picture.png": BINARY,
        ".hidden.md": HIDDEN,
        ".private/deep/secret.md": HIDDEN,
        "notes/.draft.txt": HIDDEN,
    }
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path / "data")


def build(corpus: Path, config: Config, name: str = "docs") -> tuple[IndexStats, list[str]]:
    messages: list[str] = []
    return build_index(corpus, name, config.data_dir, messages.append), messages


async def titles(engine: LocalEngine, query: str, n: int = 10) -> list[str]:
    return [hit.title for hit in await engine.search(query, n)]


# --- building ----------------------------------------------------------------------------------------------------


def test_build_counts_and_skips(corpus: Path, config: Config):
    stats, messages = build(corpus, config)
    # spice, leaves, stars, water-bears, moss, baking (+ the PDF when PDF support exists); broken.txt is skipped.
    assert stats.files_indexed == (7 if HAS_PDF else 6)
    assert stats.files_updated == stats.files_indexed
    assert stats.files_skipped == (1 if HAS_PDF else 2)
    assert stats.files_removed == 0
    assert stats.path == index_file(config.data_dir, "docs") == config.data_dir / "indexes" / "docs.sqlite3"
    assert stats.path.is_file()
    assert stats.seconds >= 0
    assert any("broken.txt" in m and "binary" in m for m in messages)
    assert not any("picture.png" in m or "hidden" in m or "secret" in m or "draft" in m for m in messages)
    assert not list(stats.path.parent.glob("*.tmp")), "no temporary files are left behind"


async def test_hidden_files_and_dirs_are_not_indexed(corpus: Path, config: Config):
    build(corpus, config)
    assert await LocalEngine(config, "docs").search("xylophonist", 5) == []


async def test_pdf_indexed_or_skipped(corpus: Path, config: Config):
    _, messages = build(corpus, config)
    hits = await LocalEngine(config, "docs").search("quasar", 5)
    if HAS_PDF:
        assert len(hits) == 1
        page = await LocalFetcher(config).fetch(hits[0].url)
        assert "luminous cores" in page.text
        assert page.content_type == "application/pdf"
    else:
        assert hits == []
        assert any("survey.pdf" in m and "PDF" in m for m in messages)
        assert any(m.startswith("PDF support is unavailable") for m in messages)


async def test_pdf_extractor_is_called_with_limits(corpus: Path, config: Config, monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[bytes, dict]] = []

    def extract_pdf_sync(data: bytes, *, timeout: float = 30.0, max_memory_mb: int = 1024) -> tuple[str, str]:
        calls.append((data, {"timeout": timeout, "max_memory_mb": max_memory_mb}))
        return "", "Stub quasar text\nfrom the stub extractor."

    stub = types.ModuleType("rumination.web.pdf")
    stub.extract_pdf_sync = extract_pdf_sync  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rumination.web.pdf", stub)
    stats = build_index(corpus, "docs", config.data_dir, pdf_timeout=5.0, pdf_max_memory_mb=256)
    assert stats.files_indexed == 7
    assert calls == [(PDF, {"timeout": 5.0, "max_memory_mb": 256})]
    hits = await LocalEngine(config, "docs").search("quasar", 5)
    assert [h.title for h in hits] == ["Stub quasar text"]


def test_failing_pdf_is_skipped(corpus: Path, config: Config, monkeypatch: pytest.MonkeyPatch):
    def extract_pdf_sync(data: bytes, *, timeout: float = 30.0, max_memory_mb: int = 1024) -> tuple[str, str]:
        raise FetchError("unsupported", "the PDF is encrypted")

    stub = types.ModuleType("rumination.web.pdf")
    stub.extract_pdf_sync = extract_pdf_sync  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rumination.web.pdf", stub)
    stats, messages = build(corpus, config)
    assert stats.files_indexed == 6
    assert "skipped survey.pdf: the PDF is encrypted" in messages


def test_large_files_are_skipped(corpus: Path, config: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 1000)
    stats, messages = build(corpus, config)
    assert stats.files_indexed == (5 if HAS_PDF else 4)  # the HTML pages (and broken.txt) are over 1000 bytes
    for name in ("site/spice.html", "site/leaves.htm", "broken.txt"):
        assert any(m.startswith(f"skipped {name}: larger than") for m in messages)


def test_symlinks_leaving_the_folder_are_skipped(corpus: Path, config: Config, tmp_path: Path):
    outside = tmp_path / "outside.md"
    outside.write_text("# Outside\n\nThe word quokkaburrow lives outside the folder.\n")
    (corpus / "link-out.md").symlink_to(outside)
    (corpus / "link-in.md").symlink_to(corpus / "notes" / "stars.md")
    (corpus / "dir-out").symlink_to(tmp_path, target_is_directory=True)
    stats, messages = build(corpus, config)
    assert stats.files_indexed == (8 if HAS_PDF else 7)  # link-in.md counts, link-out.md and dir-out do not
    assert not any("link-out" in m or "dir-out" in m for m in messages)


def test_not_a_directory(tmp_path: Path, config: Config):
    with pytest.raises(ConfigError, match="not a directory"):
        build_index(tmp_path / "missing", "docs", config.data_dir)


# --- searching -----------------------------------------------------------------------------------------------------


async def test_distinctive_terms_find_the_right_documents(corpus: Path, config: Config):
    build(corpus, config)
    engine = LocalEngine(config, "docs")
    assert isinstance(engine, SearchEngine)
    assert engine.name == "local"
    assert await titles(engine, "cloves") == ["Cloves of the Zanzibar archipelago"]
    assert await titles(engine, "chlorophyll") == ["Photosynthesis explained"]
    assert await titles(engine, "sourdough") == ["Sourdough baking"]
    assert await titles(engine, "liverworts") == ["Notes on moss gardens"]
    # Porter stemming: "pulsars" matches "pulsar"; the page that says it many times ranks first (BM25).
    assert await titles(engine, "pulsars") == ["Neutron stars and pulsars", "Photosynthesis explained"]
    # OR semantics: each term brings its documents; more matching terms rank higher.
    both = await titles(engine, "cloves sourdough starter")
    assert both == ["Sourdough baking", "Cloves of the Zanzibar archipelago"]
    everything = await titles(engine, "pulsar cloves chlorophyll")
    assert len(everything) == 3
    assert await titles(engine, "pulsar cloves chlorophyll", n=2) == everything[:2]
    await engine.aclose()


async def test_title_match_outranks_body_match(corpus: Path, config: Config):
    build(corpus, config)
    assert await titles(LocalEngine(config, "docs"), "tardigrade") == ["Tardigrade", "Notes on moss gardens"]


async def test_html_boilerplate_is_not_indexed(corpus: Path, config: Config):
    build(corpus, config)
    assert await LocalEngine(config, "docs").search("zeppelinhangar", 5) == []


async def test_snippets_are_plain_text(corpus: Path, config: Config):
    build(corpus, config)
    hits = await LocalEngine(config, "docs").search("Discovery Bell Burnell", 5)
    assert hits[0].title == "Neutron stars and pulsars"
    assert "Jocelyn Bell Burnell" in hits[0].snippet
    assert not any(mark in hits[0].snippet for mark in ("#", "<b>", "\n", "**"))
    assert len(hits[0].snippet.split()) <= 32


async def test_snippets_do_not_repeat_the_title(corpus: Path, config: Config):
    build(corpus, config)
    engine = LocalEngine(config, "docs")
    seen = 0
    for query in ("neutron stars", "tardigrade", "sourdough baking", "cloves zanzibar", "photosynthesis", "moss notes"):
        for hit in await engine.search(query, 5):
            assert hit.title.casefold() not in hit.snippet.casefold(), (query, hit)
            assert hit.snippet and "---" not in hit.snippet, "the snippet shows the body, without front matter"
            seen += 1
    assert seen >= 6


@pytest.mark.parametrize(
    "query",
    [
        '"NEAR(',
        "a AND OR",
        "*",
        "-x",
        '""',
        '"',
        "NOT",
        "title:cloves",
        "^cloves",
        "cloves*",
        "((((",
        "' OR 1=1 --",
        "NEAR(cloves sugar, 2)",
        "{title body}: cloves",
        "x\x00y",
        "\u200b",
        "",
        "   ",
        "- + * ^ : ( ) { } [ ] \" ' ; ,",
    ],
)
async def test_hostile_queries_never_raise(corpus: Path, config: Config, query: str):
    build(corpus, config)
    hits = await LocalEngine(config, "docs").search(query, 5)
    assert isinstance(hits, list)


async def test_operators_are_searched_as_words(corpus: Path, config: Config):
    build(corpus, config)
    engine = LocalEngine(config, "docs")
    assert await titles(engine, '(cloves)" OR') == ["Cloves of the Zanzibar archipelago"]
    assert await engine.search("title:cloves", 5) == []  # one phrase, "title cloves", that no page contains
    assert await titles(engine, '"NEAR( chlorophyll') == ["Photosynthesis explained"]
    assert await engine.search("*", 5) == []
    assert await engine.search("cloves", 0) == []


def test_fts_query_quotes_every_term():
    assert fts_query('say "hi" NEAR( x') == '"say" OR """hi""" OR "NEAR(" OR "x"'
    assert fts_query("Cloves cloves CLOVES") == '"Cloves"'
    assert fts_query("* - ( )") == ""
    assert fts_query("a\x00b") == '"ab"'


async def test_hits_never_reveal_file_paths(corpus: Path, config: Config, tmp_path: Path):
    build(corpus, config)
    engine = LocalEngine(config, "docs")
    for query in ["cloves", "chlorophyll", "pulsar", "tardigrade moss", "sourdough", "quasar", "the and of"]:
        for hit in await engine.search(query, 10):
            assert hit.url.startswith("local://docs/")
            dumped = hit.model_dump_json()
            for secret in (str(tmp_path), corpus.name, "site/", "notes/", ".html", ".md", ".txt", ".rst", ".pdf"):
                assert secret not in dumped


async def test_missing_index_names_the_build_command(config: Config):
    with pytest.raises(ConfigError) as info:
        LocalEngine(config, "papers")
    assert "no local index named papers" in str(info.value)
    assert "rumination index DIR --name papers" in str(info.value)


@pytest.mark.parametrize("name", ["", "../etc", "a b", "x.y", "a/b", "ünï", "a\x00"])
def test_bad_index_names(config: Config, corpus: Path, name: str):
    with pytest.raises(ConfigError, match="bad index name"):
        index_file(config.data_dir, name)
    with pytest.raises(ConfigError, match="bad index name"):
        LocalEngine(config, name)
    with pytest.raises(ConfigError, match="bad index name"):
        build_index(corpus, name, config.data_dir)


async def test_corrupt_index_raises_search_error(config: Config):
    path = index_file(config.data_dir, "junk")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(SearchError, match="rumination index DIR --name junk"):
        await LocalEngine(config, "junk").search("anything", 5)


# --- opening documents ---------------------------------------------------------------------------------------------


async def test_fetcher_returns_the_document(corpus: Path, config: Config, tmp_path: Path):
    build(corpus, config)
    fetcher = LocalFetcher(config)
    assert isinstance(fetcher, Fetcher)
    assert fetcher.name == "local"
    [hit] = await LocalEngine(config, "docs").search("chlorophyll", 5)
    page = await fetcher.fetch(hit.url)
    assert page.url == page.final_url == hit.url
    assert page.title == "Photosynthesis explained"
    assert "Calvin cycle" in page.text
    assert "Zeppelinhangar" not in page.text
    assert page.content_type == "text/markdown"
    assert str(tmp_path) not in page.model_dump_json()
    [moss] = await LocalEngine(config, "docs").search("liverworts", 5)
    assert (await fetcher.fetch(moss.url)).content_type == "text/plain"
    await fetcher.aclose()


@pytest.mark.parametrize(
    ("url", "kind", "message"),
    [
        ("local://docs/99999", "not_found", "the local index docs has no document 99999"),
        ("local://other/1", "not_found", "there is no local index named other (build it with rumination index)"),
        ("local://docs/abc", "not_found", "not a local document address (local://NAME/ID)"),
        ("local://../../etc/1", "not_found", "not a local document address (local://NAME/ID)"),
        ("https://example.org/", "refused", None),
        ("file:///etc/passwd", "refused", None),
    ],
)
async def test_fetcher_errors(corpus: Path, config: Config, url: str, kind: str, message: str | None):
    build(corpus, config)
    with pytest.raises(FetchError) as info:
        await LocalFetcher(config).fetch(url)
    assert info.value.kind == kind
    if message:
        assert str(info.value) == message


# --- rebuilding ----------------------------------------------------------------------------------------------------


async def test_incremental_rebuild(corpus: Path, config: Config, monkeypatch: pytest.MonkeyPatch):
    build(corpus, config)
    engine = LocalEngine(config, "docs")
    [spice] = await engine.search("cloves", 5)

    moss = corpus / "moss.txt"
    moss.write_text("Notes on moss gardens\n\nNow about hornworts and a capybara sanctuary.\n")
    os.utime(moss, (1_000_000, 1_000_000))
    (corpus / "site" / "leaves.htm").unlink()
    (corpus / "new.md").write_text("# Axolotl care\n\nAn axolotl needs cool, clean water.\n")

    extracted: list[str] = []
    real_html = documents.extract_html
    monkeypatch.setattr(documents, "extract_html", lambda html, url: extracted.append(html) or real_html(html, url))
    stats, messages = build(corpus, config)

    assert stats.files_indexed == (7 if HAS_PDF else 6)
    assert (stats.files_updated, stats.files_removed) == (2, 1)
    assert sorted(m for m in messages if m.startswith(("indexed", "removed"))) == [
        "indexed moss.txt",
        "indexed new.md",
        "removed site/leaves.htm",
    ]
    assert extracted == [], "unchanged HTML pages are not extracted again"
    assert await titles(engine, "capybara") == ["Notes on moss gardens"]
    assert await engine.search("liverworts", 5) == []
    assert await engine.search("chlorophyll", 5) == []
    assert await titles(engine, "axolotl") == ["Axolotl care"]
    assert (await engine.search("cloves", 5))[0].url == spice.url, "unchanged documents keep their URL"

    stats, messages = build(corpus, config)
    assert (stats.files_updated, stats.files_removed) == (0, 0)
    assert not [m for m in messages if m.startswith(("indexed", "removed"))]


async def test_index_of_another_folder_starts_over(corpus: Path, config: Config, tmp_path: Path):
    build(corpus, config)
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.md").write_text("# Only\n\nA lone marmot.\n")
    stats, messages = build(other, config)
    assert stats.files_indexed == 1
    assert any("from scratch" in m for m in messages)
    assert await LocalEngine(config, "docs").search("cloves", 5) == []


async def test_interrupted_build_keeps_the_old_index(corpus: Path, config: Config, monkeypatch: pytest.MonkeyPatch):
    build(corpus, config)
    (corpus / "new.md").write_text("# Axolotl care\n\nAn axolotl needs cool, clean water.\n")
    (corpus / "notes" / "stars.md").unlink()

    def interrupted(message: str) -> None:
        if message.startswith("indexed"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, "docs", config.data_dir, interrupted)
    engine = LocalEngine(config, "docs")
    assert await titles(engine, "pulsar") == ["Neutron stars and pulsars", "Photosynthesis explained"]
    assert await engine.search("axolotl", 5) == []
    assert not list((config.data_dir / "indexes").glob("*.tmp"))


async def test_corrupt_index_is_rebuilt(corpus: Path, config: Config):
    path = index_file(config.data_dir, "docs")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 500)
    stats, messages = build(corpus, config)
    assert stats.files_indexed == (7 if HAS_PDF else 6)
    assert any("unreadable" in m for m in messages)
    assert await titles(LocalEngine(config, "docs"), "cloves") == ["Cloves of the Zanzibar archipelago"]
