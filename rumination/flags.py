"""The command line's options, derived from Config's fields, and the configuration they make."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from datetime import date
from typing import Any, NoReturn

from pydantic import SecretStr

from rumination.config import GROUPS, SECRETS, Config, env_name

EXIT_USAGE = 2

# What cannot be derived from Config's fields: short options and the singular names of repeatable lists.
_SHORT = {"model": "-m"}
_REPEATABLE = {"search_fallback": "--fallback", "allow_domains": "--allow-domain", "deny_domains": "--deny-domain"}
# Keys are file or environment only, except a serving engine's: its key is often a throwaway token (vLLM --api-key).
_SECRET_FLAGS = {"openai_api_key": "--api-key", "judge_api_key": "--judge-api-key"}
_METAVAR = {"search_fallback": "ENGINE", "script": "FILE", "search": "ENGINE"}
# Names from before the flags were derived, accepted (hidden) for one release: flag -> (field, constant or None).
_OLD_NAMES: dict[str, tuple[str, Any]] = {
    "--max-context": ("context_window", None),
    "--no-robots": ("robots_txt", False),
}
# The settings each command takes: groups, single fields, and "-field" to leave one out; eval takes all.
_RUN = tuple(group.__name__ for group in GROUPS if group.__name__ != "BatchSettings")
_COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "ask": _RUN,
    "tui": _RUN,
    "batch": (*_RUN, "concurrency"),
    "search": ("SearchSettings", "allow_domains", "deny_domains", "user_agent", "data_dir"),
    "fetch": ("model", "BrowsingSettings", "-prefetch", "SourceSettings", "-open_any_url", "StorageSettings"),
    "index": ("pdf_timeout", "pdf_max_memory_mb", "data_dir"),
    "config": (),
    "sessions": ("data_dir",),
    "show": ("data_dir",),
    "resume": _RUN,
    "replay": _RUN,
}


class Parser(argparse.ArgumentParser):
    """argparse with a short usage line in errors and a suggestion for a misspelt option."""

    def error(self, message: str) -> NoReturn:
        """Print the usage line, the problem and the closest real option; exit 2."""
        import difflib
        import re

        known = sorted(_all_options(self))
        for typo in re.findall(r"(?<![\w-])--?[\w-]+", message.partition(":")[2] if "argument" in message else message):
            if typo not in known and (near := difflib.get_close_matches(typo.split("=")[0], known, n=1, cutoff=0.6)):
                message += f" (did you mean {near[0]}?)"
                break
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nsee '{self.prog} --help' for every option\n")


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` and its subcommands."""
    options = {o for action in parser._actions if action.help != argparse.SUPPRESS for o in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _all_options(sub)
    return options


def settings_of(command: str) -> list[tuple[str, list[str]]]:
    """The (group title, fields) a command takes, in Config's order."""
    wanted = _COMMAND_SETTINGS.get(command)
    groups = []
    for group in GROUPS:
        fields = [
            f
            for f in group.model_fields
            if wanted is None or ((group.__name__ in wanted or f in wanted) and f"-{f}" not in wanted)
        ]
        if fields:
            groups.append((group.__doc__ or group.__name__, fields))
    return groups


def flag_name(field: str) -> str:
    """The option that sets `field`: its name in kebab-case, or the singular name of a repeatable list."""
    return _REPEATABLE.get(field) or _SECRET_FLAGS.get(field) or "--" + field.replace("_", "-")


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """One option per Config field the command takes, derived from the field's type, default and description."""
    for title, fields in settings_of(command):
        group = parser.add_argument_group(title)
        for field in fields:
            if field not in SECRETS or field in _SECRET_FLAGS:  # other keys stay out of shell history and `ps`
                group.add_argument(*_option_strings(field), dest=field, default=None, **_option_kind(field))
    for old, (field, const) in _OLD_NAMES.items():
        if any(field in fields for _, fields in settings_of(command)):
            kind = {"action": "store_const", "const": const} if const is not None else {"type": int}
            parser.add_argument(old, dest=f"old:{old}", default=None, help=argparse.SUPPRESS, **kind)


def _option_strings(field: str) -> list[str]:
    return [_SHORT[field], flag_name(field)] if field in _SHORT else [flag_name(field)]


def _option_kind(field: str) -> dict[str, Any]:
    """argparse keywords for a field: choices from a Literal, a negative form for a bool, append for a list."""
    info = Config.model_fields[field]
    kind = info.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    default = None if info.default_factory is not None or info.default in (None, []) else info.default
    shown = str(default).lower() if isinstance(default, bool) else str(default)
    help_text = (info.description or field.replace("_", " ")) + (f" (default: {shown})" if default is not None else "")
    if field in SECRETS:
        help_text += f" (seen by `ps` and shell history: prefer {env_name(field)})"
    metavar = _METAVAR.get(field) or ("N" if kind in (int, float) else field.rsplit("_", 1)[-1].upper())
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction, "help": help_text}
    if typing.get_origin(kind) is typing.Literal:
        return {"choices": list(typing.get_args(kind)), "help": help_text}
    if typing.get_origin(kind) is list:
        return {
            "action": "append",
            "metavar": metavar.rstrip("S"),
            "help": help_text + " (repeatable)",
        }
    if kind is SecretStr:
        return {"metavar": "KEY", "help": help_text}
    if kind is date:
        return {"metavar": "YYYY-MM-DD", "help": help_text}
    return {"type": kind if kind in (int, float) else str, "metavar": metavar, "help": help_text}


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags on this command line (not the file's or the environment's)."""
    given = {f: getattr(args, f, None) for _, fields in settings_of(args.command) for f in fields}
    return {field: value for field, value in given.items() if value is not None}


def load_config(args: argparse.Namespace) -> Config:
    """The configuration with this command's flags applied on top of the file and the environment."""
    given = given_settings(args)
    flags = {field: flag_name(field) for field in given}
    for old, (field, const) in _OLD_NAMES.items():
        value = getattr(args, f"old:{old}", None)
        if value is not None and field not in given:
            given[field], flags[field] = value, old
            new = flag_name(field) if const is None else flag_name(field).replace("--", "--no-", 1)
            print(f"rumination: note: {old} is now {new}; the old name goes in the next release", file=sys.stderr)
    return Config.from_flags(given, flags)
