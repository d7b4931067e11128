"""Local-document search: an SQLite FTS5 index of a folder, searched and opened through local:// URLs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.search.base import SearchError, SearchHit
from rumination.web.base import Page
from rumination.web.extract import decode_body, extract_html
from rumination.web.fetch import FetchError

MAX_FILE_BYTES = 50 * 1024 * 1024
SCHEMA_VERSION = "1"
HTML_SUFFIXES = frozenset({".html", ".htm"})
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst"})
PDF_SUFFIXES = frozenset({".pdf"})
INDEXED_SUFFIXES = HTML_SUFFIXES | TEXT_SUFFIXES | PDF_SUFFIXES
SNIPPET_TOKENS = 30
MAX_QUERY_TERMS = 32
MAX_TITLE_CHARS = 300

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LOCAL_URL = re.compile(r"local://([A-Za-z0-9_-]+)/(\d+)/?")
_MD_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
_FRONT_TITLE = re.compile(r"""^title:[ \t]*["']?(.+?)["']?[ \t]*$""", re.M)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKUP = re.compile(r"\*\*|`+|\||^\s*(?:#{1,6}|>|[-*+])\s+", re.M)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY AUTOINCREMENT, relpath TEXT UNIQUE, title TEXT,"
    " text TEXT, mtime REAL, size INTEGER)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(title, body, tokenize='porter unicode61')",
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IndexStats:
    """The outcome of one build_index run."""

    files_indexed: int
    files_skipped: int
    seconds: float
    path: Path
    files_updated: int = 0
    files_removed: int = 0


class SkipFile(Exception):
    """A file that cannot be indexed; the message says why."""


def index_file(data_dir: Path, name: str) -> Path:
    """The SQLite file of the index called `name`; ConfigError for a name that is not letters, digits, - or _."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"bad index name {name!r}: use only letters, digits, - and _")
    return Path(data_dir) / "indexes" / f"{name}.sqlite3"


def _build_hint(name: str) -> str:
    """The command that builds the index `name`."""
    return f"rumination index DIR --name {name}"


# ---------------------------------------------------------------- walking and extraction


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
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


def _first_line(text: str) -> str:
    """The first line with a letter or digit, without Markdown heading marks."""
    for line in text.splitlines():
        if any(ch.isalnum() for ch in line):
            return line.strip().lstrip("#").strip()[:MAX_TITLE_CHARS]
    return ""


def _markdown_title(text: str) -> str:
    """A front-matter title, else the first ATX heading, else the first line."""
    end = text.find("\n---", 4) if text.startswith("---\n") else -1
    if end > 0 and (match := _FRONT_TITLE.search(text, 4, end)):
        return match.group(1).strip()[:MAX_TITLE_CHARS]
    if match := _MD_HEADING.search(text):
        return match.group(1).strip()[:MAX_TITLE_CHARS]
    return _first_line(text)


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


def _load_pdf_extractor(progress: Progress | None) -> Callable[..., tuple[str, str]] | None:
    """rumination.web.pdf.extract_pdf_sync, or None (with a progress message) when it is unavailable."""
    try:
        from rumination.web.pdf import extract_pdf_sync
    except ImportError:
        _say(progress, "PDF support is unavailable: PDF files will be skipped")
        return None
    return extract_pdf_sync


def _extract(path: Path, data: bytes, pdf: Callable[..., tuple[str, str]] | None, pdf_opts: dict) -> tuple[str, str]:
    """Return (title, text) of one file; raise SkipFile when it has nothing to index."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        title, text = extract_html(decode_body(data, None), "")
        title = title or _first_line(text)
    elif suffix in PDF_SUFFIXES:
        if pdf is None:
            raise SkipFile("PDF support is unavailable")
        title, text = pdf(data, **pdf_opts)
        title = (title or "").strip() or _first_line(text)
    else:
        text = _decode_text(data)
        title = _markdown_title(text) if suffix in (".md", ".markdown") else _first_line(text)
    if not text.strip():
        raise SkipFile("no readable text")
    return title[:MAX_TITLE_CHARS], text


def _say(progress: Progress | None, message: str) -> None:
    """Report a progress message when someone listens."""
    if progress is not None:
        progress(message)


# ---------------------------------------------------------------- building


def _open_work_copy(target: Path, root: str, progress: Progress | None) -> tuple[sqlite3.Connection, Path]:
    """A temporary copy of the existing index (or a fresh one) next to `target`, with the schema in place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        if target.exists() and not _copy_existing(target, conn, root, progress):
            conn.close()
            tmp.write_bytes(b"")
            conn = sqlite3.connect(tmp, isolation_level=None)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?), ('root', ?)", (SCHEMA_VERSION, root))
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    return conn, tmp


def _copy_existing(target: Path, conn: sqlite3.Connection, root: str, progress: Progress | None) -> bool:
    """Copy the old index into `conn` when it is usable for an incremental update of `root`."""
    try:
        with contextlib.closing(sqlite3.connect(f"{target.as_uri()}?mode=ro", uri=True)) as old:
            meta = dict(old.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("schema") != SCHEMA_VERSION or meta.get("root") != root:
                _say(progress, "the existing index is for another folder or version: rebuilding it from scratch")
                return False
            old.backup(conn)
    except sqlite3.Error:
        _say(progress, "the existing index is unreadable: rebuilding it from scratch")
        return False
    return True


def _remove_doc(conn: sqlite3.Connection, doc_id: int) -> None:
    """Drop one document from both tables."""
    conn.execute("DELETE FROM fts WHERE rowid = ?", (doc_id,))
    conn.execute("DELETE FROM docs WHERE id = ?", (doc_id,))


def _store_doc(
    conn: sqlite3.Connection, doc_id: int | None, relpath: str, doc: tuple[str, str], stat: os.stat_result
) -> None:
    """Insert a new document, or replace an existing one keeping its id (so its local:// URL stays valid)."""
    title, text = doc
    if doc_id is None:
        cursor = conn.execute(
            "INSERT INTO docs(relpath, title, text, mtime, size) VALUES (?, ?, ?, ?, ?)",
            (relpath, title, text, stat.st_mtime, stat.st_size),
        )
        doc_id = cursor.lastrowid
    else:
        conn.execute(
            "UPDATE docs SET title = ?, text = ?, mtime = ?, size = ? WHERE id = ?",
            (title, text, stat.st_mtime, stat.st_size, doc_id),
        )
        conn.execute("DELETE FROM fts WHERE rowid = ?", (doc_id,))
    conn.execute("INSERT INTO fts(rowid, title, body) VALUES (?, ?, ?)", (doc_id, title, text))


def _read_candidate(path: Path, stat: os.stat_result) -> bytes:
    """The bytes of a file to index; SkipFile when too large or unreadable."""
    if stat.st_size > MAX_FILE_BYTES:
        raise SkipFile(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or type(exc).__name__})") from None


def _update(conn: sqlite3.Connection, root: Path, progress: Progress | None, pdf_opts: dict) -> tuple[int, int, int]:
    """Bring the index in `conn` up to date with `root`; return (updated, skipped, removed)."""
    known = {row[0]: (row[1], row[2], row[3]) for row in conn.execute("SELECT relpath, id, mtime, size FROM docs")}
    seen: set[str] = set()
    updated = skipped = 0
    pdf: Callable[..., tuple[str, str]] | None = None
    pdf_loaded = False
    for relpath, path in _walk(root):
        if path.suffix.lower() not in INDEXED_SUFFIXES:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        seen.add(relpath)
        doc_id, mtime, size = known.get(relpath, (None, None, None))
        if doc_id is not None and mtime == stat.st_mtime and size == stat.st_size:
            continue
        if path.suffix.lower() in PDF_SUFFIXES and not pdf_loaded:
            pdf, pdf_loaded = _load_pdf_extractor(progress), True
        try:
            doc = _extract(path, _read_candidate(path, stat), pdf, pdf_opts)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, SkipFile | FetchError) else f"{type(exc).__name__}: {exc}"
            _say(progress, f"skipped {relpath}: {reason}")
            skipped += 1
            if doc_id is not None:
                _remove_doc(conn, doc_id)
            continue
        _store_doc(conn, doc_id, relpath, doc, stat)
        updated += 1
        _say(progress, f"indexed {relpath}")
    removed = [(relpath, entry[0]) for relpath, entry in known.items() if relpath not in seen]
    for relpath, doc_id in removed:
        _remove_doc(conn, doc_id)
        _say(progress, f"removed {relpath}")
    return updated, skipped, len(removed)


