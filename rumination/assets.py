"""Locate the text assets in prompts/, from a wheel install or from a checkout."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def prompts_dir() -> Path:
    """Return the prompts directory: packaged inside the wheel, or at the checkout root."""
    packaged = Path(__file__).parent / "prompts"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).parent.parent / "prompts"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("rumination's prompts/ directory is missing from this installation")


def bundled_tokenizer_dir() -> Path:
    """Return the small bundled tokenizer whose chat template has the real template's shape."""
    return prompts_dir() / "tokenizer"
