"""Search a local index: quoted FTS5 terms ranked by BM25, with plain-text snippets."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3

from rumination.config import Config
from rumination.errors import ConfigError
from rumination.local.store import build_hint, connect_ro, index_file
from rumination.search.base import SearchError, SearchHit
from rumination.urls import local_url

SNIPPET_TOKENS = 30
MAX_QUERY_TERMS = 32
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKUP = re.compile(r"\*\*|`+|\||^\s*(?:#{1,6}|>|[-*+])\s+", re.M)


def fts_query(query: str) -> str:
    """The query as quoted terms joined by OR, so no user input is read as FTS5 syntax; '' when no terms."""
    terms: dict[str, str] = {}  # lower-cased -> as written; a model's query may be arbitrarily long
    for raw in query.split():
        term = "".join(ch for ch in raw if ch.isprintable())
        if any(ch.isalnum() for ch in term):
            terms.setdefault(term.lower(), term)
            if len(terms) == MAX_QUERY_TERMS:
                break
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms.values())


def clean_snippet(snippet: str) -> str:
    """A snippet without Markdown markup or line breaks."""
    snippet = _MD_LINK.sub(r"\1", snippet)
    snippet = _MARKUP.sub(" ", snippet)
    return " ".join(snippet.split())


class LocalEngine:
    """Search a local index built by `rumination index`."""

    name = "local"

    def __init__(self, config: Config, index: str):
        self.index = index
        self.path = index_file(config.data_dir, index)
        if not self.path.is_file():
            raise ConfigError(f"no local index named {index}; build one with: {build_hint(index)}")

    def _search_sync(self, match: str, max_results: int) -> list[SearchHit]:
        """Run the FTS query (blocking)."""
        sql = (
            "SELECT rowid, title, snippet(fts, 1, '', '', '…', ?) FROM fts WHERE fts MATCH ?"
            " ORDER BY bm25(fts, 5.0, 1.0) LIMIT ?"
        )
        with contextlib.closing(connect_ro(self.path)) as conn:
            rows = conn.execute(sql, (SNIPPET_TOKENS, match, max_results)).fetchall()
        return [
            SearchHit(title=title or "", url=local_url(self.index, doc_id), snippet=clean_snippet(snippet or ""))
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
            raise SearchError(message + build_hint(self.index)) from None

    async def aclose(self) -> None:
        """Nothing to close: each search opens its own connection."""
