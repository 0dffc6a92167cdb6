"""The reward model as a network: built from an LM, scoring texts, and as an env reward.

The reward model (RM) is the language model with its unembedding replaced by a scalar head
(Ouyang et al. 2022, section 3.5): an ``AutoModelForSequenceClassification`` with
``num_labels=1`` whose transformer starts from the LM's. It reads ``prompt + " " + completion``
and its score is the logit at the last real token. Training is in
:mod:`lmgym.rlhf.reward_model`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmgym.models.device import resolve_device, resolve_dtype
from lmgym.models.loading import (
    disable_dropout,
    load_model,
    load_tokenizer,
    require_model_dir,
)
from lmgym.rlhf.config import check_int

__all__ = ["LearnedRewardModel", "init_reward_model", "reward_scores", "rm_text"]


def rm_text(prompt: str, completion: str) -> str:
    """The text the reward model reads: prompt and completion joined by a space.

    Example:
        >>> rm_text("the soup was", "great .")
        'the soup was great .'
    """
    return f"{prompt} {completion}".strip()


def _pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, max_length: int) -> dict[str, Any]:
    """Right-pad id lists into (B, L) tensors, keeping the *last* ``max_length`` ids of a row.

    The end of a row holds the completion, where the score is read, so overlong rows lose the
    start of the prompt instead.
    """
    rows = [list(row)[-max_length:] for row in rows]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _max_length(model: PreTrainedModel) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or 1024)


def reward_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
) -> torch.Tensor:
    """RM scores (B,) of ``prompt + " " + completion`` texts in one forward pass.

    Gradients flow unless called under ``torch.inference_mode()``.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> model, tok = init_reward_model(DEFAULT_MODEL_DIR)
        >>> reward_scores(model, tok, ["the soup was"] * 2, ["great .", "cold ."]).shape
        torch.Size([2])
    """
    texts = [rm_text(p, c) for p, c in zip(prompts, completions, strict=True)]
    rows = tokenizer(texts)["input_ids"]
    batch = _pad_rows(rows, int(tokenizer.pad_token_id), _max_length(model))
    batch = {key: value.to(model.device) for key, value in batch.items()}
    return model(**batch).logits[:, 0].float()  # (B,)


def init_reward_model(
    lm: str | Path | PreTrainedModel,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    *,
    device: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The RM initialised from a causal LM: its transformer, with a scalar head for the unembedding.

    The head is drawn from torch's global generator (seed it with ``set_seed``); dropout is 0.
    ``device`` (``lmgym.models.device``) is where the RM is put; None: the CPU.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> model, tok = init_reward_model(DEFAULT_MODEL_DIR)
        >>> type(model).__name__, model.config.num_labels
        ('GPT2ForSequenceClassification', 1)
    """
    causal_lm, tok = load_model(lm, tokenizer)
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 1
    config.architectures = None
    config.pad_token_id = tok.pad_token_id  # the RM finds each row's last real token with it
    model = AutoModelForSequenceClassification.from_config(config)
    model.base_model.load_state_dict(causal_lm.base_model.state_dict())
    disable_dropout(model)
    model.eval()
    return model.to(resolve_device(device)), tok


