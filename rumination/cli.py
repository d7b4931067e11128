"""The `rumination` command line: ask a question, research a batch, show the configuration."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rumination.flags import EXIT_USAGE, Parser, add_settings, given_settings, load_config

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (imports nothing heavy)."""
    parser = Parser(
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

    def command(name: str, summary: str, description: str | None = None, args: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[config_flag],
            help=summary,
            description=description or summary,
            usage=f"%(prog)s [options] {args}".rstrip(),  # the derived options are too many to list in one line
        )

    ask = command(
        "ask",
        "research a question and print the report",
        "Research QUESTION; the report goes to stdout, the trace to stderr.",
        "[question]",
    )
    ask.add_argument("question", nargs="?", default="-", help="the question; '-' or omitted reads stdin")
    add_settings(ask, "ask")
    _add_output(ask, live=True)

    tui = command(
        "tui",
        "research in a full-screen terminal app (extra: tui)",
        "Watch the model think, search and read, and read the report as it is written.",
        "[question]",
    )
    tui.add_argument("question", nargs="?", default="", help="start researching this question at once")
    add_settings(tui, "tui")
    tui.add_argument("--theme", help="a Textual theme name (default: the terminal's own colours)")

    batch = command(
        "batch",
        "research every question of a file, one JSON line of results each",
        "Research each question of a file (JSONL with an id and a question, or one question a line) and append "
        "one JSON line per finished question to the results file; a rerun skips the questions already there.",
        "questions",
    )
    batch.add_argument("questions", type=Path, help="a JSONL or text file of questions")
    add_settings(batch, "batch")
    out = batch.add_argument_group("output")
    out.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="the results file (default: the questions file's name with .results.jsonl)",
    )
    out.add_argument("--retry-failed", action="store_true", help="research the questions that failed last time again")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    evaluate = command(
        "eval",
        "research a dataset's questions and score the reports against its answers",
        "Research every question of DATASET through batch (resumable), score each report (exact match, token F1, "
        "answer contained; a judge model with --judge-backend) and write scores, a summary table and a plot.",
        "DATASET",
    )
    from rumination.eval.cli import add_eval_arguments

    add_eval_arguments(evaluate)
    add_settings(evaluate, "eval")

    search = command(
        "search",
        "print what the model sees for a search",
        "Run one search and print the observation the model would get.",
        "query",
    )
    search.add_argument("query")
    add_settings(search, "search")
    fetch = command(
        "fetch",
        "print what the model sees for a page",
        "Fetch one URL and print the observation the model would get.",
        "url",
    )
    fetch.add_argument("url")
    fetch.add_argument(
        "--question",
        default="",
        help="what the model is looking for: a page over --page-max-tokens shows the passages that matter to it",
    )
    add_settings(fetch, "fetch")
    index = command(
        "index",
        "build a local index for --search local:NAME",
        "Index the HTML, Markdown, text and PDF files under DIR (rerun to update).",
        "--name NAME directory",
    )
    index.add_argument("directory", type=Path)
    index.add_argument("--name", required=True, help="the index name (letters, digits, - and _)")
    add_settings(index, "index")

    sessions = command("sessions", "list the journaled runs: id, start, status, turns, question")
    sessions.add_argument("--json", action="store_true", help="one JSON object per run, a line each")
    add_settings(sessions, "sessions")

    def past_run(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        """A command about a journaled run: its ID, its settings and the report's output options."""
        parser = command(name, summary, description, "ID")
        parser.add_argument("run_id", metavar="ID", help="a run id or a prefix (rumination sessions lists them)")
        if name == "replay":
            parser.add_argument("--live", action="store_true", help="run the model instead of its recorded outputs")
        add_settings(parser, name)
        _add_output(parser, live=name != "show")
        return parser

    past_run("show", "print a past run's report and references")
    past_run(
        "resume",
        "continue an interrupted run from its last complete turn",
        "Continue run ID (killed, crashed, stopped by Ctrl-C twice, out of memory, or left by a failing server) from "
        "its last complete turn, with its own settings; options given here change them. Nothing it fetched is "
        "fetched again, and its budgets count what it spent.",
    )
    past_run(
        "replay",
        "run a past run again over its recorded web, offline",
        "Run ID again from its recorded searches and pages, with no network. By default the model's recorded "
        "outputs are played back, which must reproduce the report exactly (exit 1 if it differs); with --live "
        "the model runs afresh (a new run over a frozen web). Options given here change the recorded settings.",
    )

    cfg = command("config", "print the effective configuration and where its file lives")
    cfg.add_argument("--path", action="store_true", help="print only the config file's path")
    return parser


def _add_output(parser: argparse.ArgumentParser, *, live: bool) -> None:
    """The output options of a command that prints a report (`live`: one that runs research, with a trace)."""
    out = parser.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument(
        "--format",
        choices=["md", "html", "json"],
        help="md: the report and its references (default); html: one self-contained page; json: the whole result",
    )
    fmt.add_argument("--json", action="store_true", help="the same as --format json")
    if live:
        fmt.add_argument("--jsonl", action="store_true", help="print every event as one JSON line")
    out.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="also write the report to FILE (in --format, else by its extension: .html, .json, otherwise md)",
    )
    out.add_argument("--no-references", action="store_true", help="leave the checked reference list out")
    if live:
        out.add_argument("-q", "--quiet", action="store_true", help="no thinking trace or progress on stderr")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rumination")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # the command's own parser answers, so the suggestion and the help it names are the command's
        command = _subcommands(parser).get(args.command or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from rumination.errors import ConfigError, RuminationError
    from rumination.sanitize import terminal_safe

    try:
        if args.config:
            if not Path(args.config).expanduser().is_file():
                raise ConfigError(f"config file not found: {args.config}")
            os.environ["RUMINATION_CONFIG_FILE"] = args.config
        commands = {
            "config": _config,
            "ask": _ask,
            "batch": _batch,
            "eval": _eval,
            "tui": _tui,
            "search": _search,
            "fetch": _fetch,
            "index": _index,
            "sessions": _sessions,
            "show": _show,
            "resume": _resume,
            "replay": _replay,
        }
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `rumination ask ... --jsonl | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except ConfigError as exc:
        print(f"rumination: error: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except RuminationError as exc:
        print(f"rumination: error: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_ERROR


def _config(args: argparse.Namespace) -> int:
    from rumination.config import config_path

    path = config_path()
    if args.path:
        print(path)
        return EXIT_OK
    config = load_config(args)
    print(f"# config file: {path} ({'found' if path.exists() else 'not found; defaults in use'})")
    print("# precedence: flags > RUMINATION_* environment variables > config file > defaults")
    print(config.to_toml(), end="")
    return EXIT_OK


def _read_question(arg: str) -> str:
    from rumination.errors import ConfigError

    no_question = "no question: pass one as an argument or pipe it on stdin"
    if arg == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError(no_question)
        arg = sys.stdin.read()
        if not arg.strip():  # e.g. `< /dev/null`: the same advice as an empty terminal
            raise ConfigError(no_question + " (stdin was empty)")
    if not arg.strip():
        raise ConfigError("the question is empty")
    return arg.strip()


def _search(args: argparse.Namespace) -> int:
    return _browse(args, "search", args.query)


def _fetch(args: argparse.Namespace) -> int:
    return _browse(args, "open", args.url, args.question)


def _browse(args: argparse.Namespace, action: str, target: str, focus: str = "") -> int:
    """Run one browser action exactly as the model's tool call would, and print the observation."""
    import asyncio

    from rumination.agent import call_tool
    from rumination.backends.base import load_tokenizer
    from rumination.browser import Browser
    from rumination.factory import NoEngine, make_engine, make_fetcher
    from rumination.formatting import observation
    from rumination.results import ToolCall
    from rumination.sanitize import terminal_safe
    from rumination.tokens import LazyTokenizer

    config = load_config(args)
    tokenizer = LazyTokenizer(lambda: load_tokenizer(_tokenizer_source(config)))
    call = ToolCall(name=action, arguments={"query": target} if action == "search" else {"url": target})

    async def run() -> Any:
        engine = make_engine(config) if action == "search" else NoEngine()
        fetcher = make_fetcher(config)
        # The user's own argument is the question: a URL they name is theirs to open, on the intranet too.
        browser = Browser.from_config(
            config, engine, fetcher, tokenizer, question=target, prefetch=0, open_any_url=True
        )
        try:
            # `focus` plays the model's thinking before the call; a failure nobody anticipated is an observation too
            return await call_tool(browser, call, focus)
        finally:
            await browser.aclose()
            await engine.aclose()
            await fetcher.aclose()

    result, _ = asyncio.run(run())
    # Exactly what the loop shows the model, then the terminal rule (already met) stated where the text is printed.
    print(terminal_safe(observation(result)))
    return EXIT_OK if result.ok else EXIT_ERROR


def _tokenizer_source(config: Any) -> str:
    from rumination.assets import bundled_tokenizer_dir
    from rumination.protocol import DEFAULT_MODEL

    return str(bundled_tokenizer_dir()) if config.model == DEFAULT_MODEL else config.model


def _index(args: argparse.Namespace) -> int:
    from rumination.console import plural
    from rumination.errors import ConfigError
    from rumination.local.build import build_index

    if not args.directory.is_dir():
        raise ConfigError(f"not a directory: {args.directory}")
    config = load_config(args)
    stats = build_index(
        args.directory,
        args.name,
        config.data_dir,
        progress=lambda line: print(line, file=sys.stderr),
        pdf_timeout=config.pdf_timeout,
        pdf_max_memory_mb=config.pdf_max_memory_mb,
    )
    print(
        f"index {args.name!r}: {plural(stats.files_indexed, 'document')} ({stats.files_updated} updated, "
        f"{stats.files_removed} removed, {stats.files_skipped} skipped) in {stats.seconds:.1f} s -> {stats.path}"
    )
    print(f"research it with: rumination ask '...' --search local:{args.name}")
    return EXIT_OK


def _tui(args: argparse.Namespace) -> int:
    from rumination.errors import RuminationError

    config = load_config(args)
    try:
        from rumination.tui.app import check_theme, run_tui
    except ImportError:
        raise RuminationError("the TUI needs Textual: pip install -e '.[tui]' in your checkout") from None
    if args.theme:
        check_theme(args.theme)
    report = run_tui(config, args.question, theme=args.theme)
    if report is not None:  # a report neither saved nor copied is not lost on quit
        from rumination.sanitize import terminal_safe

        print("rumination: the report was not saved; here it is", file=sys.stderr)
        sys.stdout.write(terminal_safe(report).rstrip() + "\n")
    return EXIT_OK


def _ask(args: argparse.Namespace) -> int:
    question = _read_question(args.question)
    _check_output(args)
    config = load_config(args)
    from rumination.agent import Researcher

    researcher = Researcher(config)
    return _research(researcher, lambda: researcher.stream(question), args)[0]


def _resume(args: argparse.Namespace) -> int:
    from rumination import journal
    from rumination.agent import Researcher
    from rumination.runs import check_resumable, config_for

    _check_output(args)
    base = load_config(args)
    log = journal.load(base.data_dir, args.run_id)
    check_resumable(log)
    config = config_for(log, base, **given_settings(args))
    researcher = Researcher(config)
    return _research(researcher, lambda: researcher.resume_stream(log), args)[0]


def _replay(args: argparse.Namespace) -> int:
    from rumination import journal
    from rumination.agent import Researcher
    from rumination.backends.scripted import ScriptedBackend
    from rumination.errors import RuminationError
    from rumination.runs import config_for, recorded_outputs, recorded_web, replay_config

    _check_output(args)
    base = load_config(args)
    log = journal.load(base.data_dir, args.run_id)
    if args.live:
        config = config_for(log, base, **given_settings(args))
        backend = None
    elif log.result is None or log.result.stop_reason == "error":
        state = "is still running" if log.status == "running" else f"ended without a report ({log.status})"
        raise RuminationError(
            f"run {log.id} {state} after {log.state.turn} tool turns: there is no report to reproduce. Resume it "
            f"first (rumination resume {log.id}), or replay it with a model (--live)"
        )
    else:
        config = replay_config(log, base, **given_settings(args))
        outputs = recorded_outputs(log)
        if not outputs:
            raise RuminationError(f"run {log.id} has no recorded model output to replay (try --live)")
        backend = ScriptedBackend(config, outputs=outputs)
    engine, fetcher = recorded_web(log, config)
    researcher = Researcher(config, backend=backend, engine=engine, fetcher=fetcher)
    code, result = _research(researcher, lambda: researcher.stream(log.header.question, replay_of=log.id), args)
    if not args.live and log.result is not None:
        same = result.report == log.result.report
        print(
            f"replay of {log.id}: the report is {'identical' if same else 'DIFFERENT'}"
            + ("" if same else " (the recorded outputs no longer lead to the same report)"),
            file=sys.stderr,
        )
        code = code or (EXIT_OK if same else EXIT_ERROR)
    return code


def _check_output(args: argparse.Namespace) -> None:
    from rumination.errors import ConfigError

    if args.output and not args.output.expanduser().parent.is_dir():
        raise ConfigError(f"cannot write the report to {args.output}: its directory does not exist")


def _research(researcher: Any, events: Any, args: argparse.Namespace) -> tuple[int, Any]:
    """Run a research stream with the ask command's output rules; the exit code and the result."""
    import asyncio

    run_id: list[str] = []
    try:
        result = asyncio.run(_consume(researcher, events, args, run_id))
    except (asyncio.CancelledError, KeyboardInterrupt):
        if run_id:
            print(f"\nrumination resume {run_id[0]} continues this run from its last complete turn", file=sys.stderr)
        raise KeyboardInterrupt from None
    _snapshot_note(researcher.config, args.quiet)
    _finish_output(result, args, printed=True)
    if result.stop_reason == "error":  # the backend failed mid-run: the partial result is out, the exit says so
        if args.quiet:
            from rumination.sanitize import terminal_safe

            print(f"rumination: error: {terminal_safe(result.error or 'the backend failed')}", file=sys.stderr)
        if result.run_id and args.command != "replay":  # a replay is replayed again, not resumed
            print(f"rumination resume {result.run_id} continues this run", file=sys.stderr)
        return EXIT_ERROR, result
    return EXIT_OK, result


def _format(args: argparse.Namespace, path: Path | None = None) -> str:
    """The output format: --format (or --json), else the file's extension, else md."""
    if args.json:
        return "json"
    if args.format:
        return args.format
    if path is not None and path.suffix.lower() in (".html", ".htm", ".json"):
        return "json" if path.suffix.lower() == ".json" else "html"
    return "md"


def _finish_output(result: Any, args: argparse.Namespace, *, printed: bool) -> None:
    """After a run (or for `show`): stdout in the chosen format, the -o file, citation warnings on stderr."""
    from rumination.errors import RuminationError
    from rumination.export import render, warnings
    from rumination.sanitize import terminal_safe

    references = not args.no_references
    fmt = _format(args)
    if fmt != "md" and not getattr(args, "jsonl", False):  # md was printed as the run went
        sys.stdout.write(render(result, fmt, references=references) + "\n")
    elif not printed:
        text = render(result, "md", references=references)
        sys.stdout.write((terminal_safe(text) if sys.stdout.isatty() else text) + "\n")
    if args.output and not (result.error and not result.report):  # no report: an earlier file there is kept
        path = args.output.expanduser()
        try:
            path.write_text(render(result, _format(args, path), references=references) + "\n", encoding="utf-8")
        except OSError as exc:
            raise RuminationError(f"cannot write the report to {args.output}: {exc.strerror}") from None
    if getattr(args, "quiet", True) or not printed:  # the trace has said them otherwise
        for line in warnings(result):
            print(f"rumination: warning: {terminal_safe(line)}", file=sys.stderr)


def _sessions(args: argparse.Namespace) -> int:
    import json

    from rumination import journal
    from rumination.sanitize import terminal_safe

    config = load_config(args)
    runs, problems = journal.summaries(config.data_dir)
    for problem in problems:
        print(f"rumination: warning: {terminal_safe(problem)}", file=sys.stderr)
    if args.json:
        for run in runs:
            print(json.dumps({**vars(run), "started_at": run.started_at.isoformat()}, ensure_ascii=False))
        return EXIT_OK
    if not runs:
        print(f"no runs yet in {config.data_dir / journal.RUNS}", file=sys.stderr)
        return EXIT_OK
    print(f"{'ID':8}  {'STARTED':16}  {'STATUS':11}  {'TURNS':>5}  QUESTION")
    for run in runs:
        started = run.started_at.astimezone().strftime("%Y-%m-%d %H:%M")
        question = (f"[replay of {run.replay_of}] " if run.replay_of else "") + " ".join(run.question.split())
        question = question if len(question) <= 80 else question[:79] + "…"
        print(terminal_safe(f"{run.id:8}  {started:16}  {run.status:11}  {run.turns:>5}  {question}"))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from rumination import journal
    from rumination.runs import partial_result

    config = load_config(args)
    log = journal.load(config.data_dir, args.run_id)
    result = log.result or partial_result(log)
    turns = f"after {log.state.turn} tool turn{'' if log.state.turn == 1 else 's'}"
    if log.status == "running":
        print(f"rumination: run {log.id} is still running ({turns} so far)", file=sys.stderr)
    elif log.resumable:
        why = "was interrupted" if log.result is None else f"failed ({log.result.error})"
        print(f"rumination: run {log.id} {why} {turns}; rumination resume {log.id} continues it", file=sys.stderr)
    _finish_output(result, args, printed=False)
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from rumination.eval.cli import main as evaluate

    config = load_config(args)
    code = evaluate(args, config)
    _snapshot_note(config, args.quiet)
    return code


def _snapshot_note(config: Any, quiet: bool) -> None:
    """Say what the frozen web replayed and recorded."""
    if config.web_snapshot is not None and not quiet:
        from rumination.snapshot import WebSnapshot

        print(WebSnapshot.open(config.web_snapshot).stats.summary(), file=sys.stderr)


def _batch(args: argparse.Namespace) -> int:
    import asyncio

    from rumination.batch import read_questions, run_batch
    from rumination.console import plural
    from rumination.errors import ConfigError

    source = args.questions.expanduser()
    questions = read_questions(source)
    output = (args.output or source.with_suffix(".results.jsonl")).expanduser()
    if not output.parent.is_dir():
        raise ConfigError(f"cannot write the results to {output}: its directory does not exist")
    if output.resolve() == source.resolve():
        raise ConfigError(f"the results file cannot be the questions file: {output}")
    config = load_config(args)
    try:
        summary = asyncio.run(
            run_batch(questions, config, output, progress=not args.quiet, retry_failed=args.retry_failed)
        )
    except KeyboardInterrupt:
        print(f"\nthe finished questions are kept in {output}; run the same command again to go on", file=sys.stderr)
        raise
    _snapshot_note(config, args.quiet)
    line = f"{plural(summary.done, 'question')} answered, {summary.failed} failed, {summary.skipped} already done"
    if summary.failed_before:
        line += f" ({summary.failed_before} of them failed: --retry-failed tries them again)"
    print(f"{line}, in {summary.seconds:.1f} s; results: {output}")
    return EXIT_ERROR if summary.failed else EXIT_OK


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


async def _consume(researcher: Any, events: Any, args: argparse.Namespace, run_id: list[str]) -> Any:
    from rumination import events as ev
    from rumination.console import Trace
    from rumination.sanitize import terminal_safe

    trace = None if args.quiet else Trace(sys.stderr)
    print_report = _format(args) == "md" and not args.jsonl
    # Live to a terminal; to a pipe or file, the final report only (a streamed one may restart, see ReportDelta).
    live = print_report and sys.stdout.isatty()
    shown, ends_in_newline = "", True
    result = None
    started = [False]
    _handle_ctrl_c(researcher, started)
    async for event in events():
        started[0] = started[0] or isinstance(event, ev.RunStarted)
        if isinstance(event, ev.RunStarted) and event.run_id and not event.replay_of:
            run_id[:] = [event.run_id]
        if trace is None and isinstance(event, ev.ErrorEvent) and event.detail.get("journal"):  # -q keeps these
            print(f"rumination: warning: {terminal_safe(event.message)}", file=sys.stderr)
        if trace is not None:
            trace(event)
        if args.jsonl:
            sys.stdout.write(event.model_dump_json() + "\n")
            sys.stdout.flush()
        if isinstance(event, ev.ReportDelta) and live:
            if event.reset and shown:
                sys.stdout.write("\n\n[the model went back to thinking; the report starts again]\n\n")
                shown = ""
            text = terminal_safe(event.text if shown else event.text.lstrip())
            shown += text
            sys.stdout.write(text)
            sys.stdout.flush()
            ends_in_newline = text.endswith("\n") if text else ends_in_newline
        if isinstance(event, ev.RunFinished):
            result = event.result
    if print_report and result is not None:
        from rumination.export import references, render

        if shown:  # streamed as written: the checked references follow it
            tail = references(result) if not args.no_references else ""
            sys.stdout.write(("" if ends_in_newline else "\n") + (f"\n{terminal_safe(tail)}\n" if tail else ""))
        else:
            text = render(result, "md", references=not args.no_references)
            sys.stdout.write((terminal_safe(text) if live else text) + "\n")
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
