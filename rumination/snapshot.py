"""The frozen web: searches and pages recorded on first use and replayed later without the network."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import unicodedata
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, ValidationError, model_validator

from rumination.errors import RuminationError
from rumination.search.base import SearchEngine, SearchError, SearchHit
from rumination.search.errors import RateLimited, Unreachable
from rumination.urls import URL_END, domain_allowed, is_local, normalize_url, url_key
from rumination.web.base import Fetcher, FetchError, FetchErrorKind, Page
from rumination.web.fetch import RETRY_STATUSES, current_reach

# A snapshot folder holds one JSON record per file, so a human can read it and runs (and processes) can share it:
#   snapshot.json             the manifest: format version, when it was made
#   searches/<sha256>.json    a SearchRecord: engine, query, max_results, then the hits or the error
#   pages/<sha256>.json       a PageRecord: the URL, the rules it was fetched under, then the page or the error
# A file is named by the SHA-256 of its key (search_key, page_key) and repeats the key. It is written under a temporary
# name and then linked in place: readers never see half a file, and when several runs record a key at once the first
# record wins and every one of them is given it. A damaged record (unreadable, truncated, too large, another key's) is
# never fatal: it counts as a miss, is logged as a warning and counted in SnapshotStats.damaged, and the fresh result
# replaces it. An unreadable manifest, or one of a newer format, is a SnapshotError when the folder is opened.
#
# Only what the web would answer again is recorded: a search's hits (no hits is an answer too), a page, and a fetch
# that failed for a lasting reason: an HTTP status the fetcher does not retry (404, 403, 410, ...), robots.txt, too
# large, unsupported content, no readable text, an unreadable PDF, too many redirects. A failed search is never
# recorded (rate-limited, unreachable, timed out or misconfigured, it tells of the engine at that moment, not of the
# query), nor is a fetch that failed for the moment (a timeout, a network error, HTTP 408, 429, 500, 502, 503 or 504),
# nor one this run's own rules refused: the next run that needs it tries again and records what it gets. A record of
# such a failure written by an earlier version counts as a miss, and the fresh result replaces it.
FORMAT = 1
MANIFEST = "snapshot.json"
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a page's text is capped by the fetcher; anything far larger is not a record
_TEMP_PREFIX = ".tmp-"
TRANSIENT_KINDS: frozenset[FetchErrorKind] = frozenset({"timeout", "network"})
_HTTP_STATUS = re.compile(r"HTTP (\d{3})\b")

log = logging.getLogger(__name__)

Record = TypeVar("Record", "SearchRecord", "PageRecord")


class SnapshotError(RuminationError):
    """A snapshot folder that cannot be used: not a snapshot, unreadable, or from a newer format."""


class Manifest(BaseModel):
    """snapshot.json: what the folder is and which format its records have."""

    format: int = FORMAT
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    about: str = "Rumination web snapshot: searches/ and pages/ hold one JSON record each, named by its key's SHA-256"


class SearchFailure(BaseModel):
    """A failed search, as earlier versions recorded it: still read, never replayed (the search is made again)."""

    kind: Literal["error", "rate_limited", "unreachable"]
    message: str
    retry_after: float | None = None

    def error(self) -> SearchError:
        """The exception to raise again."""
        if self.kind == "rate_limited":
            return RateLimited(self.message, self.retry_after)
        return Unreachable(self.message) if self.kind == "unreachable" else SearchError(self.message)


class SearchRecord(BaseModel):
    """One search as first run: its hits, or how it failed."""

    key: str
    engine: str
    query: str
    max_results: int
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    hits: list[SearchHit] | None = None
    error: SearchFailure | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> SearchRecord:
        if (self.hits is None) == (self.error is None):
            raise ValueError("a search record holds either hits or an error")
        return self

    @property
    def lasting(self) -> bool:
        """Whether the record may be replayed: hits are; a failure (only earlier versions recorded one) is not."""
        return self.error is None

    def replay(self) -> list[SearchHit]:
        """The recorded hits (copies), or the recorded error raised again."""
        if self.error is not None:
            raise self.error.error()
        return [hit.model_copy() for hit in self.hits or []]


class FetchFailure(BaseModel):
    """A fetch that raised: replayed as a FetchError of the same kind and message."""

    kind: FetchErrorKind
    message: str


def transient(kind: FetchErrorKind, message: str) -> bool:
    """Whether a fetch failed for the moment (a timeout, the network, HTTP 408, 429 or a retried 5xx): not recorded."""
    if kind == "http":
        status = _HTTP_STATUS.match(message)
        return status is not None and int(status.group(1)) in RETRY_STATUSES
    return kind in TRANSIENT_KINDS


class FetchRules(BaseModel):
    """The egress rules of a run: which recorded pages it may be shown, and what its own records were fetched under."""

    private_network: bool = False
    robots_txt: bool = True
    allow_domains: list[str] = Field(default_factory=list)
    deny_domains: list[str] = Field(default_factory=list)


class PageRecord(BaseModel):
    """One fetch as first run, with the rules it ran under: the page, or how it failed."""

    key: str
    url: str
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    private_network: bool
    robots_txt: bool
    page: Page | None = None
    error: FetchFailure | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> PageRecord:
        if (self.page is None) == (self.error is None):
            raise ValueError("a page record holds either a page or an error")
        return self

    @property
    def lasting(self) -> bool:
        """Whether the record may be replayed: a page or a lasting failure is; a transient one (older versions') not."""
        return self.error is None or not transient(self.error.kind, self.error.message)

    def serves(self, rules: FetchRules) -> bool:
        """Whether a run under `rules` may be shown this record, or must fetch live (its rules decide afresh)."""
        if self.private_network and not rules.private_network:
            return False  # it may be an intranet page this run may not reach
        if self.error is not None and self.error.kind == "robots":
            return rules.robots_txt
        return self.robots_txt or not rules.robots_txt

    def replay(self, rules: FetchRules) -> Page:
        """The recorded page (a copy), or the recorded error raised again; the domain lists of `rules` apply."""
        if self.error is not None:
            raise FetchError(self.error.kind, self.error.message)
        assert self.page is not None
        for url in (self.page.url, self.page.final_url):
            if not domain_allowed(url, (), rules.deny_domains):
                raise FetchError("refused", f"refused: {url} is on a denied domain")
            if not domain_allowed(url, rules.allow_domains, ()):
                raise FetchError("refused", f"refused: {url} is outside the allowed domains")
        return self.page.model_copy()


def search_key(engine: str, query: str, max_results: int) -> str:
    """The key of a search: the engine, the result count, and the query with case and spacing normalised."""
    normal = " ".join(unicodedata.normalize("NFC", query).split()).lower()
    return f"search\0{engine}\0{max_results}\0{normal}"


def page_key(url: str) -> str:
    """The key of a page: its URL as the browser compares URLs (no scheme, www., fragment or trailing slash)."""
    return f"page\0{url_key(normalize_url(url))}"


def older_page_key(url: str) -> str | None:
    """The key `url` had before url_key decoded escapes and IDNA hosts, where it differs: read, so that older
    snapshots still replay such pages, and never written."""
    url = normalize_url(url).rstrip(URL_END)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower().removeprefix("www.")
    host = f"{host}:{port}" if port else host
    key = "page\0" + urlunsplit(("", host, parts.path.rstrip("/"), parts.query, "")).removeprefix("//")
    return None if is_local(url) or key == page_key(url) else key


@dataclass
class SnapshotStats:
    """What a snapshot did in this process: replayed, recorded, damaged, fetched live, and failures left unrecorded."""

    replayed: int = 0
    recorded: int = 0
    damaged: int = 0
    live: int = 0
    unrecorded: int = 0

    def summary(self) -> str:
        """One line for the user, e.g. "web snapshot: 12 replayed, 3 recorded"."""
        if not (self.replayed or self.recorded or self.damaged or self.live or self.unrecorded):
            return (
                "web snapshot: nothing recorded or replayed (no web search or page was read; "
                "local searches and pages are not recorded)"
            )
        text = f"web snapshot: {self.replayed} replayed, {self.recorded} recorded"
        if self.damaged:
            text += f", {self.damaged} damaged record{'' if self.damaged == 1 else 's'} replaced"
        if self.live:
            text += f", {self.live} fetched live (recorded under other rules)"
        if self.unrecorded:
            failures = "failure" if self.unrecorded == 1 else "failures"
            text += (
                f", {self.unrecorded} {failures} left unrecorded (a failed search, a timeout, a network error or "
                "an HTTP 429 or 5xx is tried again next time)"
            )
        return text


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _Damaged(Exception):
    """A record file that exists but cannot be used."""


class WebSnapshot:
    """A snapshot folder: get and put records by key; opened once per folder and process with `open`."""

    _opened: ClassVar[dict[Path, WebSnapshot]] = {}  # one store per folder and process, shared by every run
    _opening: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()
        self.stats = SnapshotStats()
        # Per event loop, so runs on separate loops (threads) never share an asyncio.Lock.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _KeyLock]]
        self._locks = weakref.WeakKeyDictionary()
        self._check_manifest()

    @classmethod
    def open(cls, path: Path | str) -> WebSnapshot:
        """The store of `path` shared by every run in this process (so concurrent runs fetch a key once)."""
        resolved = Path(path).expanduser().resolve()
        with cls._opening:
            if resolved not in cls._opened:
                cls._opened[resolved] = cls(resolved)
            return cls._opened[resolved]

    # ------------------------------------------------------------------------------------------------ records

    def get_search(self, key: str) -> SearchRecord | None:
        """The search recorded under `key`, or None when there is none or it is damaged."""
        return self._get(self._file("searches", key), key, SearchRecord)

    def put_search(self, record: SearchRecord) -> SearchRecord:
        """Record a search unless its key already has a lasting record; return the record the store now holds."""
        return self._put(self._file("searches", record.key), record)

    def get_page(self, key: str) -> PageRecord | None:
        """The fetch recorded under `key`, or None when there is none or it is damaged."""
        return self._get(self._file("pages", key), key, PageRecord)

    def put_page(self, record: PageRecord) -> PageRecord:
        """Record a fetch unless its key already has a lasting record; return the record the store now holds."""
        return self._put(self._file("pages", record.key), record)

    @contextlib.asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[None]:
        """Hold `key` for this event loop: a second miss of the same key waits and then finds the first's record."""
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        entry = locks.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del locks[key]

    # ------------------------------------------------------------------------------------------------ files

    def _file(self, kind: str, key: str) -> Path:
        return self.path / kind / f"{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}.json"

    def _get(self, path: Path, key: str, model: type[Record]) -> Record | None:
        try:
            return _load(path, key, model)
        except _Damaged as exc:
            self.stats.damaged += 1
            log.warning("web snapshot: ignoring the damaged record %s (%s); it will be recorded again", path, exc)
            return None

    def _put(self, path: Path, record: Record) -> Record:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(record.model_dump_json(indent=1))
            try:
                os.link(temp, path)  # fails if the key is already recorded: the first record wins
            except FileExistsError:
                try:
                    existing = _load(path, record.key, type(record))
                except _Damaged:
                    existing = None
                if existing is not None and existing.lasting:
                    return existing
                os.replace(temp, path)  # a damaged record, or a failure that is not replayed: the new one wins
            except OSError:  # a file system without hard links
                os.replace(temp, path)
            self.stats.recorded += 1
            return record
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _check_manifest(self) -> None:
        manifest = self.path / MANIFEST
        try:
            size = manifest.stat().st_size
        except FileNotFoundError:
            self._create()
            return
        except OSError as exc:
            raise SnapshotError(f"cannot read the web snapshot {self.path}: {exc.strerror or exc}") from None
        try:
            if size > 65536:
                raise ValueError("too large")
            data = json.loads(manifest.read_bytes())
            version = data.get("format") if isinstance(data, dict) else None
            if isinstance(version, int) and version > FORMAT:
                raise SnapshotError(
                    f"the web snapshot {self.path} has format {version}, written by a newer Rumination; "
                    f"this one reads format {FORMAT} (upgrade, or record a new snapshot in another folder)"
                )
            Manifest.model_validate(data)
        except (OSError, ValueError) as exc:  # ValidationError is a ValueError
            raise SnapshotError(
                f"the web snapshot {self.path} has an unreadable {MANIFEST} ({_reason(exc)}); "
                "remove the folder or pick another one"
            ) from None

    def _create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            others = [p.name for p in self.path.iterdir() if not p.name.startswith(_TEMP_PREFIX)]
        except OSError as exc:
            raise SnapshotError(f"cannot create the web snapshot {self.path}: {exc.strerror or exc}") from None
        if others and MANIFEST not in others:  # never litter a folder of other files with records
            raise SnapshotError(f"{self.path} is not a web snapshot (it has no {MANIFEST} and is not empty)")
        fd, temp = tempfile.mkstemp(dir=self.path, prefix=_TEMP_PREFIX)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(Manifest().model_dump_json(indent=1))
        os.replace(temp, self.path / MANIFEST)


def _load(path: Path, key: str, model: type[Record]) -> Record | None:
    """The record in `path`; None when there is no file; _Damaged when there is one that cannot be used."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Damaged(exc.strerror or str(exc)) from None
    if len(data) > MAX_RECORD_BYTES:
        raise _Damaged(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        record = model.model_validate_json(data)
    except ValidationError as exc:
        raise _Damaged(_reason(exc)) from None
    if record.key != key:
        raise _Damaged("it holds the record of another key")
    return record


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc)


class SnapshotEngine:
    """A search engine served from a snapshot: the wrapped engine is asked only for searches not recorded yet."""

    def __init__(self, engine: SearchEngine, store: WebSnapshot, key_name: str | None = None):
        """`key_name` names the engine in the records' keys (by default the engine's own name)."""
        self.engine, self.store = engine, store
        self.name = engine.name
        self._key_name = key_name or engine.name

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The recorded hits (or error) of this search; on a miss, the engine's, recorded first."""
        key = search_key(self._key_name, query, max_results)
        async with self.store.exclusive(key):
            record = await asyncio.to_thread(self.store.get_search, key)
            if record is not None and record.lasting:
                self.store.stats.replayed += 1
                return record.replay()
            try:
                hits = await self.engine.search(query, max_results)
            except SearchError:
                self.store.stats.unrecorded += 1
                raise
            record = SearchRecord(key=key, engine=self.name, query=query, max_results=max_results, hits=hits)
            return (await asyncio.to_thread(self.store.put_search, record)).replay()

    async def aclose(self) -> None:
        """Close the wrapped engine."""
        await self.engine.aclose()