def _same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether ids from ``a`` mean the same to a model trained with ``b``."""
    if a is b:
        return True
    probe = "the food was great ."
    return (
        a.get_vocab() == b.get_vocab()
        and a.all_special_ids == b.all_special_ids
        and a(probe)["input_ids"] == b(probe)["input_ids"]
    )


class LearnedRewardModel:
    """A trained reward model as a batch reward function: ``fn(prompts, completions) -> (B,)``.

    Use it as ``gym.make("LMBandit-v0", reward_fn=LearnedRewardModel(path))``. The RM reads
    ``prompt + " " + completion`` tokenized by its *own* tokenizer, as in training. The env also
    passes the policy's token ids; they are used directly (no decode and re-encode) only when
    ``policy_tokenizer`` is given and tokenizes exactly as the RM's does. A policy with a
    different tokenizer is allowed: its ids are then ignored and the texts re-tokenized, since
    the policy's ids would index the wrong rows of the RM's embedding.

    Args:
        path_or_model: A directory written by :func:`train_reward_model`, or a single-logit
            ``*ForSequenceClassification`` model object.
        tokenizer: The RM's tokenizer (directory or object); ``None`` loads it from the
            directory (required with a model object).
        policy_tokenizer: The policy's tokenizer, to decide whether its ids can be used.
        batch_size: Texts per forward pass.
        device: Where the RM runs (:mod:`lmgym.models.device`); ``None`` keeps a model object
            where it is and loads a directory on the CPU. Scores come back as NumPy.
        dtype: Precision of the RM's weights; ``None`` keeps the model's. The score is read
            from its logit in float32 or wider, whatever it is.

    Raises:
        ModelLoadError: The directory does not hold a saved model.
        ValueError: The model has more than one label, or a model object comes without a
            tokenizer.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> model, tok = init_reward_model(DEFAULT_MODEL_DIR)
        >>> rm = LearnedRewardModel(model, tok)
        >>> rm(["the soup was", "the soup was"], ["great .", "cold ."]).shape
        (2,)
        >>> env = gym.make("LMBandit-v0", reward_fn=rm)
    """

    def __init__(
        self,
        path_or_model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        policy_tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        check_int("batch_size", batch_size, minimum=1)
        # Device and dtype before loading: a GPU that is not there fails before any work.
        target = None if device is None else resolve_device(device)
        where = target or (
            path_or_model.device if isinstance(path_or_model, PreTrainedModel) else None
        )
        precision = None if dtype is None else resolve_dtype(dtype, where or torch.device("cpu"))
        if isinstance(path_or_model, (str, Path)):
            path = Path(path_or_model)
            require_model_dir(path, "path_or_model")
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
            tokenizer = path if tokenizer is None else tokenizer
        elif isinstance(path_or_model, PreTrainedModel):
            model = path_or_model
            if tokenizer is None:
                raise ValueError(
                    "tokenizer=None with a model object; expected the reward model's tokenizer "
                    "(an object or a directory). Pass tokenizer=..., or pass the RM's directory."
                )
        else:
            raise TypeError(
                f"path_or_model={path_or_model!r:.80} (type {type(path_or_model).__name__}) is "
                "not supported; expected a reward-model directory or a transformers model."
            )
        if model.config.num_labels != 1:
            raise ValueError(
                f"the reward model has num_labels={model.config.num_labels}; expected a "
                "single-logit model (num_labels=1) whose logit is the reward, as "
                "train_reward_model writes. Wrap a multi-label classifier with "
                "lmgym.rewards.SequenceClassifierReward(..., label=...) instead."
            )
        self.tokenizer = load_tokenizer(tokenizer)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        disable_dropout(model)
        model.eval()
        if target is not None or precision is not None:
            model.to(device=target, dtype=precision)  # type: ignore[call-arg]
        self.model: PreTrainedModel = model
        self.batch_size = batch_size
        self.policy_tokenizer = (
            None if policy_tokenizer is None else load_tokenizer(policy_tokenizer)
        )
        self.uses_policy_ids = self.policy_tokenizer is not None and _same_tokenizer(
            self.policy_tokenizer, self.tokenizer
        )
        self._special_ids = set(self.tokenizer.all_special_ids)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        prompt_ids: Sequence[Sequence[int]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Score each ``(prompt, completion)`` pair; a float64 array (B,)."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(completions)} completions; expected one "
                "completion per prompt."
            )
        if self.uses_policy_ids and prompt_ids is not None and completion_ids is not None:
            # Drop special tokens from the completion, as decoding with skip_special_tokens does:
            # the RM was trained on decoded texts, so it sees the same ids either way.
            rows = [
                [*p, *(t for t in c if t not in self._special_ids)]
                for p, c in zip(prompt_ids, completion_ids, strict=True)
            ]
        else:
            texts = [rm_text(p, c) for p, c in zip(prompts, completions, strict=True)]
            rows = self.tokenizer(texts)["input_ids"] if texts else []
        scores = []
        pad, max_length = int(self.tokenizer.pad_token_id), _max_length(self.model)
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                batch = _pad_rows(rows[start : start + self.batch_size], pad, max_length)
                batch = {name: tensor.to(self.model.device) for name, tensor in batch.items()}
                logits = self.model(**batch).logits[:, 0]  # (b,)
                scores.append(logits.float().cpu().double())
        return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float64)

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return f"LearnedRewardModel({name}, uses_policy_ids={self.uses_policy_ids})"
