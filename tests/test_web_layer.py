"""The web layer inside a run: provenance, deny lists, prefetch, robots.txt, page cache, bombs, engines."""

from __future__ import annotations

import ipaddress
import time

import pytest
from conftest import turn

from rumination.agent import Researcher
from rumination.backends.scripted import ScriptedBackend
from rumination.cli import main
from rumination.config import Config
from rumination.factory import make_engine
from rumination.search.chain import Fallback
from rumination.web.base import FetchError
from rumination.web.fetcher import WebFetcher

REPORT = "\n<think>\ndone\n</think>\nReport."


def _cfg(web, **extra) -> Config:
    return Config(backend="scripted", search="searxng", searxng_url=web.base, allow_private_network=True, **extra)


async def _run(cfg: Config, outputs: list[str], question: str = "q"):
    backend = ScriptedBackend(cfg, outputs=outputs)
    return await Researcher(cfg, backend=backend).run(question), backend


def _open(url: str) -> str:
    return turn({"name": "open", "arguments": {"url": url}})


FINISH = turn({"name": "finish", "arguments": {}})


async def test_open_is_limited_to_urls_the_model_was_shown(web):
    outputs = [
        _open(web.url("/gutenberg.html")),
        turn({"name": "search", "arguments": {"query": "Gutenberg"}}),
        _open(web.url("/gutenberg.html")),
        _open(web.url("/links.html")),
        FINISH,
        REPORT,
    ]
    result, _ = await _run(_cfg(web, prefetch=0), outputs)
    first, _, after_search, unseen = result.steps[:4]
    assert first.error == "refused" and "did not appear in the search results" in first.observation
    assert after_search.ok
    assert unseen.error == "refused"
    assert web.hits["/gutenberg.html"] == 1 and web.hits["/links.html"] == 0


async def test_links_in_pages_and_urls_in_the_question_may_be_opened(web):
    outputs = [
        _open(web.url("/links.html")),
        _open(web.url("/spread.html")),
        _open("http://other.example/x"),
        FINISH,
        REPORT,
    ]
    result, _ = await _run(_cfg(web), outputs, question=f"Summarise {web.url('/links.html')}")
    links, spread, other = result.steps[:3]
    assert links.ok and spread.ok  # the question named links.html; links.html links to /spread.html
    assert other.error != "refused" or "did not appear" not in other.observation  # linked, so not a provenance refusal


async def test_denied_domains_are_neither_searched_nor_opened(web):
    outputs = [
        turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}),
        _open(web.url("/spread.html")),
        FINISH,
        REPORT,
    ]
    result, _ = await _run(_cfg(web, deny_domains=["127.0.0.1"], open_any_url=True), outputs)
    assert result.steps[0].observation.startswith("No results")
    assert result.steps[1].error == "refused" and "denied domain" in result.steps[1].observation


async def test_prefetch_turns_a_click_into_a_cache_hit(web, monkeypatch):
    from rumination.web import guard

    # Prefetch never reaches a private address: here the loopback site plays the public web.
    public, real = ipaddress.ip_address("127.0.0.1"), guard.is_public_address
    monkeypatch.setattr(guard, "is_public_address", lambda ip: guard.unwrap(ip) == public or real(ip))
    outputs = [
        turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}),
        turn({"name": "click", "arguments": {"link_id": 1}}),
        FINISH,
        REPORT,
    ]
    cfg = _cfg(web, prefetch=2, page_cache=False)
    backend = ScriptedBackend(cfg, outputs=outputs)
    researcher = Researcher(cfg, backend=backend)
    events = []
    async for event in researcher.stream("q"):
        events.append(event)
        if event.type == "observation" and event.tool == "search":
            deadline = time.monotonic() + 10
            while web.hits["/spread.html"] == 0 and time.monotonic() < deadline:
                import asyncio

                await asyncio.sleep(0.01)  # the model "thinks" while the top results arrive
    click = next(e for e in events if e.type == "observation" and e.tool == "click")
    assert click.ok and web.hits["/spread.html"] == 1 and web.hits["/gutenberg.html"] == 1
    assert web.hits["/index.html"] == 0  # only the top 2 were prefetched


async def test_prefetch_never_outlives_the_run(web):
    outputs = [turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}), FINISH, REPORT]

    class SlowSearch:
        name = "slow"

        async def search(self, query, max_results):
            from rumination.search.base import SearchHit

            return [SearchHit(title="slow", url=web.url("/slow?delay=5"), snippet="")]

        async def aclose(self):
            """Nothing to close."""

    cfg = _cfg(web, prefetch=1)
    started = time.monotonic()
    await Researcher(cfg, backend=ScriptedBackend(cfg, outputs=outputs), engine=SlowSearch()).run("q")
    assert time.monotonic() - started < 4  # the pending prefetch was cancelled, not awaited


async def test_prefetch_never_fetches_what_the_guard_refuses(web):
    outputs = [turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}), FINISH, REPORT]
    cfg = Config(backend="scripted", search="searxng", searxng_url=web.base, prefetch=3)  # private sites refused
    await _run(cfg, outputs)
    assert web.hits["/gutenberg.html"] == web.hits["/spread.html"] == web.hits["/index.html"] == 0


async def test_robots_txt_is_honoured_and_can_be_switched_off(web):
    url = web.url("/private/page.html")
    with pytest.raises(FetchError) as info:
        await WebFetcher(_cfg(web)).fetch(url)
    assert info.value.kind == "robots" and web.hits["/private/page.html"] == 0
    page = await WebFetcher(_cfg(web, robots_txt=False)).fetch(url)
    assert "robots.txt asks us not to fetch" in page.text


