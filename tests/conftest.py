"""Shared fixtures: the local website, the tiny GLM model, and script helpers."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import hypothesis.internal.observability  # noqa: F401
import pytest

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parent.parent

from localweb import LocalWeb  # noqa: E402

if TYPE_CHECKING:
    from rumination.web.fetcher import WebFetcher
from loopback import Loopback, Route  # noqa: E402

# Hypothesis is imported here, before any test starts a thread: its pytest plugin otherwise imports it at the
# terminal summary, where pytest's assertion rewriting parses its modules, and CPython 3.11.7's AST conversion
# (gh-106905, fixed in 3.11.8) then failed about once in 40 runs with "AST constructor recursion depth mismatch".

# Tests never reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture
def web() -> Iterator[LocalWeb]:
    """A fresh local website + SearXNG-compatible endpoint on 127.0.0.1."""
    with LocalWeb() as site:
        yield site


Server = TypeVar("Server", bound=socketserver.BaseServer)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def in_background() -> Iterator[Callable[[Server], Server]]:
    """Serve a loopback server from a thread until the test ends; returns the server."""
    servers: list[socketserver.BaseServer] = []

    def start(server: Server) -> Server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback(in_background: Callable[[Loopback], Loopback]) -> Callable[..., Loopback]:
    """Start a scriptable `Loopback` server (routes per path, a fallback, host, protocol) for this test."""

    def start(routes: dict[str, Route] | None = None, **options: Any) -> Loopback:
        return in_background(Loopback(routes, **options))

    return start


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Glm4ForCausalLM and its tokenizer, built by tools/build_tiny_model.py."""
    sys.path.insert(0, str(ROOT / "tools"))
    from build_tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-glm"))


@pytest.fixture(scope="session")
def prompt(tiny_model_dir: Path) -> list[int]:
    """A prompt of the tiny tokenizer's tokens that repeats itself (so prompt lookup finds matches)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tokenizer("Gutenberg printed the Bible in Mainz around 1455. " * 6, add_special_tokens=False)["input_ids"]


def varied_model(model_dir: Path, attn_implementation: str, **overrides: Any) -> Any:
    """The tiny model with larger random weights: its greedy text varies instead of repeating one token."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rumination.backends import attention

    attention.register()
    config = AutoConfig.from_pretrained(model_dir, attn_implementation=attn_implementation)
    config.initializer_range = 0.2
    for name, value in overrides.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def greedy_reference(model: Any, ids: list[int], new: int) -> list[int]:
    """transformers' own greedy generate, re-prefilling everything: the ground truth of the decode tests."""
    import torch

    with torch.inference_mode():
        output = model.generate(
            torch.tensor([ids], device=model.device),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=[],
            pad_token_id=0,
        )
    return output[0, len(ids) :].tolist()


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's own config, cache or data, or RUMINATION_* variables."""
    for key in list(os.environ):
        if key.startswith("RUMINATION_"):
            monkeypatch.delenv(key)
    empty = tmp_path / "empty-config.toml"
    empty.touch()
    monkeypatch.setenv("RUMINATION_CONFIG_FILE", str(empty))
    monkeypatch.setenv("RUMINATION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RUMINATION_DATA_DIR", str(tmp_path / "data"))


def write_script(path: Path, outputs: list[str]) -> Path:
    """Write a scripted-backend file."""
    path.write_text(json.dumps(outputs, ensure_ascii=False), encoding="utf-8")
    return path


def turn(call: dict | str, thinking: str = "Let me think about the next step.") -> str:
    """One model output: thinking, then the call, as the real model writes it."""
    text = call if isinstance(call, str) else json.dumps(call, ensure_ascii=False)
    return f"\n<think>\n{thinking}\n</think>{text}"


def wait_until_reading_stdin(pid: int, timeout: float = 60) -> None:
    """Block until process `pid` waits on its stdin pipe: a readiness signal instead of a guessed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "pipe" in Path(f"/proc/{pid}/wchan").read_text():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never started reading its stdin")


@pytest.fixture
async def make_fetcher() -> AsyncIterator[Callable[..., WebFetcher]]:
    """Build WebFetchers (private addresses allowed, for the loopback sites); each is closed after the test."""
    from rumination.config import Config
    from rumination.web.fetcher import WebFetcher

    made: list[WebFetcher] = []

    def make(**settings: object) -> WebFetcher:
        settings.setdefault("allow_private_network", True)
        fetcher = WebFetcher(Config(**settings))
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()
