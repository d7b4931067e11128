"""Content-addressed page snapshots on disk, so a page read once is not fetched again."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rumination.web.base import Page


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class PageCache:
    """Snapshots in `objects/<sha256 of the content>.json`; `urls/<sha256 of a URL>` names the snapshot."""

    def __init__(self, directory: Path, max_age: timedelta = timedelta(days=1)):
        self.directory, self.max_age = Path(directory), max_age

    def get(self, url: str) -> Page | None:
        """The snapshot stored under `url` (a key) if fresh enough, else None (a damaged entry counts as missing)."""
        try:
            ref = json.loads((self.directory / "urls" / _digest(url)).read_text())
            page = Page.model_validate_json((self.directory / "objects" / f"{ref['object']}.json").read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return page if datetime.now(UTC) - page.fetched_at <= self.max_age else None

    def put(self, page: Page, key: Callable[[str], str] = str) -> None:
        """Store a snapshot under its content hash and point `key(url)` and `key(final url)` at it."""
        data = page.model_dump_json()
        digest = _digest(page.final_url + "\0" + page.title + "\0" + page.text)
        self._write(self.directory / "objects" / f"{digest}.json", data)
        for url in {page.url, page.final_url}:
            self._write(self.directory / "urls" / _digest(key(url)), json.dumps({"object": digest, "url": url}))

    @staticmethod
    def _write(path: Path, data: str) -> None:
        """Write atomically: a crash leaves the old entry or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, path)