def build_index(
    directory: Path,
    name: str,
    data_dir: Path,
    progress: Callable[[str], None] | None = None,
    *,
    pdf_timeout: float = 30.0,
    pdf_max_memory_mb: int = 1024,
) -> IndexStats:
    """Index the documents under `directory` as `name`, re-extracting only new and changed files. Blocking."""
    started = time.monotonic()
    target = index_file(data_dir, name)
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    root = root.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    conn, tmp = _open_work_copy(target, str(root), progress)
    try:
        conn.execute("BEGIN")
        opts = {"timeout": pdf_timeout, "max_memory_mb": pdf_max_memory_mb}
        updated, skipped, removed = _update(conn, root, progress, opts)
        conn.execute("INSERT INTO fts(fts) VALUES ('optimize')")
        conn.execute("COMMIT")
        total = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
        conn.close()
        os.replace(tmp, target)
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - started
    return IndexStats(total, skipped, seconds, target, files_updated=updated, files_removed=removed)


# ---------------------------------------------------------------- searching and opening


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection to an index file."""
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)


def fts_query(query: str) -> str:
    """The query as quoted terms joined by OR, so no user input is read as FTS5 syntax; '' when no terms."""
    terms: list[str] = []
    for raw in query.split():
        term = "".join(ch for ch in raw if ch.isprintable())
        if any(ch.isalnum() for ch in term) and term.lower() not in (t.lower() for t in terms):
            terms.append(term)
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms[:MAX_QUERY_TERMS])


def clean_snippet(snippet: str) -> str:
    """A snippet without Markdown markup or line breaks."""
    snippet = _MD_LINK.sub(r"\1", snippet)
    snippet = _MARKUP.sub(" ", snippet)
    return " ".join(snippet.split())


def _content_type(relpath: str) -> str:
    """The content type a document's text is given as."""
    suffix = Path(relpath).suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "application/pdf"
    if suffix == ".txt":
        return "text/plain"
    if suffix == ".rst":
        return "text/x-rst"
    return "text/markdown"


