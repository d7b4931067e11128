"""Open documents of local indexes through their local://NAME/ID URLs."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from rumination.config import Config
from rumination.local.documents import content_type
from rumination.local.store import connect_ro, index_file
from rumination.urls import is_local, parse_local_url
from rumination.web.base import FetchError, Page


class LocalFetcher:
    """Return the indexed text of local:// documents."""

    name = "local"

    def __init__(self, config: Config):
        self.data_dir = config.data_dir

    def _fetch_sync(self, url: str, index: str, doc_id: int) -> Page:
        """Read one document (blocking)."""
        path = index_file(self.data_dir, index)
        if not path.is_file():
            raise FetchError("not_found", f"there is no local index named {index} (build it with rumination index)")
        try:
            with contextlib.closing(connect_ro(path)) as conn:
                row = conn.execute("SELECT relpath, title, text FROM docs WHERE id = ?", (doc_id,)).fetchone()
        except sqlite3.Error:
            raise FetchError("unreadable", f"the local index {index} cannot be read; rebuild it") from None
        if row is None:
            raise FetchError("not_found", f"the local index {index} has no document {doc_id}")
        relpath, title, text = row
        return Page(url=url, final_url=url, title=title or "", text=text or "", content_type=content_type(relpath))

    async def fetch(self, url: str) -> Page:
        """Return the indexed text of a local://NAME/ID document; raise FetchError otherwise."""
        url = url.strip()
        if not is_local(url):
            raise FetchError("refused", "the local fetcher only opens local:// URLs")
        address = parse_local_url(url)
        if address is None:
            raise FetchError("not_found", "not a local document address (local://NAME/ID)")
        return await asyncio.to_thread(self._fetch_sync, url, *address)

    async def aclose(self) -> None:
        """Nothing to close."""
