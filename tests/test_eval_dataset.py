"""Evaluation datasets: JSONL lines and their errors, reproducible samples, the public sets' parsers (no network)."""

from __future__ import annotations

import json

import pytest
from loopback import Reply

from rumination.errors import ConfigError, RuminationError
from rumination.eval import dataset
from rumination.eval.dataset import EvalItem, load_dataset, parse_hotpotqa_json, parse_simpleqa_csv, read_jsonl, sample


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", "utf-8")
    return path


def test_read_jsonl_answers_and_ids(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            {"id": "q1", "question": "Capital of France?", "answer": "Paris"},
            "",
            {"question": "中国的首都？", "answers": ["北京", "Beijing"]},
            {"id": 7, "question": " Year? ", "answer": 1889, "extra": "ignored"},
        ],
    )
    assert read_jsonl(path) == [
        EvalItem(id="q1", question="Capital of France?", answers=["Paris"]),
        EvalItem(id="3", question="中国的首都？", answers=["北京", "Beijing"]),  # no id: its line number
        EvalItem(id="7", question="Year?", answers=["1889"]),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a list"]', "line 2: expected a JSON object"),
        ({"answer": "x"}, "line 2: no question"),
        ({"question": "  ", "answer": "x"}, "line 2: no question"),
        ({"question": "Q?"}, "line 2: no answer"),
        ({"question": "Q?", "answers": []}, "line 2: no answer"),
        ({"question": "Q?", "answer": "  "}, "line 2: no answer"),
        ({"question": "Q?", "answers": [1, 2]}, 'line 2: "answers" must be a list of strings'),
        ({"id": ["x"], "question": "Q?", "answer": "a"}, 'line 2: "id" must be'),
        ({"id": "a", "question": "Q?", "answer": "a"}, "line 2: id 'a' is already used on line 1"),
    ],
)
def test_read_jsonl_errors_name_the_line(tmp_path, line, problem):
    path = write_lines(tmp_path / "d.jsonl", [{"id": "a", "question": "First?", "answer": "yes"}, line])
    with pytest.raises(ConfigError, match="line") as info:
        read_jsonl(path)
    assert f"{path}, {problem}" in str(info.value)


def test_read_jsonl_missing_and_empty(tmp_path):
    with pytest.raises(ConfigError, match="dataset not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no questions"):
        read_jsonl(write_lines(tmp_path / "empty.jsonl", [""]))


def test_sample_is_reproducible_and_keeps_dataset_order():
    items = [EvalItem(id=str(i), question=f"q{i}", answers=["a"]) for i in range(100)]
    first, again, other = sample(items, 10, seed=1), sample(items, 10, seed=1), sample(items, 10, seed=2)
    assert first == again and first != other
    assert len(first) == 10 and [int(i.id) for i in first] == sorted(int(i.id) for i in first)
    assert sample(items, None) == items and sample(items, 500) == items
    with pytest.raises(ConfigError, match="at least 1"):
        sample(items, 0)


def test_parse_simpleqa_csv(tmp_path):
    path = tmp_path / "simple_qa_test_set.csv"
    path.write_text(
        "metadata,problem,answer\n"
        "\"{'topic': 'Science', 'answer_type': 'Person'}\",Who received the IEEE Frank Rosenblatt Award in 2010?,"
        "Michio Sugeno\n"
        "\"{'topic': 'Art'}\",\"Which painter, born 1853, cut off part of his ear?\",Vincent van Gogh\n",
        encoding="utf-8",
    )
    assert parse_simpleqa_csv(path) == [
        EvalItem(id="1", question="Who received the IEEE Frank Rosenblatt Award in 2010?", answers=["Michio Sugeno"]),
        EvalItem(id="2", question="Which painter, born 1853, cut off part of his ear?", answers=["Vincent van Gogh"]),
    ]
    path.write_text("question,gold\nq,a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not SimpleQA's CSV"):
        parse_simpleqa_csv(path)


def test_parse_hotpotqa_json(tmp_path):
    path = tmp_path / "hotpot.json"
    entries = [
        {
            "_id": "5a8b57f25542995d1e6f1371",
            "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
            "answer": "yes",
            "type": "comparison",
            "level": "hard",
            "supporting_facts": [["Scott Derrickson", 0]],
            "context": [["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]]],
        }
    ]
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert parse_hotpotqa_json(path) == [
        EvalItem(
            id="5a8b57f25542995d1e6f1371",
            question="Were Scott Derrickson and Ed Wood of the same nationality?",
            answers=["yes"],
        )
    ]
    path.write_text(json.dumps([{"question": "no id"}]), encoding="utf-8")
    with pytest.raises(ConfigError, match="entry 1"):
        parse_hotpotqa_json(path)


def test_load_dataset_uses_the_cache_and_never_downloads_a_cached_set(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(dataset, "download", no_network)
    cached = tmp_path / "cache" / "eval" / "simple_qa_test_set.csv"
    cached.parent.mkdir(parents=True)
    cached.write_text("metadata,problem,answer\n{},Q?,A\n", encoding="utf-8")
    assert load_dataset("SimpleQA", tmp_path / "cache") == [EvalItem(id="1", question="Q?", answers=["A"])]


def test_load_dataset_downloads_a_public_set_once(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, **kwargs):
        calls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps([{"_id": "x", "question": "Q?", "answer": "A"}]), encoding="utf-8")

    monkeypatch.setattr(dataset, "download", fake_download)
    for _ in range(2):
        assert load_dataset("hotpotqa", tmp_path)[0].id == "x"
    assert calls == [dataset.PUBLIC_SETS["hotpotqa"].url]


def test_load_dataset_prefers_a_file_and_explains_unknown_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "simpleqa", [{"question": "Local?", "answer": "yes"}])
    assert load_dataset("simpleqa", tmp_path / "cache")[0].question == "Local?"
    with pytest.raises(ConfigError, match="public sets: simpleqa, hotpotqa"):
        load_dataset("squad", tmp_path / "cache")


def test_download_writes_the_whole_file_or_nothing(tmp_path, loopback):
    server = loopback({"/set.csv": Reply(200, b"metadata,problem,answer\n{},Q?,A\n", "text/csv")})
    dest = tmp_path / "eval" / "set.csv"
    dataset.download(server.url("/set.csv"), dest, user_agent="rumination-test")
    assert parse_simpleqa_csv(dest)[0].answers == ["A"]
    assert server.requests_to("/set.csv")[0].headers["User-Agent"] == "rumination-test"

    missing = tmp_path / "eval" / "missing.csv"
    with pytest.raises(RuminationError, match="cannot download"):
        dataset.download(server.url("/missing.csv"), missing)
    assert not missing.exists() and not list(missing.parent.glob("*.part"))
