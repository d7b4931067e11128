"""The `rumination` command line: ask a question, show the configuration."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Flag name -> Config field for the options that map one to one.
_CONFIG_FLAGS = (
    *("model", "backend", "script", "device", "temperature", "top_p", "seed"),
    *("search", "searxng_url", "ddgs_backend", "allow_private_network", "search_layout", "page_max_tokens"),
    *("search_fallback", "allow_domains", "deny_domains", "open_any_url", "prefetch", "robots_txt", "page_cache"),
    *("max_turns", "max_new_tokens", "max_context_tokens", "max_seconds"),
    *("context_window", "kv_cache", "quantize", "attention", "compile", "device_map", "prefill_chunk", "prefix_cache"),
)


_RENAMED = {"context_window": "max-context", "prefix_cache": "no-prefix-cache"}
_FLAG_NAMES = {name: _RENAMED.get(name, name.replace("_", "-")) for name in _CONFIG_FLAGS}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="rumination",
        description="Deep research on your own hardware with GLM-Z1-Rumination-32B-0414.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="use this TOML config file instead of the default"
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="use this TOML config file instead of the default"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[config_flag], help=summary, description=description or summary)

    ask = command(
        "ask",
        "research a question and print the report",
        "Research QUESTION; the report goes to stdout, the trace to stderr.",
    )
    ask.add_argument("question", nargs="?", default="-", help="the question; '-' or omitted reads stdin")
    _add_research_flags(ask)
    out = ask.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the result as one JSON object")
    fmt.add_argument("--jsonl", action="store_true", help="print every event as one JSON line")
    out.add_argument("-o", "--output", type=Path, metavar="FILE", help="also write the report to FILE")
    out.add_argument("-q", "--quiet", action="store_true", help="no thinking trace or progress on stderr")

    tui = command(
        "tui",
        "research in a full-screen terminal app (extra: tui)",
        "Watch the model think, search and read, and read the report as it is written.",
    )
    tui.add_argument("question", nargs="?", default="", help="start researching this question at once")
    _add_research_flags(tui)
    tui.add_argument("--theme", help="a Textual theme name (default: the terminal's own colours)")

    search = command(
        "search",
        "print what the model sees for a search",
        "Run one search and print the observation the model would get.",
    )
    search.add_argument("query")
    _add_research_flags(search)
    fetch = command(
        "fetch", "print what the model sees for a page", "Fetch one URL and print the observation the model would get."
    )
    fetch.add_argument("url")
    _add_research_flags(fetch)
    index = command(
        "index",
        "build a local index for --search local:NAME",
        "Index the HTML, Markdown, text and PDF files under DIR (rerun to update).",
    )
    index.add_argument("directory", type=Path)
    index.add_argument("--name", required=True, help="the index name (letters, digits, - and _)")

    cfg = command("config", "print the effective configuration and where its file lives")
    cfg.add_argument("--path", action="store_true", help="print only the config file's path")
    return parser


def _add_research_flags(parser: argparse.ArgumentParser) -> None:
    """The model, search and budget flags shared by `ask`, `tui`, `search` and `fetch`."""
    model = parser.add_argument_group("model")
    model.add_argument("-m", "--model", help="Hugging Face id or local model directory")
    model.add_argument("--backend", help="model backend: local (default), scripted, or a plugin's name")
    model.add_argument("--script", type=Path, help="JSON array of model outputs to replay (implies --backend scripted)")
    model.add_argument("--device", choices=["auto", "cuda", "cpu"], help="where the local backend runs (auto)")
    model.add_argument("--temperature", type=float, help="sampling temperature (0.95; 0 = greedy)")
    model.add_argument("--top-p", type=float, help="nucleus sampling (0.7)")
    model.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    local = parser.add_argument_group("local model (speed and memory)")
    local.add_argument(
        "--max-context",
        dest="context_window",
        type=int,
        metavar="TOKENS",
        help="context window to allocate (the model's own; past it, YaRN RoPE scaling is applied)",
    )
    local.add_argument(
        "--kv-cache",
        choices=["auto", "static", "dynamic", "fp8"],
        help="static: preallocated, compiled decode (auto on CUDA); fp8: half the memory, slower decode",
    )
    local.add_argument("--quantize", choices=["none", "8bit", "4bit"], help="bitsandbytes weights (CUDA)")
    local.add_argument(
        "--attention",
        choices=["auto", "sdpa", "flash_attention_2", "eager"],
        help="attention kernel (auto: SDPA with packed GQA decode)",
    )
    local.add_argument("--compile", choices=["auto", "on", "off"], help="compile the decode step (auto: on CUDA)")
    local.add_argument("--device-map", metavar="MAP", help="placement over several GPUs: auto, balanced, sequential")
    local.add_argument("--prefill-chunk", type=int, metavar="TOKENS", help="prompt tokens per forward pass (2048)")
    local.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        default=None,
        help="re-prefill the whole prompt every turn (for comparison)",
    )
    web = parser.add_argument_group("search and browsing")
    web.add_argument("--search", help="search engine: ddgs (default), searxng, brave, tavily, local:INDEX, a plugin")
    web.add_argument(
        "--searxng-url", metavar="URL", help="base URL of your SearXNG instance (implies --search searxng)"
    )
    web.add_argument(
        "--allow-private-network",
        action="store_true",
        default=None,
        help="let the model open intranet and local addresses",
    )
    web.add_argument("--ddgs-backend", metavar="NAME", help="ddgs backend: auto, duckduckgo, bing, brave, ...")
    web.add_argument(
        "--fallback",
        action="append",
        dest="search_fallback",
        metavar="ENGINE",
        help="engine to try when the search engine fails (repeatable)",
    )
    web.add_argument(
        "--allow-domain",
        action="append",
        dest="allow_domains",
        metavar="DOMAIN",
        help="only use results from this domain (repeatable)",
    )
    web.add_argument(
        "--deny-domain",
        action="append",
        dest="deny_domains",
        metavar="DOMAIN",
        help="never use or open this domain (repeatable)",
    )
    web.add_argument(
        "--open-any-url",
        action="store_true",
        default=None,
        help="let the model open URLs it has not been shown (off: only results, links, the question)",
    )
    web.add_argument("--prefetch", type=int, metavar="N", help="fetch the top N results ahead of a click (3)")
    web.add_argument("--no-robots", action="store_const", const=False, dest="robots_txt", help="ignore robots.txt")
    web.add_argument(
        "--no-page-cache",
        action="store_const",
        const=False,
        dest="page_cache",
        help="do not reuse pages fetched earlier",
    )
    web.add_argument("--search-layout", choices=["card", "glm4"], help="how search results are shown to the model")
    web.add_argument("--page-max-tokens", type=int, metavar="N", help="page text kept per observation (8000)")
    budget = parser.add_argument_group("budgets")
    budget.add_argument("--max-turns", type=int, metavar="N", help="tool turns before the report (default 35)")
    budget.add_argument("--max-new-tokens", type=int, metavar="N", help="tokens per generation (default 16384)")
    budget.add_argument(
        "--max-context-tokens", type=int, metavar="N", help="force the report above this context (110000)"
    )
    budget.add_argument("--max-seconds", type=float, metavar="S", help="wall-clock budget for research (none)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rumination")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from rumination.errors import ConfigError, RuminationError

    try:
        if args.config:
            if not Path(args.config).expanduser().is_file():
                raise ConfigError(f"config file not found: {args.config}")
            os.environ["RUMINATION_CONFIG_FILE"] = args.config
        commands = {"config": _config, "ask": _ask, "tui": _tui, "search": _search, "fetch": _fetch, "index": _index}
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `rumination ask ... --jsonl | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except ConfigError as exc:
        print(f"rumination: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuminationError as exc:
        print(f"rumination: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _load_config(overrides: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from rumination.config import Config, config_path
    from rumination.errors import ConfigError

    try:
        return Config(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(
            f"invalid configuration: {problems} (settings come from flags, RUMINATION_* variables and {config_path()})"
        ) from None
    except ValueError as exc:  # a malformed TOML file
        raise ConfigError(f"cannot read the config file {config_path()}: {exc}") from None


def _describe(error: Any) -> str:
    field = ".".join(map(str, error["loc"])) or "config"
    flag = f" (--{_FLAG_NAMES[field]})" if field in _FLAG_NAMES else ""
    return f"{field}{flag}: {error['msg']}"


def _config(args: argparse.Namespace) -> int:
    from rumination.config import config_path

    path = config_path()
    if args.path:
        print(path)
        return EXIT_OK
    config = _load_config({})
    print(f"# config file: {path} ({'found' if path.exists() else 'not found; defaults in use'})")
    print("# precedence: flags > RUMINATION_* environment variables > config file > defaults")
    print(config.to_toml(), end="")
    return EXIT_OK


def _read_question(arg: str) -> str:
    from rumination.errors import ConfigError

    if arg == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError("no question: pass one as an argument or pipe it on stdin")
        arg = sys.stdin.read()
    if not arg.strip():
        raise ConfigError("the question is empty")
    return arg.strip()


def _research_config(args: argparse.Namespace) -> Any:
    overrides = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None}
    if args.script is not None and args.backend is None:
        overrides["backend"] = "scripted"
    if args.searxng_url is not None and args.search is None:
        overrides["search"] = "searxng"
    return _load_config(overrides)


def _search(args: argparse.Namespace) -> int:
    return _browse(args, "search", args.query)


def _fetch(args: argparse.Namespace) -> int:
    return _browse(args, "open", args.url)


def _browse(args: argparse.Namespace, action: str, target: str) -> int:
    """Run one browser action exactly as the model's tool call would, and print the observation."""
    import asyncio

    from rumination.backends.base import load_tokenizer
    from rumination.browser import Browser
    from rumination.factory import make_engine, make_fetcher

    config = _research_config(args)
    tokenizer = load_tokenizer(_tokenizer_source(config))

    async def run() -> Any:
        engine, fetcher = make_engine(config), make_fetcher(config)
        browser = Browser.from_config(config, engine, fetcher, tokenizer, prefetch=0, open_any_url=True)
        try:
            return await (browser.search(target) if action == "search" else browser.open(target))
        finally:
            await browser.aclose()
            await engine.aclose()
            await fetcher.aclose()

    result = asyncio.run(run())
    print(result.observation)
    return EXIT_OK if result.ok else EXIT_ERROR


