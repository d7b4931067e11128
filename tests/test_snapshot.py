"""The frozen web: a run records searches and pages in a snapshot folder, and a later run replays them offline."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from pathlib import Path

import pytest
from conftest import closed_port, turn, write_script
from localweb import LocalWeb
from loopback import Reply

from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.cli import main
from rumination.config import Config
from rumination.errors import RuminationError
from rumination.factory import make_engine, make_fetcher
from rumination.search.base import SearchError, SearchHit
from rumination.search.errors import Unreachable
from rumination.snapshot import (
    MANIFEST,
    FetchFailure,
    Offline,
    PageRecord,
    SearchFailure,
    SearchRecord,
    SnapshotError,
    SnapshotFetcher,
    SnapshotStats,
    WebSnapshot,
    older_page_key,
    page_key,
    search_key,
)
from rumination.web.base import FetchError, Page


def config(web: LocalWeb, snapshot: Path, **extra: object) -> Config:
    """A scripted run against the local site, recording to (or replaying from) `snapshot`; no page cache."""
    settings = {"searxng_url": web.base, "allow_private_network": True, **extra}
    # No page cache: a cached page must not stand in for the snapshot.
    return Config(backend="scripted", search="searxng", page_cache=False, web_snapshot=snapshot, **settings)


def script(base: str) -> list[str]:
    """A search, every prefetched result read, a page that fails, then the report."""
    return [
        turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        turn({"name": "open", "arguments": {"url": f"{base}/spread.html"}}),
        turn({"name": "click", "arguments": {"link_id": 2}}),
        turn({"name": "open", "arguments": {"url": f"{base}/status/404"}}),
        turn({"name": "search", "arguments": {"query": "nothing matches zz"}}),
        turn({"name": "finish", "arguments": {}}),
        "\n<think>\nReport.\n</think>\n# Printing\n\nGutenberg, around 1440.",
    ]


async def research(cfg: Config, base: str) -> list[str]:
    """One full run with a fresh Researcher and backend; the observations of its steps."""
    question = f"How did printing spread? (see {base}/status/404)"
    result = await Researcher(cfg, backend=ScriptedBackend(cfg, outputs=script(base))).run(question)
    assert result.stop_reason == "finished"
    return [step.observation for step in result.steps]


async def test_a_second_run_replays_the_first_without_the_network(web, tmp_path):
    snapshot = tmp_path / "snapshot"
    first = await research(config(web, snapshot), web.base)
    assert "Gutenberg Bible" in first[1] and "HTTP 404" in first[4] and first[5].startswith("No results")
    requests = len(web.requests)
    assert requests > 0 and web.hits["/search"] == 2

    second = await research(config(web, snapshot), web.base)
    assert second == first
    assert len(web.requests) == requests, [r.path for r in web.requests[requests:]]
    assert (snapshot / MANIFEST).is_file()
    assert len(list((snapshot / "searches").glob("*.json"))) == 2
    assert len(list((snapshot / "pages").glob("*.json"))) == 4  # three results and the 404
    assert WebSnapshot.open(snapshot).stats.summary() == "web snapshot: 6 replayed, 6 recorded"


async def test_the_replay_needs_no_server_at_all(web, tmp_path):
    snapshot = tmp_path / "snapshot"
    first = await research(config(web, snapshot), web.base)
    web.stop()
    assert await research(config(web, snapshot), web.base) == first


async def fetch_twice(cfg: Config, url: str) -> list[tuple[str, str]]:
    """Fetch `url` with two fresh fetchers on `cfg`'s snapshot; the kind and message of each failure."""
    errors = []
    for _ in range(2):
        fetcher = make_fetcher(cfg)
        try:
            with pytest.raises(FetchError) as caught:
                await fetcher.fetch(url)
            errors.append((caught.value.kind, str(caught.value)))
        finally:
            await fetcher.aclose()
    return errors