class SnapshotFetcher:
    """A fetcher served from a snapshot: the wrapped fetcher is asked only for pages not recorded yet."""

    def __init__(self, fetcher: Fetcher, store: WebSnapshot, rules: FetchRules | None = None):
        self.fetcher, self.store = fetcher, store
        # The egress rules the wrapped fetcher enforces: stored with each record, and applied again on replay.
        self.rules = rules or FetchRules()
        self.name = fetcher.name

    async def fetch(self, url: str) -> Page:
        """The recorded page (or error) of `url`; on a miss, the wrapped fetcher's, recorded first."""
        key = page_key(url)
        async with self.store.exclusive(key):
            record = await asyncio.to_thread(self._recorded, key, url)
            if record is not None and not record.lasting:
                record = None  # an older version's record of a transient failure: fetched again, and replaced
            if record is not None and record.serves(self.rules):
                self.store.stats.replayed += 1
                return record.replay(self.rules)
            if record is not None:  # recorded under looser rules: fetched live under this run's, and not recorded
                self.store.stats.live += 1
                return await self.fetcher.fetch(url)
            try:
                record = self._record(key, url, page=await self.fetcher.fetch(url))
            except FetchError as exc:
                if exc.kind == "refused":  # this run's rules, not the web's: decided afresh by every run
                    raise
                if transient(exc.kind, str(exc)):
                    self.store.stats.unrecorded += 1
                    raise
                record = self._record(key, url, error=FetchFailure(kind=exc.kind, message=str(exc)))
            return (await asyncio.to_thread(self.store.put_page, record)).replay(self.rules)

    def _recorded(self, key: str, url: str) -> PageRecord | None:
        """The record of `key`, else the one an earlier version wrote under its own key for `url`."""
        record = self.store.get_page(key)
        older = older_page_key(url) if record is None else None
        return record if older is None else self.store.get_page(older)

    def _record(self, key: str, url: str, page: Page | None = None, error: FetchFailure | None = None) -> PageRecord:
        rules = self.rules
        return PageRecord(
            key=key, url=url, private_network=rules.private_network, robots_txt=rules.robots_txt, page=page, error=error
        )

    async def aclose(self) -> None:
        """Close the wrapped fetcher."""
        await self.fetcher.aclose()


