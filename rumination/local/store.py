"""Where a local index lives, its schema, and how it is opened for reading."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from rumination.errors import ConfigError

# 2: the searched body leaves out a first line that repeats the title (so snippets do not repeat it).
SCHEMA_VERSION = "2"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY AUTOINCREMENT, relpath TEXT UNIQUE, title TEXT,"
    " text TEXT, mtime REAL, size INTEGER)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(title, body, tokenize='porter unicode61')",
)
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def index_file(data_dir: Path, name: str) -> Path:
    """The SQLite file of the index called `name`; ConfigError for a name that is not letters, digits, - or _."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"bad index name {name!r}: use only letters, digits, - and _")
    return Path(data_dir) / "indexes" / f"{name}.sqlite3"


def build_hint(name: str) -> str:
    """The command that builds the index `name`."""
    return f"rumination index DIR --name {name}"


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection to an index file."""
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
