"""Build the tiny GLM fixture: a byte-level BPE tokenizer with the 14 GLM special tokens and a
chat template of the real template's shape, and optionally a tiny random Glm4ForCausalLM.

    python tools/build_tiny_model.py --tokenizer-only prompts/tokenizer   # the bundled tokenizer
    python tools/build_tiny_model.py /tmp/tiny-glm                        # tokenizer + tiny model
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "prompts" / "fixture_chat_template.jinja"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
]

CORPUS = [
    TEMPLATE.read_text(encoding="utf-8"),
    "<think>\nI need to search for this. Let me plan the research first.\n</think>"
    '{"name": "search", "arguments": {"query": "history of the printing press"}}',
    '{"name": "click", "arguments": {"link_id": 0}} {"name": "open", "arguments": {"url": "https://example.org"}}',
    '{"name": "finish", "arguments": {}}',
    "The results show that the page says the answer is in the report. According to the source, "
    "research findings and evidence are summarised with citations [1] and links https://www.",
    "# Title\nURL: http://127.0.0.1/\n\nThe main text of the page, with paragraphs, lists and numbers 0123456789.",
]


def build_tokenizer(out: Path, vocab_size: int = 1024):
    """Train a tiny byte-level BPE tokenizer, add the GLM special tokens and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one by one: every year is four tokens, so token counts do not change with the year in the prompt.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
    )
    fast.chat_template = TEMPLATE.read_text(encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def build_model(out: Path, vocab_size: int, stop_ids: list[int], seed: int = 0) -> None:
    """Save a tiny random Glm4ForCausalLM with the real model's shape ratios."""
    import torch
    from transformers import Glm4Config, Glm4ForCausalLM

    torch.manual_seed(seed)
    config = Glm4Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        partial_rotary_factor=0.5,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        attention_bias=False,
        tie_word_embeddings=False,
        pad_token_id=stop_ids[0],
        eos_token_id=stop_ids,
    )
    model = Glm4ForCausalLM(config).eval()
    model.save_pretrained(out)


def build(out: Path, with_model: bool = True) -> Path:
    """Build the fixture into `out` and return it."""
    tok = build_tokenizer(out)
    if with_model:
        stops = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
        build_model(out, vocab_size=len(tok), stop_ids=stops)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer-only", action="store_true")
    args = parser.parse_args()
    build(args.out, with_model=not args.tokenizer_only)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