def _tokenizer_source(config: Any) -> str:
    from rumination.assets import bundled_tokenizer_dir
    from rumination.protocol import DEFAULT_MODEL

    return str(bundled_tokenizer_dir()) if config.model == DEFAULT_MODEL else config.model


def _index(args: argparse.Namespace) -> int:
    from rumination.errors import ConfigError
    from rumination.search.local_index import build_index

    if not args.directory.is_dir():
        raise ConfigError(f"not a directory: {args.directory}")
    config = _load_config({})
    stats = build_index(
        args.directory,
        args.name,
        config.data_dir,
        progress=lambda line: print(line, file=sys.stderr),
        pdf_timeout=config.pdf_timeout,
        pdf_max_memory_mb=config.pdf_max_memory_mb,
    )
    print(
        f"index {args.name!r}: {stats.files_indexed} documents ({stats.files_updated} updated, "
        f"{stats.files_removed} removed, {stats.files_skipped} skipped) in {stats.seconds:.1f} s -> {stats.path}"
    )
    print(f"research it with: rumination ask '...' --search local:{args.name}")
    return EXIT_OK


def _tui(args: argparse.Namespace) -> int:
    from rumination.errors import RuminationError

    config = _research_config(args)
    try:
        from rumination.tui.app import check_theme, run_tui
    except ImportError:
        raise RuminationError("the TUI needs Textual: pip install 'rumination[tui]'") from None
    if args.theme:
        check_theme(args.theme)
    run_tui(config, args.question, theme=args.theme)
    return EXIT_OK


