"""Try Rumination without a GPU or the internet: a recorded research run replayed against a local website.

    python tools/demo.py [--json | --jsonl] [-q]
    python tools/demo.py --tui          # the same run in the full-screen TUI

Starts the test website and its SearXNG-compatible search endpoint on 127.0.0.1, replays a recorded
research run (scripted model outputs: no real model runs) through the real loop, browser, fetcher and
CLI, and prints the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from localweb import LocalWeb  # noqa: E402

from rumination import events as ev  # noqa: E402
from rumination.agent import Researcher  # noqa: E402
from rumination.backends.scripted import ScriptedBackend  # noqa: E402
from rumination.cli import main  # noqa: E402
from rumination.config import Config  # noqa: E402

if TYPE_CHECKING:
    from rumination.tui.app import ResearchApp

QUESTION = "When did Gutenberg introduce movable type, and how fast did printing spread?"
NOTICE = (
    "demo: this replays a recorded research run. The model's outputs are scripted (no real model runs) and the "
    "website it searches and reads is served on 127.0.0.1 (nothing leaves this machine)."
)
REPLAY_NOTE = "Demo: every question replays the same recorded run about Gutenberg (scripted model, local website)."


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


class Replay(Researcher):
    """A Researcher that replays the recording for every question (a scripted backend replays its outputs once)."""

    def __init__(self, config: Config, outputs: list[str]):
        self.outputs = outputs
        self.scripted = ScriptedBackend(config, outputs=outputs)
        super().__init__(config, backend=self.scripted)

    async def stream(self, question: str) -> AsyncIterator[ev.Event]:
        """Research `question` with a fresh copy of the script; the tokenizer, once loaded, is kept."""
        if self.scripted.prompts:
            fresh = ScriptedBackend(self.config, outputs=self.outputs)
            fresh.tokenizer = self.scripted.tokenizer
            self.backend = self.scripted = fresh
        async with contextlib.aclosing(super().stream(question)) as events:
            async for event in events:
                yield event


def config_for(base: str) -> Config:
    """The settings of a demo run: the scripted backend, searching the local site's SearXNG endpoint."""
    return Config(backend="scripted", search="searxng", searxng_url=base, allow_private_network=True)


def tui_app(base: str) -> ResearchApp:
    """The TUI on the recording; it asks the recorded question at once, and `n` replays it for any other."""
    from rumination.tui.app import ResearchApp

    class DemoApp(ResearchApp):
        def start(self, question: str) -> None:
            super().start(question)
            if self.running:
                self.notify(REPLAY_NOTE, timeout=10)

    config = config_for(base)
    return DemoApp(config, QUESTION, researcher=Replay(config, script(base)))


def build_parser() -> argparse.ArgumentParser:
    """The demo's own options."""
    parser = argparse.ArgumentParser(
        prog="python tools/demo.py",
        description="Try Rumination without a GPU or the internet. This replays a recorded research run: the "
        "model's outputs are scripted (no real model runs), and the website it searches and reads is served on "
        "127.0.0.1. The run goes through the real loop, browser, fetcher and CLI; the report goes to stdout.",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--tui",
        action="store_true",
        help="show the run in the full-screen terminal app instead (n replays it for another question)",
    )
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    output.add_argument("--jsonl", action="store_true", help="print every event as one JSON line")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no thinking trace or progress on stderr (without --tui)"
    )
    return parser


def run(argv: list[str]) -> int:
    """Serve the site, then run `rumination ask` on the recording, or the TUI."""
    args = build_parser().parse_args(argv)
    print(NOTICE, file=sys.stderr, flush=True)
    with LocalWeb() as web:
        if args.tui:
            try:
                app = tui_app(web.base)
            except ImportError:
                print("demo: the TUI needs Textual: pip install -e '.[tui]' in your checkout", file=sys.stderr)
                return 1
            app.run()
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "script.json"
            path.write_text(json.dumps(script(web.base)), encoding="utf-8")
            flags = ["--script", str(path), "--searxng-url", web.base, "--allow-private-network"]
            output = [flag for flag, on in (("--json", args.json), ("--jsonl", args.jsonl), ("-q", args.quiet)) if on]
            return main(["ask", QUESTION, *flags, *output])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
