"""Answer metrics (normalised exact match, token F1, answer contained) for English, Chinese and mixed text."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable

# Scripts written without spaces between words: each character is a token of its own.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(char: str) -> bool:
    """SQuAD's ASCII punctuation and symbols, and every Unicode punctuation mark (。，、「」《》 among them)."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation after Unicode NFKC: lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """The normalised text's tokens: Chinese and Japanese characters one by one, other words by spaces."""
    return _TOKEN.findall(normalize(text))


def exact_match(prediction: str, gold: str) -> bool:
    """Whether the two are equal once normalised."""
    return normalize(prediction) == normalize(gold)


def f1(prediction: str, gold: str) -> float:
    """Token F1 between the normalised prediction and gold (two empty texts agree)."""
    predicted, expected = tokens(prediction), tokens(gold)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def contained(text: str, gold: str) -> bool:
    """Whether the normalised gold appears in the normalised text as whole tokens ("art" is not in "parts")."""
    expected = tokens(gold)
    return bool(expected) and f" {' '.join(expected)} " in f" {' '.join(tokens(text))} "


def best(metric: Callable[[str, str], float], prediction: str, golds: list[str]) -> float:
    """The metric against the gold answer that suits the prediction best."""
    return max((float(metric(prediction, gold)) for gold in golds), default=0.0)
