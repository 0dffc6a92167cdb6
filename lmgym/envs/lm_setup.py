"""Resolve the model / tokenizer / reference-model arguments shared by the LM environments."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.error import short_repr
from lmgym.models.loading import (
    DEFAULT_MODEL_DIR,
    check_vocab_fits,
    disable_dropout,
    load_model,
    require_model_dir,
)

ModelSpec = str | Path | PreTrainedModel
"""A local Hugging Face directory or a model object."""


@dataclass
class LMSetup:
    """The language-model side of an LM environment.

    Attributes:
        model: The initial policy LM. The env never runs it; an LM policy builds on it.
        ref_model: The frozen reference π_ref of the KL penalty (no gradients, eval mode); the
            envs only call it, so any module called like a causal LM serves (e.g. the LoRA
            policy's base with adapters off, :class:`lmgym.agents.lora.AdapterDisabledReference`).
        tokenizer: Shared by prompts, actions and decoding.
        vocab_size: Number of token ids an action may use (``len(tokenizer)``).
        pad_token_id: Marks padding in observations.
        eos_token_id: Ends a completion.
    """

    model: PreTrainedModel
    ref_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    pad_token_id: int
    eos_token_id: int


def build_lm_setup(
    model: ModelSpec | None = None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    ref_model: ModelSpec | nn.Module | None = None,
    *,
    trust_remote_code: bool = False,
) -> LMSetup:
    """Load (or take) the policy LM, its tokenizer and the reference LM.

    ``model=None`` means the embedded default model. ``ref_model=None`` means a frozen copy of
    ``model`` as it is now, so later changes to ``model`` (training) never move the reference.
    A ``ref_model`` that is an ``nn.Module`` but no ``PreTrainedModel`` is used as it is, called
    like a causal LM (``AdapterDisabledReference`` shares the policy's weights this way).
    """
    policy_model, tok = load_model(
        DEFAULT_MODEL_DIR if model is None else model,
        tokenizer,
        trust_remote_code=trust_remote_code,
    )
    if ref_model is None:
        reference = copy.deepcopy(policy_model)
    elif isinstance(ref_model, PreTrainedModel):
        reference = ref_model
    elif isinstance(ref_model, nn.Module):
        # Duck-typed: the envs only call the reference. It must expose config and
        # get_input_embeddings() for the vocabulary check below.
        reference = cast(PreTrainedModel, ref_model)
    elif isinstance(ref_model, (str, Path)):
        # Checked here so that the error names ref_model=, not the loader's model=.
        require_model_dir(Path(ref_model), "ref_model")
        reference, _ = load_model(ref_model, tok, trust_remote_code=trust_remote_code)
    else:
        raise TypeError(
            f"ref_model={short_repr(ref_model)} (type {type(ref_model).__name__}) is not "
            "supported; expected None (a frozen copy of model), a local directory saved with "
            "save_pretrained, or a transformers PreTrainedModel."
        )
    check_vocab_fits(reference, tok)
    disable_dropout(reference)
    reference.eval()
    reference.requires_grad_(False)
    if tok.eos_token_id is None:
        raise ValueError(
            f"tokenizer {type(tok).__name__} has no eos_token; expected one to end completions. "
            "Set tokenizer.eos_token before creating the env."
        )
    return LMSetup(
        model=policy_model,
        ref_model=reference,
        tokenizer=tok,
        vocab_size=len(tok),
        pad_token_id=int(tok.pad_token_id),
        eos_token_id=int(tok.eos_token_id),
    )
