"""Helpers of the LM policy: loading and checking its LM, freezing layers, a log-prob cache.

Kept apart from :mod:`lmgym.agents.lm_policy` so that module holds only the policy classes.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import DEFAULT_MODEL_DIR, disable_dropout, load_model

__all__ = [
    "LogProbCache",
    "check_spaces",
    "check_vocab",
    "freeze_bottom",
    "lm_policy_kwargs",
    "load_lm",
    "parameter_version",
    "resolve_decoding",
    "transformer_blocks",
]


def parameter_version(module: nn.Module) -> tuple[int, ...]:
    """A snapshot of ``module``'s parameters that changes whenever any of them is modified.

    Every in-place write to a tensor (an optimizer step, ``load_state_dict``, TRPO's line
    search, an edit under ``torch.no_grad()``) bumps torch's per-tensor version counter, so two
    equal snapshots mean the parameters were not written in between. This catches updates that
    go around SB3's ``set_training_mode`` / ``optimizer.step()`` hooks as well.

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> before = parameter_version(layer)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(2)
        >>> parameter_version(layer) == before
        False
    """
    return tuple(p._version for p in module.parameters())


@dataclasses.dataclass
class LogProbCache:
    """Log-probs the policy computed while acting, looked up by the rows it acted on.

    SB3 calls the policy's ``forward``, then steps the env, whose KL term asks for the log-probs
    of what the policy just did: they are served from here instead of a second forward pass.
    A row is the prompt and completion (``LMBandit-v0``) or the observation (``LMToken-v0``).
    The entries are valid for one :func:`parameter_version` only: after an update, a lookup
    misses and the caller recomputes (issue 13: a stale cache used to outlive the update).
    """

    rows: dict[bytes, int]
    logprobs: torch.Tensor  # (B, T) per-token or (B, V) next-token log-probs, on the CPU
    version: tuple[int, ...]

    @classmethod
    def build(
        cls, rows: torch.Tensor, logprobs: torch.Tensor, version: tuple[int, ...]
    ) -> LogProbCache:
        """Remember ``logprobs`` (B, ...) of ``rows`` (B, L), computed at ``version``."""
        keys = _row_keys(rows.detach().cpu().numpy())
        return cls(
            {key: i for i, key in enumerate(keys)},
            logprobs.detach().float().cpu().clone(),
            version,
        )

    def lookup(self, rows: np.ndarray, version: tuple[int, ...]) -> torch.Tensor | None:
        """The cached log-probs of ``rows`` (b, L), or None if any is missing or stale."""
        if version != self.version:
            return None
        index = [self.rows.get(key) for key in _row_keys(np.asarray(rows))]
        if any(i is None for i in index):
            return None
        return self.logprobs[index].clone()


def _row_keys(rows: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in rows.reshape(-1, rows.shape[-1]).astype(np.int64)]


def lm_policy_kwargs(env: Any, **overrides: Any) -> dict[str, Any]:
    """``policy_kwargs`` that build :class:`LMActorCriticPolicy` on ``env``'s own initial LM.

    The tokenizer is passed as the env's object. The model is passed as the directory or hub id
    the env loaded it from, so the policy loads its own float32 copy and neither it nor the
    SB3 model keeps a handle on the env's weights (which then go when the env drops them, as
    :func:`lmgym.agents.attach.attach_lora_reference` does); a model object the caller gave
    the env is passed as that object (the policy deep-copies it, so the env's copy is never
    trained). ``overrides`` adds or replaces any other policy argument.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from lmgym.agents import LMActorCriticPolicy
        >>> env = gym.make("LMBandit-v0")
        >>> model = PPO(LMActorCriticPolicy, env,
        ...             policy_kwargs=lm_policy_kwargs(env, freeze_layers=1))
    """
    models = _find_env_models(env)
    model = models.model if models.source is None else models.source
    return {"model": model, "tokenizer": models.tokenizer, **overrides}


def _find_env_models(env: Any) -> Any:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

    from lmgym.agents.vec_env import SB3VecEnv

    while isinstance(env, VecEnvWrapper):
        env = env.venv
    if isinstance(env, SB3VecEnv):
        env = env.venv
    if isinstance(env, DummyVecEnv):
        env = env.envs[0]
    target = env.unwrapped if hasattr(env, "unwrapped") else env
    if not hasattr(target, "models"):
        raise TypeError(
            f"env={env!r} is not an lmgym LM env (no .models); expected "
            "gym.make('LMBandit-v0', ...), gym.make_vec(...), or SB3's DummyVecEnv / "
            "lmgym.agents.SB3VecEnv around them."
        )
    return target.models


# ------------------------------------------------------------------------ construction


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Refuse spaces other than token ids in, a completion or a next token out (``TypeError``)."""
    if not (
        isinstance(observation_space, spaces.Box)
        and len(observation_space.shape) == 1
        and np.issubdtype(observation_space.dtype, np.integer)
    ):
        raise TypeError(
            f"observation_space={observation_space} is not supported; expected a 1-D integer "
            "Box of padded token ids, as LMBandit-v0 and LMToken-v0 have."
        )
    completion = isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1
    # A next-token action must be able to name every id the observation holds (LMToken-v0).
    token = isinstance(action_space, spaces.Discrete) and int(action_space.n) > int(
        observation_space.high.max()
    )
    if not (completion or token):
        raise TypeError(
            f"action_space={action_space} is not supported; expected MultiDiscrete([V] * T) "
            "(a whole completion, as LMBandit-v0 has) or Discrete(V) over the vocabulary of "
            "the observations (the next token, as LMToken-v0 has)."
        )


