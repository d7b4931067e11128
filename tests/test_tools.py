"""The project's scripts run and print what they promise (their figures are not asserted: no timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def test_demo_runs_offline():
    out = subprocess.run(
        [sys.executable, "tools/demo.py", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.startswith("# Gutenberg and the spread of printing")


def bench_local(*args: str) -> list[str]:
    """Run tools/bench_local.py; its `name=value` lines."""
    run = subprocess.run([sys.executable, "tools/bench_local.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()


def test_bench_local_cpu_mode_prints_the_reuse_ratio_last():
    lines = bench_local("--turns", "4")
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
    return dict(line.split("=", 1) for line in bench_local("--gpu", "--tiny"))


def test_bench_local_gpu_mode_code_runs_on_a_tiny_config():
    # The real GPU run needs an H100; this runs the same code on a tiny config wherever the tests run.
    figures = bench_gpu_tiny()
    assert figures["mode"] == "gpu-tiny"
    for name in GPU_FIGURES:  # a tiny model's roofline fractions round to 0.000: only rates must be positive
        assert float(figures[name]) > 0 or (name.endswith("fraction") and float(figures[name]) >= 0), name
    with_reuse = int(figures["multi_turn_prefilled_tokens_with_reuse"])
    assert with_reuse < int(figures["multi_turn_prefilled_tokens_without_reuse"]) / 3
