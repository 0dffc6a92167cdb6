"""A word-level tokenizer over a text game's own words, for small LMs trained to play it.

The embedded default model knows restaurant reviews, not cats or cards; a game played by a
small LM from scratch (as in ``examples/lm_plays_cat.py``) needs a vocabulary that holds its
words. This builds one from sample texts, with the default tokenizer's conventions (``<pad>``,
``<bos>``, ``<eos>``, ``<unk>`` as ids 0-3, a ``<bos>`` prepended to every encoded text,
lower-cased words and punctuation as separate tokens).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lmgym.models.tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN

__all__ = ["word_tokenizer"]


def word_tokenizer(texts: Iterable[str], model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer whose vocabulary is every word and mark of ``texts``.

    Args:
        texts: Sample texts of the game (descriptions, replies, answers); each distinct word
            (lower-cased) and punctuation mark becomes one token, in order of first use.
        model_max_length: The model's positions, stored in the tokenizer's config.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad, BOS, EOS and unknown tokens set.

    Example:
        >>> tok = word_tokenizer(["The cat is at (0 1). Which way?", "up down left right"])
        >>> tok.decode(tok("Which way? up")["input_ids"], skip_special_tokens=True)
        'which way ? up'
    """
    splitter = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text.lower()):
            vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = splitter
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