class LocalEngine:
    """Search a local index built by `rumination index`."""

    name = "local"

    def __init__(self, config: Config, index: str):
        self.index = index
        self.path = index_file(config.data_dir, index)
        if not self.path.is_file():
            raise ConfigError(f"no local index named {index}; build one with: {_build_hint(index)}")

    def _search_sync(self, match: str, max_results: int) -> list[SearchHit]:
        """Run the FTS query (blocking)."""
        sql = (
            "SELECT rowid, title, snippet(fts, 1, '', '', '…', ?) FROM fts WHERE fts MATCH ?"
            " ORDER BY bm25(fts, 5.0, 1.0) LIMIT ?"
        )
        with contextlib.closing(_connect_ro(self.path)) as conn:
            rows = conn.execute(sql, (SNIPPET_TOKENS, match, max_results)).fetchall()
        return [
            SearchHit(title=title or "", url=f"local://{self.index}/{doc_id}", snippet=clean_snippet(snippet or ""))
            for doc_id, title, snippet in rows
        ]

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Return up to `max_results` hits ranked by BM25; raise SearchError when the index cannot be read."""
        match = fts_query(query)
        if not match or max_results <= 0:
            return []
        try:
            return await asyncio.to_thread(self._search_sync, match, max_results)
        except sqlite3.Error as exc:
            message = f"the local index {self.index} cannot be read ({type(exc).__name__}); rebuild it with: "
            raise SearchError(message + _build_hint(self.index)) from None

    async def aclose(self) -> None:
        """Nothing to close: each search opens its own connection."""


class LocalFetcher:
    """Open documents of local indexes through their local://NAME/ID URLs."""

    name = "local"

    def __init__(self, config: Config):
        self.data_dir = config.data_dir

    def _fetch_sync(self, url: str, index: str, doc_id: int) -> Page:
        """Read one document (blocking)."""
        path = index_file(self.data_dir, index)
        if not path.is_file():
            raise FetchError("not_found", "no such document in the local index")
        try:
            with contextlib.closing(_connect_ro(path)) as conn:
                row = conn.execute("SELECT relpath, title, text FROM docs WHERE id = ?", (doc_id,)).fetchone()
        except sqlite3.Error:
            raise FetchError("unreadable", f"the local index {index} cannot be read; rebuild it") from None
        if row is None:
            raise FetchError("not_found", "no such document in the local index")
        relpath, title, text = row
        return Page(url=url, final_url=url, title=title or "", text=text or "", content_type=_content_type(relpath))

    async def fetch(self, url: str) -> Page:
        """Return the indexed text of a local://NAME/ID document; raise FetchError otherwise."""
        url = url.strip()
        if not url.lower().startswith("local://"):
            raise FetchError("refused", "the local fetcher only opens local:// URLs")
        match = _LOCAL_URL.fullmatch(url)
        if match is None:
            raise FetchError("not_found", "no such document in the local index")
        return await asyncio.to_thread(self._fetch_sync, url, match.group(1), int(match.group(2)))

    async def aclose(self) -> None:
        """Nothing to close."""
