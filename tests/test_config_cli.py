"""The command line is derived from Config; configuration errors name their real source."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import time
import typing

import pytest
from conftest import ROOT, turn, write_script

from rumination.cli import build_parser, main
from rumination.config import GROUPS, SECRETS, BatchSettings, Config
from rumination.errors import ConfigError
from rumination.flags import flag_name, load_config

RESEARCH_COMMANDS = ("ask", "tui")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _options(command: str) -> dict[str, argparse.Action]:
    return {option: action for action in _subparser(command)._actions for option in action.option_strings}


def test_ask_help_shows_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = capsys.readouterr().out
    for flag in ("--context-window", "--thinking-language", "--search-language", "--top-k", "--today"):
        assert flag in out
    assert "--max-context " not in out and "--no-robots " not in out  # old names stay hidden


@pytest.mark.parametrize("command", RESEARCH_COMMANDS)
def test_every_config_field_has_a_flag_derived_from_it(command):
    options = _options(command)
    for field, info in Config.model_fields.items():
        if field in BatchSettings.model_fields:  # batch and eval only
            assert flag_name(field) not in options
            continue
        if field in SECRETS and field != "openai_api_key":  # keys stay out of shell history, but a server's token
            assert flag_name(field) not in options
            continue
        action = options[flag_name(field)]
        assert action.dest == field
        assert info.description and info.description in (action.help or ""), field
        kind = info.annotation
        if typing.get_origin(kind) is typing.Literal:
            assert list(action.choices or []) == list(typing.get_args(kind))
        if info.default_factory is None and info.default not in (None, []):
            shown = str(info.default).lower() if isinstance(info.default, bool) else str(info.default)
            assert f"(default: {shown})" in (action.help or "")


def test_the_groups_cover_every_field_once():
    fields = [f for group in GROUPS for f in group.model_fields]
    assert sorted(fields) == sorted(Config.model_fields) and len(fields) == len(set(fields))


def _hinted_options() -> set[str]:
    """Every --option named inside a string literal of the package (error hints, help texts)."""
    found = set()
    for path in (ROOT / "rumination").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w-])", node.value))
    return found


def test_every_hint_names_an_option_the_parser_has():
    parser = build_parser()
    known = {o for a in parser._actions for o in a.option_strings}
    from rumination.cli import _subcommands

    for command in _subcommands(parser):
        known |= set(_options(command))
    hinted = _hinted_options()
    assert "--searxng-url" in hinted and "--kv-cache" in hinted  # the scan sees the hints
    others = {"--include"}  # another tool's option, quoted in a hint: `hf download NAME --include 'tokenizer*'`
    assert hinted - known - others == set()


def test_commands_show_only_the_options_that_apply():
    fetch, search, index, config = (_options(c) for c in ("fetch", "search", "index", "config"))
    assert "--page-max-tokens" in fetch and "--allow-private-network" in fetch
    assert not {"--max-turns", "--search", "--kv-cache", "--prefetch", "--temperature"} & set(fetch)
    assert "--search" in search and "--fallback" in search
    assert not {"--max-turns", "--page-max-tokens", "--kv-cache", "--model"} & set(search)
    assert "--data-dir" in index and not {"--search", "--model", "--max-turns"} & set(index)
    assert set(config) == {"-h", "--help", "--config", "--path"}


def test_script_and_searxng_url_imply_their_backend_and_engine_everywhere(tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [turn({"name": "finish", "arguments": {}}), "r"])
    assert Config(script=script).backend == "scripted"
    assert Config(searxng_url="http://127.0.0.1:1").search == "searxng"
    assert Config(script=script, backend="local").backend == "local"  # said otherwise: that wins
    monkeypatch.setenv("RUMINATION_SEARXNG_URL", "http://127.0.0.1:1")
    assert Config().search == "searxng"
    monkeypatch.delenv("RUMINATION_SEARXNG_URL")
    toml = tmp_path / "c.toml"
    toml.write_text(f'script = "{script}"\n')
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(toml))
    assert Config().backend == "scripted"
    # Said otherwise counts only at the same or a higher precedence.
    toml.write_text(f'script = "{script}"\nbackend = "local"\nsearch = "ddgs"\n')
    assert (Config().backend, Config().search) == ("local", "ddgs")
    flagged = Config.from_flags({"script": script, "searxng_url": "http://127.0.0.1:1"}, {})
    assert (flagged.backend, flagged.search) == ("scripted", "searxng")
    monkeypatch.setenv("RUMINATION_SEARXNG_URL", "http://127.0.0.1:1")
    assert Config().search == "searxng"  # the variable outranks the file's search
    monkeypatch.setenv("RUMINATION_SEARCH", "brave")
    assert Config().search == "brave"


def test_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("RUMINATION_MAX_TURNS", "0")
    with pytest.raises(ConfigError, match=r"max_turns: .*greater than or equal to 1 \(from RUMINATION_MAX_TURNS\)"):
        Config()


def test_errors_name_the_file_and_line(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('search = "ddgs"\n\nmax_turns = 0\n')
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(toml))
    with pytest.raises(ConfigError, match=re.escape(f"(from {toml}, line 3)")):
        Config()


def test_errors_name_the_flag_and_the_python_argument(capsys):
    assert main(["ask", "q", "--max-turns", "0"]) == 2
    assert "(from --max-turns)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=re.escape("(from Config(max_turns=...))")):
        Config(max_turns=0)


def test_unknown_keys_suggest_the_closest_setting(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown setting 'max_turn'.*did you mean 'max_turns'"):
        Config(max_turn=3)
    toml = tmp_path / "c.toml"
    toml.write_text("page_max_token = 10\n")
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(toml))
    with pytest.raises(
        ConfigError, match=r"'page_max_token' \(from .*c.toml, line 1\); did you mean 'page_max_tokens'"
    ):
        Config()
    toml.write_text("")
    monkeypatch.setenv("RUMINATION_SEARXNG_UR", "http://x")
    with pytest.raises(ConfigError, match="RUMINATION_SEARXNG_UR; did you mean RUMINATION_SEARXNG_URL"):
        Config()


def test_a_missing_config_file_variable_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(tmp_path / "nope.toml"))
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "nope.toml" in err and "RUMINATION_CONFIG_FILE" in err
    with pytest.raises(ConfigError, match="nope.toml"):
        Config()


def test_a_bad_list_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv("RUMINATION_DENY_DOMAINS", "[not json")
    with pytest.raises(ConfigError, match=r"deny_domains: not a JSON list .*commas.*\(from RUMINATION_DENY_DOMAINS\)"):
        Config()


def test_list_variables_take_commas_or_json(monkeypatch):
    monkeypatch.setenv("RUMINATION_DENY_DOMAINS", "a.org, b.org")
    monkeypatch.setenv("RUMINATION_SEARCH_FALLBACK", '["searxng", "ddgs"]')
    assert (Config().deny_domains, Config().search_fallback) == (["a.org", "b.org"], ["searxng", "ddgs"])


@pytest.mark.parametrize("entry", ["*", "*.", "https://", ".", ":8080"])
def test_a_domain_entry_naming_no_host_is_refused_not_widened_to_everything(entry, capsys):
    with pytest.raises(ConfigError, match="names no domain"):
        Config(allow_domains=[entry])
    assert main(["ask", "q", "--allow-domain", entry]) == 2
    assert "(from --allow-domain)" in capsys.readouterr().err


def test_lower_case_variables_are_named_as_written(monkeypatch):
    monkeypatch.setenv("rumination_max_turns", "0")
    with pytest.raises(ConfigError, match=r"\(from rumination_max_turns\)"):
        Config()
    monkeypatch.delenv("rumination_max_turns")
    monkeypatch.setenv("rumination_max_turnz", "3")
    with pytest.raises(ConfigError, match="did you mean RUMINATION_MAX_TURNS"):
        Config()


def test_an_unreadable_config_file_is_a_config_error(tmp_path, monkeypatch):
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(folder))
    with pytest.raises(ConfigError, match="a-folder.toml"):
        Config()


def test_fetch_needs_no_search_settings(monkeypatch, capsys):
    monkeypatch.setenv("RUMINATION_SEARCH", "brave")  # no key: building the engine would fail
    assert main(["fetch", "file:///etc/passwd"]) == 1
    assert "only http and https" in capsys.readouterr().out


def test_old_flag_names_still_work_for_one_release(capsys):
    args = build_parser().parse_args(["ask", "q", "--max-context", "4096", "--no-robots"])

    config = load_config(args)
    assert config.context_window == 4096 and config.robots_txt is False
    err = capsys.readouterr().err
    assert "--max-context is now --context-window" in err and "--no-robots is now --no-robots-txt" in err


def test_bool_flags_have_both_forms():

    parser = build_parser()
    assert load_config(parser.parse_args(["ask", "q", "--no-current-year"])).current_year is False
    assert load_config(parser.parse_args(["ask", "q", "--no-page-cache"])).page_cache is False
    assert load_config(parser.parse_args(["ask", "q", "--today", "2031-02-03"])).today.year == 2031
    assert load_config(
        parser.parse_args(["ask", "q", "--allow-domain", "a.org", "--allow-domain", "b.org"])
    ).allow_domains == [
        "a.org",
        "b.org",
    ]


@pytest.mark.slow
def test_refusing_a_url_is_fast_and_imports_no_model_library():
    code = (
        "import sys, time; start = time.perf_counter(); from rumination.cli import main; "
        "rc = main(['fetch', 'file:///etc/passwd']); "
        "print(rc, round(time.perf_counter() - start, 3), 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    wall = time.perf_counter() - started
    rc, _, torch_loaded, transformers_loaded = result.stdout.split()[-4:]
    assert "only http and https" in result.stdout
    assert (rc, torch_loaded, transformers_loaded) == ("1", "False", "False"), result.stdout + result.stderr
    print(f"rumination fetch file:///etc/passwd: {wall:.2f} s wall")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["search", "q", "--search", "no-such-engine"], 2),
        (["index", "/no/such/dir", "--name", "x"], 2),
        (["config", "--page-max-tokens", "5"], 2),  # not an option of config: argparse's usage error
        (["fetch", "http://127.0.0.1:9/", "--deny-domain", "127.0.0.1"], 1),
        (["search", "q", "--search-results", "0"], 2),
    ],
)
@pytest.mark.slow
def test_side_commands_answer_errors_without_importing_model_libraries(args, code):
    probe = (
        "import sys; from rumination.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
        "print('RESULT', rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    assert line == f"RESULT {code} False False", result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_empty_stdin_gets_the_same_advice_as_an_empty_terminal():
    result = subprocess.run(
        [sys.executable, "-m", "rumination.cli", "ask"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "no question: pass one as an argument or pipe it on stdin" in result.stderr


def test_config_prints_every_setting_grouped(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for group in GROUPS:
        assert f"# {group.__doc__}" in out
    for field in Config.model_fields:
        assert re.search(rf"^(# )?{field} = ", out, re.M), field


def test_config_never_prints_a_password_in_a_url(monkeypatch, capsys):
    monkeypatch.setenv("RUMINATION_SEARXNG_URL", "http://reader:pw0rdSECRET@searx.lan:8888")
    monkeypatch.setenv("RUMINATION_BRAVE_URL", "https://api.example/search")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert 'searxng_url = "**********"' in out and "pw0rdSECRET" not in out
    assert 'brave_url = "https://api.example/search"' in out


def test_config_accepts_the_api_keys_only_from_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RUMINATION_BRAVE_API_KEY", "k")
    assert Config().brave_api_key is not None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ask", "q", "--brave-api-key", "k"])


def test_search_implication_reaches_the_cli(tmp_path, capsys):
    script = write_script(
        tmp_path / "s.json", [turn({"name": "finish", "arguments": {}}), "\n<think>\nok\n</think>done"]
    )
    assert main(["ask", "q", "-q", "--script", str(script), "--search", "ddgs"]) == 0
    assert "done" in capsys.readouterr().out


def test_usage_errors_are_short_and_suggest_the_option_meant(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ask", "q", "--serch", "ddgs"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "(did you mean --search?)" in err and len(err.splitlines()) <= 4
    with pytest.raises(SystemExit):
        main(["ask", "q", "--max-turns", "abc"])
    err = capsys.readouterr().err
    assert err.startswith("usage: rumination ask [options] [question]\n") and "invalid int value: 'abc'" in err
    assert len(err.splitlines()) <= 4


def test_domain_lists_split_joined_names_and_refuse_what_is_no_domain(monkeypatch, capsys):
    assert Config(deny_domains=["evil.org,bad.org", "x.org y.org"]).deny_domains == [
        "evil.org",
        "bad.org",
        "x.org",
        "y.org",
    ]
    monkeypatch.setenv("RUMINATION_DENY_DOMAINS", "evil.org bad.org")
    assert Config().deny_domains == ["evil.org", "bad.org"]
    monkeypatch.setenv("RUMINATION_DENY_DOMAINS", '"evil.org"')
    with pytest.raises(ConfigError, match="names no domain"):
        Config()
    monkeypatch.delenv("RUMINATION_DENY_DOMAINS")
    assert main(["ask", "q", "--deny-domain", "a.org,b.org", "--max-turns", "0"]) == 2  # parsed, then max_turns
    assert "deny_domains" not in capsys.readouterr().err


def test_a_cleared_cause_implies_nothing(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('searxng_url = "http://127.0.0.1:1"\n')
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(toml))
    assert Config().search == "searxng"
    assert Config.from_flags({"searxng_url": ""}, {}).search == "ddgs"  # the flag cleared it: no SearXNG
    monkeypatch.setenv("RUMINATION_SEARXNG_URL", "")
    assert Config().search == "ddgs"


def test_the_config_file_variable_in_any_case(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text("max_turns = 7\n")
    monkeypatch.delenv("RUMINATION_CONFIG_FILE")
    monkeypatch.setenv("rumination_config_file", str(toml))
    assert Config().max_turns == 7


def test_a_misspelt_option_is_answered_by_its_command(capsys):
    with pytest.raises(SystemExit):
        main(["fetch", "http://a.example/", "--serch", "x"])
    err = capsys.readouterr().err
    assert "see 'rumination fetch --help'" in err and "--search?" not in err  # fetch has no --search
