"""Fixed facts of the GLM-Z1-Rumination protocol (see docs/architecture.md and PROTOCOL.md)."""

from __future__ import annotations

from typing import Literal

DEFAULT_MODEL = "THUDM/GLM-Z1-Rumination-32B-0414"
# The model's shape (its published config.json): benchmarks build it with random weights, tests size it.
ARCHITECTURE = {
    "hidden_size": 6144,
    "num_hidden_layers": 61,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 23040,
    "vocab_size": 151552,
    "max_position_embeddings": 131072,
    "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "pad_token_id": 151329,
}

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

ENDOFTEXT = "<|endoftext|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
OBSERVATION = "<|observation|>"
SYSTEM = "<|system|>"

# The 14 special tokens of the GLM-4-0414 tokenizer, with their ids in the real vocabulary.
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151329,
    "[MASK]": 151330,
    "[gMASK]": 151331,
    "[sMASK]": 151332,
    "<sop>": 151333,
    "<eop>": 151334,
    "<|system|>": 151335,
    "<|user|>": 151336,
    "<|assistant|>": 151337,
    "<|observation|>": 151338,
    "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340,
    "<|begin_of_video|>": 151341,
    "<|end_of_video|>": 151342,
}

# Generation must stop on all three: a tool call ends on <|observation|>, the report on the others.
STOP_TOKENS: tuple[str, ...] = (ENDOFTEXT, USER, OBSERVATION)

TOOL_NAMES: tuple[str, ...] = ("search", "click", "open", "finish")

FINISH_CALL = '{"name": "finish", "arguments": {}}'

# Sampling defaults from the model card.
DEFAULT_TEMPERATURE = 0.95
DEFAULT_TOP_P = 0.7
DEFAULT_TOP_K = 50  # transformers' generate default, applied in the card's workflow
DEFAULT_MAX_NEW_TOKENS = 16384
DEFAULT_MAX_TURNS = 35

# How numbered search results are laid out: the GLM-4 browser's (what the model writes itself) or the card's.
SearchLayout = Literal["glm4", "card"]
Language = Literal["en", "zh"]

# Settings inside the fixed system prompt (full-width colons): the runtime edits them in the rendered system
# segment only. A later template revision writes 英文 for English; Chinese is 中文.
YEAR_LINE = "今年是 {year} 年。"
TEMPLATE_YEAR = 2025
SEARCH_LANGUAGE_LINE = "    * 搜索关键词：{language}"
THINKING_LANGUAGE_LINE = "    * 思考：{language}"
LANGUAGE_WORDS: dict[Language, tuple[str, ...]] = {"en": ("英语", "英文"), "zh": ("中文",)}
