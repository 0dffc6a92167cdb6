"""The default tokenizer: a word-level Hugging Face fast tokenizer over the review grammar.

One token per word of :func:`lmgym.models.corpus.vocabulary` (the grammar's full vocabulary, not
just the words a sample happened to use), plus four special tokens. It is a real
``PreTrainedTokenizerFast``, so it saves as ``tokenizer.json`` and reloads with
``AutoTokenizer.from_pretrained`` like any other.

Conventions:

* **BOS is added by the tokenizer.** Its post-processor prepends ``<bos>`` to every encoded text
  (``add_special_tokens=True``, the default), because the model was trained on
  ``<bos> review <eos>``: an environment that tokenizes a prompt with ``tokenizer(prompt)`` gets
  exactly the context the model saw in pre-training. Pass ``add_special_tokens=False`` to encode a
  completion on its own. EOS is never added (a prompt must not end the text); training appends it.
* ``<pad>`` is a token of its own, distinct from ``<eos>``, so padding is always recoverable.
* Text is lower-cased and split on whitespace and punctuation (``"Great."`` becomes
  ``great .``); unknown words map to ``<unk>``.
* ``decode(ids, skip_special_tokens=True)`` gives back the words joined by single spaces, with
  punctuation kept as separate words (``clean_up_tokenization_spaces`` is off), so it round-trips
  the corpus text exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lmgym.models.corpus import vocabulary

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "build_tokenizer",
    "make_tokenizer_config_portable",
    "save_tokenizer",
]

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
"""Special tokens, with ids 0-3 in this order."""


def build_tokenizer(model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer of the default model.

    Args:
        model_max_length: Longest sequence (in tokens, special tokens included) the model takes;
            stored in the tokenizer config so truncation warnings are right.

    Returns:
        A fast tokenizer with ``pad``, ``bos``, ``eos`` and ``unk`` tokens set.

    Example:
        >>> tok = build_tokenizer()
        >>> ids = tok("the pizza was great .")["input_ids"]
        >>> ids[0] == tok.bos_token_id, tok.decode(ids, skip_special_tokens=True)
        (True, 'the pizza was great .')
    """
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int):
        raise TypeError(f"model_max_length={model_max_length!r} is not an int.")
    if model_max_length < 2:
        raise ValueError(
            f"model_max_length={model_max_length} is too small; expected >= 2 (room for <bos> "
            "and one word), e.g. the model's n_positions."
        )
    words = vocabulary()
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # Word-level tokens are whole words: the decoder only has to put spaces between them.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B:1",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])],
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


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Save ``tokenizer`` with ``save_pretrained`` so any transformers >= 4.45 can load it.

    transformers 5 records its own backend class name (``TokenizersBackend``), which transformers
    4 does not know; ``PreTrainedTokenizerFast`` names the same tokenizer in both.

    Example:
        >>> import tempfile
        >>> from transformers import AutoTokenizer
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_tokenizer(build_tokenizer(), d)
        ...     len(AutoTokenizer.from_pretrained(d)) == len(build_tokenizer())
        True
    """
    tokenizer.save_pretrained(directory)
    make_tokenizer_config_portable(directory)


# Arguments of the load that transformers 5 writes back into tokenizer_config.json when a loaded
# tokenizer is saved again; they describe that one load, not the tokenizer.
_LOAD_ARGUMENTS = ("is_local", "local_files_only")


def make_tokenizer_config_portable(directory: str | Path) -> None:
    """Rewrite ``directory/tokenizer_config.json`` so transformers 4 and 5 both load it.

    transformers 5 saves a fast tokenizer as ``TokenizersBackend``, a class transformers 4 does
    not know; ``PreTrainedTokenizerFast`` names the same tokenizer in both. The load arguments
    it writes back (``is_local``, ``local_files_only``) are dropped. Other tokenizer classes
    (``GPT2Tokenizer``, ...) are left as they are.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "tokenizer_config.json").write_text(
        ...     '{"tokenizer_class": "TokenizersBackend", "is_local": true}')
        >>> make_tokenizer_config_portable(d)
        >>> json.loads((d / "tokenizer_config.json").read_text())
        {'tokenizer_class': 'PreTrainedTokenizerFast'}
    """
    config_path = Path(directory) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") in (None, "TokenizersBackend"):
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in _LOAD_ARGUMENTS:
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
