"""Answer metrics (English, Chinese, mixed) and the short answer taken from a long report."""

from __future__ import annotations

import pytest

from rumination.eval import scoring
from rumination.eval.short_answer import first_sentence, short_answer


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles!", "beatles"),
        ("  An   apple, a day ", "apple day"),
        ("Ｔｈｅ　Ｂｅａｔｌｅｓ！", "beatles"),  # full-width letters and space (NFKC)
        ("答案是北京。", "答案是北京"),
        ("《红楼梦》、曹雪芹", "红楼梦曹雪芹"),
        ("「東京」", "東京"),
        ("$1,000", "1000"),
    ],
)
def test_normalize(text, normalized):
    assert scoring.normalize(text) == normalized


def test_tokens_split_cjk_into_characters_and_latin_into_words():
    assert scoring.tokens("北京") == ["北", "京"]
    assert scoring.tokens("GLM-4 模型在 2025 年发布 the Model") == ["glm4", *"模型在", "2025", *"年发布", "model"]
    assert scoring.tokens("ひらがなカタカナ") == list("ひらがなカタカナ")


def test_exact_match():
    assert scoring.exact_match("the Eiffel Tower.", "Eiffel Tower")
    assert scoring.exact_match("北京。", "北京")
    assert not scoring.exact_match("答案是北京。", "北京")
    assert not scoring.exact_match("Paris, France", "Paris")


def test_f1_english():
    assert scoring.f1("Paris", "Paris") == 1.0
    assert scoring.f1("the city of Paris", "Paris") == pytest.approx(0.5)  # 1 of 3 predicted tokens, all of gold
    assert scoring.f1("London", "Paris") == 0.0
    assert scoring.f1("", "") == 1.0 and scoring.f1("", "Paris") == 0.0


def test_f1_chinese_counts_characters():
    # predicted 答案是北京 (5 characters), gold 北京 (2): precision 2/5, recall 1
    assert scoring.f1("答案是北京。", "北京") == pytest.approx(2 * 0.4 * 1 / 1.4)
    assert scoring.f1("北京市", "北京") == pytest.approx(0.8)
    assert scoring.f1("上海", "北京") == 0.0


def test_f1_mixed_text():
    # gold: glm4 发 布; prediction: glm4 于 2025 发 布 (Latin words whole, Chinese by character)
    assert scoring.f1("GLM-4 于 2025 发布", "GLM-4 发布") == pytest.approx(2 * (3 / 5) * 1 / (3 / 5 + 1))


def test_contained_uses_whole_tokens():
    assert scoring.contained("答案是北京。", "北京")
    assert scoring.contained("The answer is Barack Obama, the 44th president.", "barack obama")
    assert not scoring.contained("It comes in parts.", "art")
    assert not scoring.contained("Anything at all", "the")  # a gold answer that normalises to nothing


def test_best_over_several_gold_answers():
    golds = ["New York City", "NYC", "纽约"]
    assert scoring.best(scoring.exact_match, "NYC", golds) == 1.0
    assert scoring.best(scoring.f1, "New York", golds) == pytest.approx(0.8)
    assert scoring.best(scoring.contained, "它位于纽约。", golds) == 1.0
    assert scoring.best(scoring.f1, "anything", []) == 0.0


ENGLISH_BOLD = """# The capital of Australia

**Canberra** is the capital of Australia, chosen in 1908 as a compromise between Sydney and Melbourne
[1](https://en.wikipedia.org/wiki/Canberra).

## History

Before 1927 Parliament sat in Melbourne [2](https://example.org/parliament).
"""

ENGLISH_SUMMARY = """# Who invented the telephone?

The invention of the telephone is a contested story involving several inventors in the 1870s.

## Summary

Alexander Graham Bell was granted the first US patent for the telephone in 1876 [1]. Antonio Meucci and
Elisha Gray had worked on similar devices.

## Sources

1. https://example.org/bell
"""

ENGLISH_ANSWER_LINE = """# When was the Eiffel Tower completed?

The tower was built for the 1889 World's Fair by **Gustave Eiffel's company**, and it is 330 m tall.

**Answer:** 31 March 1889. It opened to the public in May.
"""

ENGLISH_PLAIN = """# Report

J. K. Rowling wrote the Harry Potter series. She was born in 1965 in Yate, England [1](https://example.org).
"""

CHINESE_CONCLUSION = """# 中国的首都

中国历史上曾多次迁都，这里梳理现代的情况。

## 结论

中国的首都是北京【1†北京市人民政府†http://www.beijing.gov.cn】。北京位于华北平原北部。

## 背景

……
"""

CHINESE_ANSWER_LINE = """
<think>
先查资料。
</think>
# 研究报告：中国的首都

**答案：** 北京

北京是中华人民共和国的首都，也是全国的政治和文化中心[1]。
"""

CHINESE_ANSWER_HEADING = """# 红楼梦的作者

## 简短回答

《红楼梦》的作者通常认为是曹雪芹，后四十回一般认为由高鹗续写。

## 详细说明

……
"""


@pytest.mark.parametrize(
    ("report", "answer"),
    [
        (ENGLISH_BOLD, "Canberra"),
        (ENGLISH_SUMMARY, "Alexander Graham Bell was granted the first US patent for the telephone in 1876."),
        (ENGLISH_ANSWER_LINE, "31 March 1889."),  # the explicit line wins over the bold phrase
        (ENGLISH_PLAIN, "J. K. Rowling wrote the Harry Potter series."),
        (CHINESE_CONCLUSION, "中国的首都是北京。"),
        (CHINESE_ANSWER_LINE, "北京"),
        (CHINESE_ANSWER_HEADING, "《红楼梦》的作者通常认为是曹雪芹，后四十回一般认为由高鹗续写。"),
        ("", ""),
    ],
)
def test_short_answer(report, answer):
    assert short_answer(report) == answer


def test_short_answer_label_on_its_own_line_takes_the_next():
    assert short_answer("# Q\n\nSome context here.\n\nFinal answer:\n\n**42**\n") == "42"


def test_bold_labels_and_headings_are_not_answers():
    report = "# Report\n\n**Key point:** the river is **the Danube**, Europe's second longest.\n"
    assert short_answer(report) == "the Danube"
    assert short_answer("**Overview**\n\nThe Danube is the answer here. More text.") == "The Danube is the answer here."


def test_code_blocks_and_tables_are_skipped():
    report = "# R\n\n```\nAnswer: not this\n```\n\n| a | b |\n|---|---|\n\nThe real first sentence. Then more."
    assert short_answer(report) == "The real first sentence."


def test_first_sentence():
    assert first_sentence("It had 3.5 million people in 2020. It grew.") == "It had 3.5 million people in 2020."
    assert first_sentence("Dr. Who is a show. It is British.") == "Dr. Who is a show."
    assert first_sentence("It was 5. Then it was 6.") == "It was 5."
    assert first_sentence("北京是首都。上海是港口。") == "北京是首都。"
    assert first_sentence("no end at all") == "no end at all"


def test_scores_from_a_chinese_report():
    report = CHINESE_ANSWER_LINE
    assert scoring.exact_match(short_answer(report), "北京")
    assert scoring.contained(report, "北京")
