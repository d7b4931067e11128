"""The project's scripts run and print what they promise (their figures are not asserted: no timed tests)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # every test here runs a tool in a subprocess or drives the demo end to end


def test_bench_web_prints_its_figures():
    out = subprocess.run(
        [sys.executable, "tools/bench_web.py", "--latency", "0.05", "--think", "0.2", "--rounds", "2", "--pages", "6"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    figures = dict(line.split("=", 1) for line in out.splitlines())
    for name in ("click_ms_no_prefetch", "click_ms_prefetch", "click_prefetch_speedup", "max_loop_lag_ms"):
        assert float(figures[name]) >= 0


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run tools/demo.py."""
    return subprocess.run(
        [sys.executable, "tools/demo.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )


def test_demo_runs_offline_and_says_it_is_a_replay():
    run = demo("-q")
    assert run.stdout.startswith("# Gutenberg and the spread of printing")
    notice = run.stderr.splitlines()[0]  # said before anything starts
    assert "replays a recorded research run" in notice and "no real model" in notice and "127.0.0.1" in notice


def test_demo_help_shows_the_demos_own_options():
    out = demo("--help").stdout
    assert out.startswith("usage: python tools/demo.py")
    for option in ("--tui", "--json", "--jsonl", "replays a recorded research run"):
        assert option in " ".join(out.split()), option
    assert "--max-turns" not in out  # not rumination's own flags


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "tools" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_demo_tui_answers_a_second_question(web):
    demo_module = _demo_module()
    app = demo_module.tui_app(web.base)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.result is not None)
        assert app.result.question == demo_module.QUESTION and app.result.stop_reason == "finished"
        tokenizer = app.researcher.backend.tokenizer
        await pilot.press("n", *"How did paper reach Europe?", "enter")
        await until(pilot, lambda: app.result is not None and app.result.question == "How did paper reach Europe?")
        assert app.phase == "done" and app.result.report.startswith("# Gutenberg and the spread of printing")
        assert app.researcher.backend.tokenizer is tokenizer  # "loaded" once, as a real model would be
        notes = [n.message for n in app._notifications]
        assert notes.count(demo_module.REPLAY_NOTE) == 2  # it says that every question gets the same recording


async def until(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out; the app is {pilot.app.phase}"
        await pilot.pause(0.05)


def tool(script: str, *args: str) -> list[str]:
    """Run tools/SCRIPT; its output lines."""
    run = subprocess.run([sys.executable, f"tools/{script}", *args], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()


def figures_of(script: str, *args: str) -> dict[str, str]:
    """A tool's `name=value` lines (a table it prints after them left out)."""
    return dict(line.split("=", 1) for line in tool(script, *args) if "=" in line)


def test_bench_local_cpu_mode_prints_the_reuse_ratio_last():
    lines = tool("bench_local.py", "--turns", "4")
    figures = dict(line.split("=", 1) for line in lines)
    assert lines[-1].startswith("prefill_reuse_ratio=")
    assert figures["identical_greedy_outputs"] == "True"
    assert int(figures["prefilled_tokens_with_reuse"]) < int(figures["prefilled_tokens_without_reuse"])


GPU_FIGURES = (
    "copy_bandwidth_gb_s",
    "decode_1k_tok_s",
    "decode_1k_roofline_fraction",
    "decode_32k_tok_s",
    "decode_32k_roofline_fraction",
    "prefill_32k_tok_s",
    "generate_default_1k_roofline_fraction",
    "multi_turn_prefill_reuse_ratio",
)


def bench_gpu_tiny() -> dict[str, str]:
    return figures_of("bench_local.py", "--gpu", "--tiny")


def test_bench_local_gpu_mode_code_runs_on_a_tiny_config():
    # The real GPU run needs an H100; this runs the same code on a tiny config wherever the tests run.
    figures = bench_gpu_tiny()
    assert figures["mode"] == "gpu-tiny"
    for name in GPU_FIGURES:  # a tiny model's roofline fractions round to 0.000: only rates must be positive
        assert float(figures[name]) > 0 or (name.endswith("fraction") and float(figures[name]) >= 0), name
    with_reuse = int(figures["multi_turn_prefilled_tokens_with_reuse"])
    assert with_reuse < int(figures["multi_turn_prefilled_tokens_without_reuse"]) / 3


def test_bench_local_verify_mode_times_both_steps_on_a_tiny_config():
    figures = figures_of("bench_local.py", "--gpu", "--tiny", "--verify-only", "--draft", "3")
    assert figures["draft_tokens"] == "3" and "compile_error" not in figures
    for context in ("1k", "32k"):
        assert float(figures[f"step_ms_{context}"]) > 0 and float(figures[f"verify_over_step_{context}"]) > 0


def test_bench_lookup_prints_acceptance_that_grows_with_copying():
    figures = figures_of("bench_lookup.py", "--report-tokens", "600", "--cpu-tokens", "0")
    per_pass = [float(figures[f"copy{copy}_k6_tokens_per_pass"]) for copy in (0, 25, 50, 75)]
    assert per_pass == sorted(per_pass) and per_pass[0] >= 1.0 and per_pass[-1] > 1.5
    assert float(figures["host_us_per_token"]) > 0


def test_bench_attention_verify_shape_agrees_with_the_exact_reference():
    figures = figures_of("bench_attention.py", "--smoke", "--queries", "7", "--rounds", "2")
    errors = {name: float(value) for name, value in figures.items() if name.endswith("_max_error")}
    assert {"w4096_l4000_sdpa_gqa_max_error", "w4096_l4000_packed_sdpa_max_error"} <= set(errors)
    assert max(errors.values()) < 1e-4 and "w4096_l4000_split_kv_us" not in figures
