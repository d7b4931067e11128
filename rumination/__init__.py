"""Rumination: a deep-research runtime for GLM-Z1-Rumination-32B-0414."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Config", "ResearchResult", "Researcher", "batch", "research"]

if TYPE_CHECKING:
    from rumination.agent import Researcher
    from rumination.batch import batch
    from rumination.config import Config
    from rumination.results import ResearchResult

_LAZY = {"Researcher": "rumination.agent", "Config": "rumination.config", "ResearchResult": "rumination.results"}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name == "batch":
        # The module rumination.batch, callable: importing a submodule makes it the package's attribute anyway,
        # so a function of that name here would be replaced by the module on first use.
        return import_module("rumination.batch")
    raise AttributeError(name)


def research(question: str, **settings: Any) -> ResearchResult:
    """Research `question` with the given settings (see Config) and return the result (blocking)."""
    from rumination.agent import Researcher
    from rumination.config import Config

    return Researcher(Config(**settings)).run_sync(question)