class ReachingSnapshotFetcher:
    """A SnapshotFetcher per reach: a fetch a public origin led to is never shown a page recorded with private reach."""

    def __init__(self, fetcher: Fetcher, store: WebSnapshot, rules: FetchRules):
        public = rules.model_copy(update={"private_network": False})
        self.by_reach = {True: SnapshotFetcher(fetcher, store, rules), False: SnapshotFetcher(fetcher, store, public)}
        self.fetcher, self.name = fetcher, fetcher.name

    async def fetch(self, url: str) -> Page:
        """The recorded page of `url` under the rules of this fetch's reach, else the wrapped fetcher's, recorded."""
        return await self.by_reach[current_reach().private].fetch(url)

    async def aclose(self) -> None:
        """Close the wrapped fetcher."""
        await self.fetcher.aclose()


class Offline:
    """The engine and fetcher behind a replay: only the recording answers; a miss is an error, never a request."""

    name = "offline"

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Refuse: the replayed run never made this search."""
        raise SearchError("this search is not in the recorded web (a replay makes no new searches)")

    async def fetch(self, url: str) -> Page:
        """Refuse: the replayed run never read this page."""
        raise FetchError("refused", f"{url} is not in the recorded web (a replay reads no new pages)")

    async def aclose(self) -> None:
        """Nothing to close."""
