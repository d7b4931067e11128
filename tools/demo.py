"""Try Rumination without a GPU or the internet: the scripted backend researches a local website.

    python tools/demo.py [--jsonl | --json]
    python tools/demo.py --tui          # the same run in the full-screen TUI

Starts the test website and its SearXNG-compatible search endpoint on 127.0.0.1, replays a recorded
research run through the real loop, browser, fetcher and CLI, and prints the report.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from localweb import LocalWeb  # noqa: E402

from rumination.cli import main  # noqa: E402

QUESTION = "When did Gutenberg introduce movable type, and how fast did printing spread?"


def script(base: str) -> list[str]:
    """A recorded run: search, click, open, finish, report."""

    def call(name: str, thinking: str, **arguments: object) -> str:
        return f"\n<think>\n{thinking}\n</think>" + json.dumps({"name": name, "arguments": arguments})

    return [
        call("search", "I need sources on Gutenberg first.", query="Gutenberg printing"),
        call("click", "Result 0 is the article on Gutenberg himself.", link_id=0),
        call("open", "The article links to a page on how printing spread.", url=f"{base}/spread.html"),
        call("finish", "I have dates for both parts of the question."),
        "\n<think>\nWrite a short report citing both pages.\n</think>\n# Gutenberg and the spread of printing\n\n"
        f"Johannes Gutenberg introduced movable metal type in Mainz around 1440 [1]({base}/gutenberg.html). "
        f"By 1500 presses were working in more than 250 European cities [2]({base}/spread.html).\n",
    ]


def run(extra: list[str]) -> int:
    """Serve the site, write the script, run `rumination ask` (or `tui`) on it."""
    command = ["tui", QUESTION] if "--tui" in extra else ["ask", QUESTION]
    extra = [arg for arg in extra if arg != "--tui"]
    with LocalWeb() as web, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "script.json"
        path.write_text(json.dumps(script(web.base)), encoding="utf-8")
        flags = ["--script", str(path), "--searxng-url", web.base, "--allow-private-network"]
        return main([*command, *flags, *extra])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