@pytest.mark.parametrize(("status", "reason"), [(404, "Not Found"), (403, "Forbidden"), (410, "Gone")])
async def test_a_lasting_fetch_error_is_recorded_and_replayed_as_the_same_error(web, tmp_path, status, reason):
    cfg = config(web, tmp_path / "snapshot")
    errors = await fetch_twice(cfg, web.url(f"/status/{status}"))
    assert errors[0] == errors[1] == ("http", f"HTTP {status} {reason}")
    assert web.hits[f"/status/{status}"] == 1
    assert len(list((tmp_path / "snapshot" / "pages").glob("*.json"))) == 1
    assert WebSnapshot.open(cfg.web_snapshot).stats.summary() == "web snapshot: 1 replayed, 1 recorded"


@pytest.mark.parametrize("failure", ["503", "429", "timeout", "network"])
async def test_a_transient_fetch_error_is_not_recorded(web, tmp_path, failure):
    cfg = config(web, tmp_path / "snapshot", **({"fetch_timeout": 0.5} if failure == "timeout" else {}))
    for status in (503, 429):  # Retry-After: 0, so the fetcher's retries are quick
        web.routes[f"/status/{status}"] = Reply(status, b"busy", headers={"Retry-After": "0"})
    url = {
        "503": web.url("/status/503"),
        "429": web.url("/status/429"),
        "timeout": web.url("/slow?delay=5"),
        "network": f"http://127.0.0.1:{closed_port()}/page.html",
    }[failure]
    errors = await fetch_twice(cfg, url)
    assert errors[0] == errors[1]
    assert errors[0][0] == {"503": "http", "429": "http", "timeout": "timeout", "network": "network"}[failure]
    if failure in ("503", "429"):
        assert errors[0][1] == f"HTTP {failure} (after 2 retries)" and web.hits[f"/status/{failure}"] == 6
    if failure == "timeout":
        assert web.hits["/slow"] == 2
    assert not list((tmp_path / "snapshot").rglob("pages/*.json"))
    stats = WebSnapshot.open(cfg.web_snapshot).stats
    assert (stats.recorded, stats.replayed, stats.unrecorded) == (0, 0, 2)
    assert stats.summary().startswith("web snapshot: 0 replayed, 0 recorded, 2 failures left unrecorded (")


async def test_a_page_that_failed_for_a_moment_is_recorded_once_it_loads(web, tmp_path):
    cfg = config(web, tmp_path / "snapshot")
    url = web.url("/flaky?fail=3")  # three 503s: the first fetch and its two retries fail
    outcomes = []
    for _ in range(3):
        fetcher = make_fetcher(cfg)
        try:
            outcomes.append((await fetcher.fetch(url)).title)
        except FetchError as exc:
            outcomes.append(str(exc))
        finally:
            await fetcher.aclose()
    assert outcomes == ["HTTP 503 (after 2 retries)", "Flaky", "Flaky"]
    assert web.hits["/flaky"] == 4  # the third was replayed
    stats = WebSnapshot.open(cfg.web_snapshot).stats
    assert (stats.unrecorded, stats.recorded, stats.replayed) == (1, 1, 1)


@pytest.mark.parametrize("kind", ["unreachable", "refused-json", "rate-limited", "server-error"])
async def test_a_failed_search_is_not_recorded_and_is_recorded_once_the_engine_answers(web, loopback, tmp_path, kind):
    if kind == "unreachable":
        failing, where = None, f"http://127.0.0.1:{closed_port()}"
    else:
        failing = loopback({"/search": Reply({"refused-json": 403, "rate-limited": 429, "server-error": 502}[kind])})
        where = failing.base

    async def search(searxng_url: str) -> list[str] | tuple[type, str]:
        engine = make_engine(config(web, tmp_path / "snapshot", searxng_url=searxng_url))
        try:
            return [hit.url for hit in await engine.search("Gutenberg printing", 5)]
        except SearchError as exc:
            return type(exc), str(exc)
        finally:
            await engine.aclose()

    first, second = await search(where), await search(where)
    assert first == second and isinstance(first, tuple)
    assert first[0] is (Unreachable if kind == "unreachable" else SearchError)
    if failing is not None:
        assert failing.hits["/search"] == 2  # asked again, not replayed
    assert not list((tmp_path / "snapshot").rglob("searches/*.json"))
    # The engine answers (fixed, its limit lifted, or up again): its hits are recorded, then replayed.
    hits = await search(web.base)
    assert len(hits) == 3 and await search(web.base) == hits
    assert web.hits["/search"] == 1
    stats = WebSnapshot.open(tmp_path / "snapshot").stats
    assert (stats.unrecorded, stats.recorded, stats.replayed) == (2, 1, 1)