async def test_page_cache_serves_a_page_read_in_an_earlier_run(web, tmp_path):
    cfg = _cfg(web, cache_dir=tmp_path / "cache", robots_txt=False)
    first = await WebFetcher(cfg).fetch(web.url("/gutenberg.html"))
    second = await WebFetcher(cfg).fetch(web.url("/gutenberg.html"))
    assert web.hits["/gutenberg.html"] == 1
    assert second.text == first.text and second.fetched_at == first.fetched_at
    assert len(list((tmp_path / "cache" / "pages" / "objects").iterdir())) == 1
    uncached = await WebFetcher(cfg.model_copy(update={"page_cache": False})).fetch(web.url("/gutenberg.html"))
    assert uncached.text == first.text and web.hits["/gutenberg.html"] == 2


async def test_gzip_bomb_is_cut_at_the_cap_with_flat_memory(web):
    import resource

    from localweb import gzip_bomb

    gzip_bomb()  # built before measuring: the server shares this process
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # 194 KB on the wire fits the 300 KB cap; the 200 MB it inflates to must not.
    page = await WebFetcher(_cfg(web, fetch_max_bytes=300_000, page_cache=False)).fetch(web.url("/gzip-bomb"))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert page.truncated and len(page.text) < 300_200
    assert grown_mb < 50  # the 200 MB body never existed in memory


async def test_fallback_engine_takes_over(tmp_path):
    from rumination.errors import ConfigError
    from rumination.local.build import build_index

    with pytest.raises(ConfigError, match="no local index named docs"):
        make_engine(Config(search="local:docs"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text("# Mainz\n\nGutenberg's workshop in Mainz.\n")
    cfg = Config(search="searxng", searxng_url="http://127.0.0.1:9", search_fallback=["local:docs"])
    build_index(tmp_path / "d", "docs", cfg.data_dir)
    engine = make_engine(cfg)
    assert isinstance(engine, Fallback)
    hits = await engine.search("Mainz", 5)  # SearXNG is down: the local index answers
    assert [h.title for h in hits] == ["Mainz"]
    await engine.aclose()


def test_cli_search_fetch_and_local_index_end_to_end(web, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "mainz.md").write_text("# Printing in Mainz\n\nGutenberg worked in Mainz with a screw press.\n")
    (docs / "venice.html").write_text(
        "<html><head><title>Venice presses</title></head><body><article><p>The "
        "Aldine Press of Venice printed small portable books.</p></article></body></html>"
    )
    assert main(["index", str(docs), "--name", "books"]) == 0
    out = capsys.readouterr().out
    assert "index 'books': 2 documents" in out and "--search local:books" in out

    assert main(["search", "screw press", "--search", "local:books"]) == 0
    observation = capsys.readouterr().out
    assert observation.startswith("【0†Printing in Mainz†local://books/") and str(tmp_path) not in observation
    local_url = observation.split("†")[2].split("】")[0]

    assert main(["fetch", local_url]) == 0
    assert capsys.readouterr().out.startswith(f"# Printing in Mainz\nURL: {local_url}\n\n")

    assert main(["search", "Gutenberg printing", "--searxng-url", web.base]) == 0
    assert capsys.readouterr().out.startswith("【0†Johannes Gutenberg and movable type†")
    assert main(["fetch", web.url("/gutenberg.html")]) == 1
    assert "this address may not be opened" in capsys.readouterr().out  # plain: nothing about where it resolved
    assert main(["fetch", web.url("/gutenberg.html"), "--allow-private-network"]) == 0
    assert "Gutenberg Bible" in capsys.readouterr().out


async def test_research_over_a_local_index(tmp_path):
    from rumination.local.build import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Movable type\n\nGutenberg cast metal type in Mainz around 1440.\n")
    cfg = Config(backend="scripted", search="local:lib")
    build_index(docs, "lib", cfg.data_dir)
    outputs = [
        turn({"name": "search", "arguments": {"query": "metal type"}}),
        turn({"name": "click", "arguments": {"link_id": 0}}),
        FINISH,
        REPORT,
    ]
    result, _ = await _run(cfg, outputs)
    assert result.steps[1].observation.startswith("# Movable type\nURL: local://lib/")
    assert next(s.url for s in result.sources).startswith("local://lib/")
    assert str(tmp_path) not in result.model_dump_json()


async def test_pages_read_on_a_private_network_are_not_cached_for_public_runs(web, tmp_path):
    private = _cfg(web, cache_dir=tmp_path / "c", robots_txt=False)
    await WebFetcher(private).fetch(web.url("/gutenberg.html"))
    public = Config(cache_dir=tmp_path / "c", robots_txt=False)  # private addresses refused
    with pytest.raises(FetchError) as info:
        await WebFetcher(public).fetch(web.url("/gutenberg.html"))
    assert info.value.kind == "refused"


async def test_prefetched_pages_do_not_widen_what_may_be_opened(web):
    outputs = [
        turn({"name": "search", "arguments": {"query": "Gutenberg printing"}}),
        _open("http://other.example/x"),
        FINISH,
        REPORT,
    ]
    cfg = _cfg(web, prefetch=3, page_cache=False)
    # links.html is not a result, but even a prefetched page's links only count once the model reads it
    result, _ = await _run(cfg, outputs)
    assert result.steps[1].error == "refused" and "did not appear" in result.steps[1].observation
