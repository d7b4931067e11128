"""Build or update a local index: extract new and changed files into a copy, then swap it in."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rumination.errors import ConfigError
from rumination.local import documents
from rumination.local.documents import INDEXED_SUFFIXES, PDF_SUFFIXES, PdfExtractor, Progress, say
from rumination.local.store import SCHEMA, SCHEMA_VERSION, index_file
from rumination.web.extract import strip_title, without_front_matter


@dataclass(frozen=True)
class IndexStats:
    """The outcome of one build_index run."""

    files_indexed: int
    files_skipped: int
    seconds: float
    path: Path
    files_updated: int = 0
    files_removed: int = 0


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
        for statement in SCHEMA:
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
                say(progress, "the existing index is for another folder or version: rebuilding it from scratch")
                return False
            old.backup(conn)
    except sqlite3.Error:
        say(progress, "the existing index is unreadable: rebuilding it from scratch")
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
    # The title column is searched (and ranked higher) on its own: the body's copy of it, or the front matter
    # above it, would fill the snippets.
    body = strip_title(without_front_matter(text), title)
    conn.execute("INSERT INTO fts(rowid, title, body) VALUES (?, ?, ?)", (doc_id, title, body))


def _update(conn: sqlite3.Connection, root: Path, progress: Progress | None, pdf_opts: dict) -> tuple[int, int, int]:
    """Bring the index in `conn` up to date with `root`; return (updated, skipped, removed)."""
    known = {row[0]: (row[1], row[2], row[3]) for row in conn.execute("SELECT relpath, id, mtime, size FROM docs")}
    seen: set[str] = set()
    updated = skipped = 0
    pdf: PdfExtractor | None = None
    pdf_loaded = False
    for relpath, path in documents.walk(root):
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
            pdf, pdf_loaded = documents.load_pdf_extractor(progress), True
        try:
            doc = documents.extract(path, documents.read_candidate(path, stat), pdf, pdf_opts)
        except Exception as exc:
            say(progress, f"skipped {relpath}: {documents.skip_reason(exc)}")
            skipped += 1
            if doc_id is not None:
                _remove_doc(conn, doc_id)
            continue
        _store_doc(conn, doc_id, relpath, doc, stat)
        updated += 1
        say(progress, f"indexed {relpath}")
    removed = [(relpath, entry[0]) for relpath, entry in known.items() if relpath not in seen]
    for relpath, doc_id in removed:
        _remove_doc(conn, doc_id)
        say(progress, f"removed {relpath}")
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
