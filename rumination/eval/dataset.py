"""Evaluation datasets: JSONL files of questions and gold answers, samples of them, and public sets on request."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from rumination.batch import BatchQuestion, json_object, numbered, question_of, read_lines
from rumination.errors import ConfigError, RuminationError


class EvalItem(BatchQuestion):
    """One question and every answer that counts as right."""

    answers: list[str] = Field(min_length=1)


def read_jsonl(path: Path) -> list[EvalItem]:
    """Read `{"id", "question", "answer"}` lines (or `"answers": [...]`); a missing id is the line number."""
    return numbered(path, read_lines(path, "dataset"), _item)


def _item(line: str, number: int) -> EvalItem:
    """One line's item; a ValueError says what is wrong with it."""
    data = json_object(line)
    try:
        question = question_of(data, number)
    except ValueError as exc:
        raise ValueError(f"no question ({exc})" if "question" in str(exc) else str(exc)) from None
    answers = data.get("answers", [])
    if isinstance(answers, str):
        answers = [answers]
    answer = data.get("answer")
    if isinstance(answer, str | int | float) and not isinstance(answer, bool):
        answers = [str(answer), *answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError('"answers" must be a list of strings')
    answers = list(dict.fromkeys(a.strip() for a in answers if a.strip()))
    if not answers:
        raise ValueError('no answer (an "answer" string or an "answers" list)')
    return EvalItem(id=question.id, question=question.question, answers=answers)


def sample(items: list[EvalItem], n: int | None, seed: int = 0) -> list[EvalItem]:
    """`n` items drawn with `seed` (the same draw every time), in dataset order; all of them if n is None or larger."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ConfigError(f"--sample must be at least 1, not {n}")
    chosen = set(random.Random(seed).sample(range(len(items)), n))
    return [item for i, item in enumerate(items) if i in chosen]


def parse_simpleqa_csv(path: Path) -> list[EvalItem]:
    """SimpleQA's test set (columns metadata, problem, answer); the id is the row number."""
    with Path(path).open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        missing = {"problem", "answer"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: not SimpleQA's CSV (no column {', '.join(sorted(missing))})")
        return [
            EvalItem(id=str(number), question=row["problem"].strip(), answers=[row["answer"].strip()])
            for number, row in enumerate(reader, 1)
        ]


def parse_hotpotqa_json(path: Path) -> list[EvalItem]:
    """HotpotQA's dev set (a JSON array of objects with _id, question, answer); only the questions are used."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not HotpotQA's JSON ({exc})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: not HotpotQA's JSON (expected an array of questions)")
    items = []
    for number, entry in enumerate(data, 1):
        try:
            items.append(EvalItem(id=str(entry["_id"]), question=entry["question"], answers=[entry["answer"]]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: entry {number} lacks an _id, question or answer") from None
    return items


@dataclass(frozen=True)
class PublicSet:
    """A public dataset: where to download it and how to read the file."""

    url: str
    filename: str
    parse: Callable[[Path], list[EvalItem]]


PUBLIC_SETS = {
    "simpleqa": PublicSet(
        "https://openaipublic.blob.core.windows.net/simple-evals/simple_qa_test_set.csv",
        "simple_qa_test_set.csv",
        parse_simpleqa_csv,
    ),
    "hotpotqa": PublicSet(
        "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
        "hotpot_dev_distractor_v1.json",
        parse_hotpotqa_json,
    ),
}


def load_dataset(
    name_or_path: str, cache_dir: Path, *, user_agent: str | None = None, progress: Callable[[str], None] | None = None
) -> list[EvalItem]:
    """A JSONL file, or a public set by name (downloaded once into `cache_dir`/eval); an existing file wins."""
    path = Path(name_or_path).expanduser()
    public = PUBLIC_SETS.get(name_or_path.lower())
    if path.exists() or public is None:
        if not path.exists():
            known = ", ".join(PUBLIC_SETS)
            raise ConfigError(f"dataset not found: {name_or_path} (a JSONL file, or one of the public sets: {known})")
        return read_jsonl(path)
    cached = cache_dir / "eval" / public.filename
    if not cached.is_file():
        if progress:
            progress(f"downloading {name_or_path} from {public.url} ...")
        download(public.url, cached, user_agent=user_agent)
    return public.parse(cached)


def download(url: str, dest: Path, *, user_agent: str | None = None, timeout: float = 60.0) -> None:
    """Download a trusted, fixed URL to `dest` (written whole or not at all)."""
    import httpx

    from rumination.neterrors import network_reason

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    headers = {"User-Agent": user_agent} if user_agent else {}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
            response.raise_for_status()
            with partial.open("wb") as file:
                for block in response.iter_bytes():
                    file.write(block)
        partial.replace(dest)
    except (httpx.HTTPError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = network_reason(exc) or str(exc) or type(exc).__name__
        raise RuminationError(f"cannot download {url}: {reason}") from None
