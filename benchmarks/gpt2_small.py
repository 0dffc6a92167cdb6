"""A GPT-2-small-size model for the real-scale benchmarks: 124M parameters, 50,257 tokens.

Randomly initialised from ``GPT2Config()`` (the weights do not matter for speed), with a
byte-level BPE tokenizer of exactly 50,257 tokens trained here with ``tokenizers`` (on the review
corpus plus random letter strings, so the merges reach that size). Built once and saved to a
cache directory as a user's checkpoint would be, so the envs load it by path (and hold one copy).

    python benchmarks/gpt2_small.py            # builds it (about 15 s) and prints where
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lmgym.models.corpus import generate_corpus

VOCAB_SIZE = 50_257
CACHE = Path(os.environ.get("LMGYM_BENCH_CACHE", Path.home() / ".cache" / "lmgym-benchmarks"))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``VOCAB_SIZE`` tokens; ``<|endoftext|>`` is BOS, EOS and pad."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(3, 12))) for _ in range(120_000)]
    text = generate_corpus(5000, seed=0) + [
        " ".join(words[i : i + 20]) for i in range(0, len(words), 20)
    ]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(text, trainer)
    assert core.get_vocab_size() == VOCAB_SIZE, core.get_vocab_size()
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=end, eos_token=end, pad_token=end
    )


def gpt2_small_dir() -> Path:
    """The saved model directory (built on first use)."""
    path = CACHE / "gpt2-small-random"
    if (path / "model.safetensors").is_file():
        return path
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB_SIZE,
            bos_token_id=eos,
            eos_token_id=eos,
            activation_function="gelu_pytorch_tanh",
        )
    )
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(path)
    return path


if __name__ == "__main__":
    where = gpt2_small_dir()
    n = sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(where).parameters())
    print(f"{where}: {n / 1e6:.1f}M parameters, {VOCAB_SIZE} tokens")