async def test_transient_failures_an_earlier_version_recorded_are_fetched_and_searched_again(web, tmp_path):
    store = WebSnapshot(tmp_path / "snapshot")  # as an earlier version wrote them
    url = web.url("/spread.html")
    timeout = FetchFailure(kind="timeout", message="timed out after 30 s")
    store.put_page(PageRecord(key=page_key(url), url=url, private_network=True, robots_txt=True, error=timeout))
    limited = SearchFailure(kind="rate_limited", message="SearXNG is rate-limiting requests (HTTP 429)")
    key = search_key("searxng", "Gutenberg printing", 5)
    store.put_search(SearchRecord(key=key, engine="searxng", query="Gutenberg printing", max_results=5, error=limited))
    missing = f"{web.base}/status/404"
    gone = FetchFailure(kind="http", message="HTTP 404 Not Found")
    store.put_page(PageRecord(key=page_key(missing), url=missing, private_network=True, robots_txt=True, error=gone))
    cfg = config(web, tmp_path / "snapshot")
    fetcher, engine = make_fetcher(cfg), make_engine(cfg)
    try:
        assert "printing presses" in (await fetcher.fetch(url)).text
        assert len(await engine.search("Gutenberg printing", 5)) == 3
        with pytest.raises(FetchError, match="HTTP 404 Not Found"):  # a lasting failure is still replayed
            await fetcher.fetch(missing)
    finally:
        await fetcher.aclose()
        await engine.aclose()
    assert (web.hits["/spread.html"], web.hits["/search"], web.hits["/status/404"]) == (1, 1, 0)
    assert store.get_page(page_key(url)).page is not None and store.get_search(key).hits  # replaced
    stats = WebSnapshot.open(cfg.web_snapshot).stats
    assert (stats.recorded, stats.replayed) == (2, 1)


async def test_pages_an_older_version_recorded_under_its_own_key_still_replay(tmp_path):
    store = WebSnapshot(tmp_path / "snapshot")
    url = "https://de.wikipedia.org/wiki/K%C3%B6ln_(Stadt)"
    older = "page\0de.wikipedia.org/wiki/K%C3%B6ln_(Stadt)"  # escapes as written: the key before they were decoded
    assert older_page_key(url) == older != page_key(url) and older_page_key("https://example.org/a") is None
    page = Page(url=url, final_url=url, title="Köln", text="Köln is a city on the Rhine.", content_type="text/html")
    store.put_page(PageRecord(key=older, url=url, private_network=False, robots_txt=True, page=page))
    fetcher = SnapshotFetcher(Offline(), store)  # a miss would be an error, never a request
    assert "Rhine" in (await fetcher.fetch(url)).text and store.stats.replayed == 1  # the URL the run read


def test_the_summary_says_when_nothing_was_recorded_or_replayed(tmp_path, capsys):
    nothing = "web snapshot: nothing recorded or replayed (no web search or page was read; local searches and pages"
    assert SnapshotStats().summary().startswith(nothing)
    assert (
        SnapshotStats(replayed=2, damaged=1).summary()
        == "web snapshot: 2 replayed, 0 recorded, 1 damaged record replaced"
    )
    script = write_script(
        tmp_path / "s.json", [turn({"name": "finish", "arguments": {}}), "\n<think>\nx\n</think>\nDone."]
    )
    snapshot = tmp_path / "snapshot"
    assert main(["ask", "A question?", "--script", str(script), "--web-snapshot", str(snapshot)]) == 0
    assert nothing in capsys.readouterr().err


