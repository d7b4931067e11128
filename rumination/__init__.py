"""Rumination: a deep-research runtime for GLM-Z1-Rumination-32B-0414."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Config", "ResearchResult", "Researcher", "research"]

if TYPE_CHECKING:
    from rumination.agent import Researcher
    from rumination.config import Config
    from rumination.results import ResearchResult

_LAZY = {"Researcher": "rumination.agent", "Config": "rumination.config", "ResearchResult": "rumination.results"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)


def research(question: str, **settings: Any) -> ResearchResult:
    """Research `question` with the given settings (see Config) and return the result (blocking)."""
    from rumination.agent import Researcher
    from rumination.config import Config

    return Researcher(Config(**settings)).run_sync(question)