def resolve_decoding(
    decoding: DecodingConfig | dict[str, Any] | None, action_space: spaces.Space
) -> DecodingConfig | None:
    """``predict()``'s decoding of a completion, its length the action's; None for a next token.

    Example:
        >>> resolve_decoding(dict(top_k=5), spaces.MultiDiscrete([10] * 4)).max_new_tokens
        4
    """
    if isinstance(action_space, spaces.Discrete):
        if decoding is not None:
            raise ValueError(
                f"decoding={decoding!r} with a Discrete action space: on LMToken-v0 SB3 "
                "samples each token from the policy itself; expected decoding=None."
            )
        return None
    assert isinstance(action_space, spaces.MultiDiscrete)  # check_spaces
    max_new_tokens = int(action_space.nvec.shape[0])
    if decoding is None:
        return DecodingConfig(max_new_tokens=max_new_tokens)
    if isinstance(decoding, dict):
        return DecodingConfig(**{**decoding, "max_new_tokens": max_new_tokens})
    if isinstance(decoding, DecodingConfig):
        return dataclasses.replace(decoding, max_new_tokens=max_new_tokens)
    raise TypeError(
        f"decoding={decoding!r} is not supported; expected a "
        "lmgym.models.generation.DecodingConfig, a dict of its fields, or None."
    )


def check_vocab(
    lm: PreTrainedModel, observation_space: spaces.Space, action_space: spaces.Space
) -> None:
    """Refuse a model whose embedding cannot hold every token id of the spaces (``ValueError``)."""
    rows = int(lm.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    assert isinstance(observation_space, spaces.Box)
    if isinstance(action_space, spaces.Discrete):
        n_actions = int(action_space.n)
    else:
        assert isinstance(action_space, spaces.MultiDiscrete)
        n_actions = int(action_space.nvec.max())
    largest = max(n_actions - 1, int(observation_space.high.max()))
    if largest >= rows:
        raise ValueError(
            f"the env uses token ids up to {largest} but the model's embedding has {rows} rows; "
            "expected the env's model: pass policy_kwargs=lm_policy_kwargs(env), or model=<the "
            "directory the env was built from>."
        )


def load_lm(
    model: str | Path | PreTrainedModel | None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None,
    attn_implementation: str | None,
    trust_remote_code: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """The policy's own LM (dropout 0) and tokenizer; a model object is deep-copied.

    The tokenizer is None when ``model`` is an object and ``tokenizer`` is not given.
    """
    if model is None or isinstance(model, (str, Path)):
        return load_model(
            DEFAULT_MODEL_DIR if model is None else model,
            tokenizer,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model={model!r} (type {type(model).__name__}) is not supported; expected a local "
            "directory, a transformers PreTrainedModel, or None for the embedded default."
        )
    lm = copy.deepcopy(model)  # never train the caller's (e.g. the env's) model
    # The env's model is its frozen reference; the policy's copy is trained.
    lm.requires_grad_(True)
    if attn_implementation is not None:
        lm.set_attn_implementation(attn_implementation)
    if tokenizer is None:
        disable_dropout(lm)
        lm.eval()
        return lm, None
    return load_model(lm, tokenizer, trust_remote_code=trust_remote_code)


def transformer_blocks(lm: PreTrainedModel) -> nn.ModuleList:
    """The list of ``lm``'s transformer blocks (what ``freeze_layers`` counts)."""
    n_layers = int(lm.config.num_hidden_layers)
    for module in lm.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise TypeError(
        f"found no list of {n_layers} transformer blocks in {type(lm).__name__}; "
        "freeze_layers supports decoder models that keep their blocks in an nn.ModuleList."
    )


def freeze_bottom(lm: PreTrainedModel, n: int) -> None:
    """Freeze the embeddings and the bottom ``n`` transformer blocks of ``lm``."""
    blocks = transformer_blocks(lm)
    # The embeddings are the trunk's children registered before the blocks (wte, wpe for GPT-2).
    for child in lm.base_model.children():
        if child is blocks:
            break
        child.requires_grad_(False)
    for block in blocks[:n]:
        block.requires_grad_(False)