def _ask(args: argparse.Namespace) -> int:
    from rumination.errors import ConfigError, RuminationError

    question = _read_question(args.question)
    if args.output and not args.output.expanduser().parent.is_dir():
        raise ConfigError(f"cannot write the report to {args.output}: its directory does not exist")
    config = _research_config(args)
    import asyncio

    from rumination.agent import Researcher

    researcher = Researcher(config)
    try:
        result = asyncio.run(_consume(researcher, question, args))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    if args.json:
        print(result.model_dump_json(indent=2))
    if args.output:
        try:
            args.output.expanduser().write_text(result.report + "\n", encoding="utf-8")
        except OSError as exc:
            raise RuminationError(f"cannot write the report to {args.output}: {exc.strerror}") from None
    return EXIT_OK


def _handle_ctrl_c(researcher: Any, started: list[bool]) -> None:
    """First Ctrl-C during research: write the report from what was gathered. Otherwise: stop now."""
    import asyncio
    import contextlib
    import signal

    task, presses = asyncio.current_task(), [0]

    def on_sigint() -> None:
        presses[0] += 1
        if presses[0] == 1 and started[0]:
            researcher.request_finish()
            print(
                "\n! Ctrl-C: writing the report from what was gathered; press Ctrl-C again to stop now",
                file=sys.stderr,
                flush=True,
            )
        elif task is not None:
            task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on this platform/thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)


async def _consume(researcher: Any, question: str, args: argparse.Namespace) -> Any:
    from rumination import events as ev
    from rumination.console import Trace

    trace = None if args.quiet else Trace(sys.stderr)
    stream_report = not (args.json or args.jsonl)
    started_report, ends_in_newline = False, True
    result = None
    started = [False]
    _handle_ctrl_c(researcher, started)
    async for event in researcher.stream(question):
        started[0] = started[0] or isinstance(event, ev.RunStarted)
        if trace is not None:
            trace(event)
        if args.jsonl:
            sys.stdout.write(event.model_dump_json() + "\n")
            sys.stdout.flush()
        if isinstance(event, ev.ReportDelta) and stream_report:
            text = event.text if started_report else event.text.lstrip()
            started_report = started_report or bool(text)
            sys.stdout.write(text)
            sys.stdout.flush()
            ends_in_newline = text.endswith("\n") if text else ends_in_newline
        if isinstance(event, ev.RunFinished):
            result = event.result
    if stream_report:
        if not started_report and result is not None:
            sys.stdout.write(result.report)
            ends_in_newline = result.report.endswith("\n")
        if not ends_in_newline:
            sys.stdout.write("\n")
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