async def test_concurrent_misses_of_one_key_reach_the_network_once(web, tmp_path):
    cfg = config(web, tmp_path / "snapshot")
    fetcher, engine = make_fetcher(cfg), make_engine(cfg)
    try:
        url = web.url("/slow?delay=0.3")
        pages = await asyncio.gather(*(fetcher.fetch(url) for _ in range(8)), return_exceptions=True)
        hits = await asyncio.gather(*(engine.search("Gutenberg  PRINTING", 5) for _ in range(4)))
    finally:
        await fetcher.aclose()
        await engine.aclose()
    assert web.hits["/slow"] == 1
    assert all(page == pages[0] for page in pages), pages
    assert web.hits["/search"] == 1
    assert all(result == hits[0] for result in hits) and hits[0]


def test_the_first_record_of_a_key_wins_across_stores(tmp_path):
    first, second = WebSnapshot(tmp_path / "s"), WebSnapshot(tmp_path / "s")  # as two processes would open it
    key = search_key("searxng", "q", 5)
    mine = SearchRecord(key=key, engine="searxng", query="q", max_results=5, hits=[SearchHit(title="a", url="u")])
    theirs = mine.model_copy(update={"hits": [SearchHit(title="b", url="v")]})
    assert first.put_search(mine) == mine
    assert second.put_search(theirs) == mine
    assert second.get_search(key) == mine
    assert (first.stats.recorded, second.stats.recorded) == (1, 0)


def _record_in_a_process(path: str, worker: int) -> dict[str, str]:
    store = WebSnapshot(path)
    given = {}
    for i in range(60):
        key = page_key(f"https://example.org/{i % 12}")
        page = Page(url=key, final_url=key, title=f"worker {worker}", text="x" * 2000, content_type="text/html")
        record = PageRecord(key=key, url=key, private_network=False, robots_txt=True, page=page)
        given[key] = store.put_page(record).model_dump_json()
    return given


def test_processes_recording_one_snapshot_agree_on_every_record(tmp_path):
    snapshot = tmp_path / "snapshot"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_record_in_a_process, [(str(snapshot), worker) for worker in range(4)])
    store = WebSnapshot(snapshot)
    for key, text in results[0].items():
        assert all(result[key] == text for result in results)
        stored = store.get_page(key)
        assert stored is not None and stored.model_dump_json() == text
    assert not list(snapshot.rglob(".tmp-*"))
    assert store.stats.damaged == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated mid-write by a crash
        lambda text: "",
        lambda text: "\x00\xff not json",
        lambda text: text.replace("spread.html", "other.html"),  # another key's record under this name
        lambda text: json.dumps({**json.loads(text), "page": None}),  # neither a page nor an error
    ],
)
async def test_a_damaged_record_is_a_miss_that_is_recorded_again(web, tmp_path, caplog, damage):
    cfg = config(web, tmp_path / "snapshot")
    url = web.url("/spread.html")
    fetcher = make_fetcher(cfg)
    try:
        page = await fetcher.fetch(url)
        (file,) = (tmp_path / "snapshot" / "pages").glob("*.json")
        file.write_text(damage(file.read_text()))
        with caplog.at_level(logging.WARNING, logger="rumination.snapshot"):
            again = await fetcher.fetch(url)
    finally:
        await fetcher.aclose()
    assert again.text == page.text
    assert web.hits["/spread.html"] == 2
    assert WebSnapshot.open(cfg.web_snapshot).stats.damaged == 1
    assert "damaged record" in caplog.text and file.name in caplog.text
    assert PageRecord.model_validate_json(file.read_text()).page is not None  # repaired


def test_a_snapshot_of_a_newer_format_is_refused(tmp_path):
    WebSnapshot(tmp_path / "snapshot")
    (tmp_path / "snapshot" / MANIFEST).write_text(json.dumps({"format": 2, "created_at": "2030-01-01T00:00:00Z"}))
    with pytest.raises(SnapshotError, match="format 2, written by a newer Rumination"):
        WebSnapshot(tmp_path / "snapshot")


@pytest.mark.parametrize("manifest", ['{"format": 1, "created', "[]", '{"format": "one"}'])
def test_an_unreadable_manifest_is_refused(tmp_path, manifest):
    (tmp_path / MANIFEST).write_text(manifest)
    with pytest.raises(SnapshotError, match="unreadable snapshot.json"):
        WebSnapshot(tmp_path)


