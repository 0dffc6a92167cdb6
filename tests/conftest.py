"""Shared fixtures: tiny models built from configs, saved and reloaded (nothing is downloaded).

One torch thread: faster for tiny models on 2 cores (docs/design.md, section 6).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

torch.set_num_threads(1)

PROMPTS = ["the food was", "i thought the staff were", "the soup is", "the service was very"]
"""Prompts the tiny tokenizer knows every word of."""


def count_great(prompts, completions):
    """A reward function: how often a completion says "great"."""
    return [c.split().count("great") for c in completions]


TINY_WORDS = (
    "the food staff soup service was were is great good bad awful rude friendly . and but "
    "i thought loved hated it very"
).split()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over TINY_WORDS that prepends <bos>, like the default model's."""
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + TINY_WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )


def build_tiny_model(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 + word-level tokenizer saved with save_pretrained (safetensors)."""
    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