async def test_a_folder_that_is_not_a_snapshot_is_left_alone(web, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RuminationError, match="is not a web snapshot"):
        make_engine(config(web, folder))
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


async def test_the_replaying_runs_domain_lists_apply_to_recorded_hits(web, tmp_path):
    snapshot = tmp_path / "snapshot"

    async def search(**lists: list[str]) -> list[str]:
        engine = make_engine(config(web, snapshot, **lists))
        try:
            return [hit.url for hit in await engine.search("Gutenberg printing", 10)]
        finally:
            await engine.aclose()

    assert await search(deny_domains=["127.0.0.1"]) == []  # recorded while this list dropped every hit
    assert len(await search()) == 3  # a looser list sees what the first run's list dropped
    assert await search(deny_domains=["127.0.0.1"]) == []
    assert await search(allow_domains=["example.org"]) == []
    assert web.hits["/search"] == 1


async def test_the_replaying_runs_domain_lists_apply_to_a_recorded_redirect(web, loopback, tmp_path):
    other = loopback(host="127.0.0.2", fallback=Reply(200, b"<html><body><p>Another host's page.</p></body></html>"))
    url = web.url(f"/redirect-to?url={other.url('/page.html')}")

    async def fetch(**lists: list[str]) -> Page:
        fetcher = make_fetcher(config(web, tmp_path / "snapshot", **lists))
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    assert (await fetch()).final_url == other.url("/page.html")
    with pytest.raises(FetchError, match="127.0.0.2.* is on a denied domain") as caught:
        await fetch(deny_domains=["127.0.0.2"])
    assert caught.value.kind == "refused"
    with pytest.raises(FetchError, match="outside the allowed domains"):
        await fetch(allow_domains=["127.0.0.1"])
    assert (await fetch()).final_url == other.url("/page.html")
    assert other.hits["/page.html"] == 1


async def test_a_page_read_on_a_private_network_is_not_replayed_to_a_public_run(web, tmp_path):
    url = web.url("/spread.html")
    cfg = config(web, tmp_path / "snapshot")
    fetcher = make_fetcher(cfg)
    public = make_fetcher(cfg.model_copy(update={"allow_private_network": False}))
    try:
        await fetcher.fetch(url)
        with pytest.raises(FetchError, match="private or local address") as caught:
            await public.fetch(url)
        assert caught.value.kind == "refused"
        assert (await fetcher.fetch(url)).final_url == url  # the record is kept for runs that may read it
    finally:
        await fetcher.aclose()
        await public.aclose()
    stats = WebSnapshot.open(tmp_path / "snapshot").stats
    assert (stats.recorded, stats.live, stats.replayed) == (1, 1, 1)
    assert web.hits["/spread.html"] == 1


async def test_refusals_are_not_recorded(web, tmp_path):
    cfg = config(web, tmp_path / "snapshot", allow_private_network=False)
    fetcher = make_fetcher(cfg)
    try:
        with pytest.raises(FetchError, match="private or local address"):
            await fetcher.fetch(web.url("/spread.html"))
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "snapshot" / "pages").exists()


async def test_robots_txt_decides_afresh_when_the_recording_ran_under_the_other_rule(web, tmp_path):
    url = web.url("/private/page.html")  # robots.txt disallows it

    async def fetch(snapshot: str, robots_txt: bool) -> str:
        fetcher = make_fetcher(config(web, tmp_path / snapshot, robots_txt=robots_txt))
        try:
            return (await fetcher.fetch(url)).text
        except FetchError as exc:
            return exc.kind
        finally:
            await fetcher.aclose()

    read = "A page robots.txt asks us not to fetch."
    assert [await fetch("ignored", robots) for robots in (False, True, False)] == [read, "robots", read]
    assert [await fetch("honoured", robots) for robots in (True, False, True)] == ["robots", read, "robots"]
    assert web.hits["/private/page.html"] == 2  # once per snapshot: each replays its own record
    assert WebSnapshot.open(tmp_path / "ignored").stats.live == WebSnapshot.open(tmp_path / "honoured").stats.live == 1
