"""The parts every LM environment builds the same way: models, reward, prompts, argument checks.

``LMBandit-v0`` and ``LMToken-v0``, single and vector, take the same model / reward / KL / prompt
arguments and check them the same way; this module is the one place that does it, so the envs
cannot drift apart. An env keeps three parts side by side:

- :class:`LMModels`: the models that serve the reward (the initial policy LM, the frozen
  reference π_ref of the KL penalty, the tokenizer);
- :class:`~lmgym.envs.sequence_reward.SequenceRewarder`: the task reward r_φ and the KL penalty;
- :class:`~lmgym.envs.prompts.PromptSource`: the prompts.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.prompts import PromptSource, PromptSpec
from lmgym.envs.sequence_reward import SequenceRewarder
from lmgym.error import short_repr
from lmgym.models.corpus import prompts as default_prompts
from lmgym.models.device import model_device, resolve_device, resolve_dtype
from lmgym.models.loading import (
    DEFAULT_MODEL_DIR,
    check_vocab_fits,
    disable_dropout,
    load_model,
)
from lmgym.rewards import LexiconSentimentReward, RewardLike

__all__ = [
    "MAX_KL_COEF",
    "UsesLMEnvParts",
    "LMEnvParts",
    "LMModels",
    "ModelSpec",
    "build_lm_env_parts",
    "build_lm_models",
    "check_bool",
    "check_kl_coef",
    "check_kl_target",
    "check_lm_env_args",
    "check_minibatch_size",
    "check_positive_int",
    "check_render_mode",
    "fit_prompt_block",
    "require_int",
    "lm_env_arguments",
    "model_context_length",
]

ModelSpec = str | Path | PreTrainedModel
"""A local Hugging Face directory, a hub id (through transformers' cache) or a model object."""

MAX_KL_COEF = 1e6
"""Largest β an env accepts. Far beyond it the KL term alone decides every reward (any reward
model's score vanishes beside it), and ``β · KL`` can overflow to an infinite reward."""


@dataclass
class LMModels:
    """The models that serve an LM environment's reward, and their tokenizer.

    Attributes:
        model: The initial policy LM. The env never runs it; an LM policy builds on its own
            copy. When the env loaded it (from a directory or hub id) it is the same object as
            ``ref_model``: one copy of the weights, frozen.
        ref_model: The frozen reference π_ref of the KL penalty (no gradients, eval mode); the
            envs only call it, so any module called like a causal LM serves (e.g. the LoRA
            policy's base with adapters off, :class:`lmgym.agents.lora.AdapterDisabledReference`).
        tokenizer: Shared by prompts, actions and decoding.
        vocab_size: Number of token ids an action may use (``len(tokenizer)``).
        pad_token_id: Marks padding in observations.
        eos_token_id: Ends a completion.
        source: The directory or hub id the env loaded ``model`` from (``None`` for a model
            object the caller passed, or when ``trust_remote_code`` was needed): an LM policy
            loads its own copy from it (:func:`lmgym.agents.lm_policy_setup.lm_policy_kwargs`),
            so nothing outside the env holds on to the env's weights.
    """

    model: PreTrainedModel
    ref_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    pad_token_id: int
    eos_token_id: int
    source: str | Path | None = None

    @property
    def device(self) -> torch.device:
        """Where the reference runs: the env moves its ids there, and only results come back."""
        return model_device(self.ref_model)

    def use_reference(self, reference: nn.Module) -> None:
        """Make ``reference`` π_ref (and the initial model), dropping the env's own copy.

        For a LoRA policy's base with its adapters off
        (:class:`lmgym.agents.lora.AdapterDisabledReference`), which is the initial model
        itself: the env then holds no weights of its own. Checked before anything changes.
        """
        candidate = cast(PreTrainedModel, reference)
        check_vocab_fits(candidate, self.tokenizer)
        self.model = self.ref_model = candidate


def build_lm_models(
    model: ModelSpec | None = None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    ref_model: ModelSpec | nn.Module | None = None,
    *,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LMModels:
    """Load (or take) the policy LM, its tokenizer and the reference LM.

    ``model=None`` means the embedded default model. ``ref_model=None`` means ``model`` as it is
    now, frozen: a model the env loads itself is that reference (one copy of the weights), and
    a model object the caller passes is copied, so that training the caller's object never
    moves the reference. A ``ref_model`` that is an ``nn.Module`` but no ``PreTrainedModel`` is
    used as it is, called like a causal LM (``AdapterDisabledReference`` shares the policy's
    weights this way). ``device`` and ``dtype`` (:mod:`lmgym.models.device`) are checked before
    anything loads, and place both models.
    """
    target = None if device is None else resolve_device(device)
    if dtype is not None:
        resolve_dtype(dtype, target or torch.device("cpu"))
    policy_model, tok = load_model(
        DEFAULT_MODEL_DIR if model is None else model,
        tokenizer,
        trust_remote_code=trust_remote_code,
        device=target,
        dtype=dtype,
    )
    given = isinstance(model, PreTrainedModel)
    if ref_model is None:
        # The loader returns a caller's object as it is; only then is a copy needed.
        reference = copy.deepcopy(policy_model) if given else policy_model
    elif isinstance(ref_model, PreTrainedModel):
        reference, _ = load_model(ref_model, tok, device=target, dtype=dtype)
    elif isinstance(ref_model, nn.Module):
        # Duck-typed: the envs only call the reference. It must expose config and
        # get_input_embeddings() for the vocabulary check below.
        reference = cast(PreTrainedModel, ref_model)
    elif isinstance(ref_model, (str, Path)):
        # A directory or hub id that does not load is reported as ref_model=, not model=.
        reference, _ = load_model(
            ref_model,
            tok,
            trust_remote_code=trust_remote_code,
            device=target,
            dtype=dtype,
            argument="ref_model",
        )
    else:
        raise TypeError(
            f"ref_model={short_repr(ref_model)} (type {type(ref_model).__name__}) is not "
            "supported; expected None (model, frozen), a local directory saved with "
            "save_pretrained, a hub id, or a transformers PreTrainedModel."
        )
    policy_device, reference_device = model_device(policy_model), model_device(reference)
    if policy_device != reference_device:
        raise ValueError(
            f"model is on {policy_device} but ref_model is on {reference_device}; expected "
            "both on one device. Pass device=... to the env to place both, or move them "
            "before passing them."
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
    # Where a policy can load its own copy from (not with remote code: the policy would need
    # trust_remote_code too, so it gets the object).
    source = None if isinstance(model, PreTrainedModel) or trust_remote_code else model
    source = DEFAULT_MODEL_DIR if model is None else source
    return LMModels(
        model=policy_model,
        ref_model=reference,
        tokenizer=tok,
        vocab_size=len(tok),
        pad_token_id=int(tok.pad_token_id),
        eos_token_id=int(tok.eos_token_id),
        source=source,
    )


def require_int(name: str, value: Any, expected: str) -> int:
    """Return ``value`` as an int if it is one (NumPy integers too, bools not), else raise.

    Example:
        >>> require_int("num_envs", np.int64(2), "an int >= 1")
        2
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name}={short_repr(value)} (type {type(value).__name__}) is not an int; expected "
            f"{expected}."
        )
    return int(value)


def check_positive_int(name: str, value: Any, example: int) -> int:
    """Return ``value`` as an int if it is an int (or NumPy integer) >= 1, else raise naming it.

    Example:
        >>> check_positive_int("max_new_tokens", 4, example=16)
        4
    """
    value = require_int(name, value, f"an int >= 1, e.g. {name}={example}")
    if value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1, e.g. {name}={example}.")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real ``bool``: a flag is never judged by truthiness.

    Example:
        >>> check_bool("truncate_prompts", True)
        True
    """
    if not isinstance(value, bool):
        raise TypeError(
            f"{name}={short_repr(value)} (type {type(value).__name__}) is not a bool; expected "
            f"True or False (a string such as 'no' would count as True), e.g. {name}=True."
        )
    return value


def check_kl_coef(kl_coef: Any) -> float:
    """Return β as a float: any real number (NumPy scalars too) in ``[0, MAX_KL_COEF]``.

    Example:
        >>> check_kl_coef(np.float32(0.5))
        0.5
    """
    if isinstance(kl_coef, (bool, np.bool_)) or not isinstance(kl_coef, numbers.Real):
        raise TypeError(
            f"kl_coef={short_repr(kl_coef)} (type {type(kl_coef).__name__}) is not a number; "
            "expected a finite float >= 0, e.g. kl_coef=0.05 (0 turns the KL penalty off)."
        )
    value = float(kl_coef)
    if not np.isfinite(value) or value < 0 or value > MAX_KL_COEF:
        raise ValueError(
            f"kl_coef={kl_coef!r} must be a finite float in [0, {MAX_KL_COEF:g}] (0 turns the "
            "KL penalty off; a larger β leaves nothing of the reward model's score and can "
            "overflow the reward). Pass e.g. kl_coef=0.05."
        )
    return value


def check_kl_target(kl_target: Any) -> float | None:
    """Return the adaptive β's target (a finite KL > 0, in nats per completion) or ``None``.

    Example:
        >>> check_kl_target(6) is None, check_kl_target(None) is None
        (False, True)
    """
    if kl_target is None:
        return None
    if isinstance(kl_target, (bool, np.bool_)) or not isinstance(kl_target, numbers.Real):
        raise TypeError(
            f"kl_target={short_repr(kl_target)} (type {type(kl_target).__name__}) is not a "
            "number; expected a KL summed over a completion in nats > 0 (e.g. kl_target=6.0), "
            "or None for a fixed β."
        )
    if not np.isfinite(float(kl_target)) or kl_target <= 0:
        raise ValueError(
            f"kl_target={kl_target!r} must be a finite KL > 0, summed over a completion in "
            "nats (e.g. kl_target=6.0); pass kl_target=None to keep β fixed."
        )
    return float(kl_target)


def check_minibatch_size(minibatch_size: Any, num_envs: int | None = None) -> int | None:
    """Return ``minibatch_size`` (rows per reference forward) if valid, else raise naming it.

    ``None`` scores a whole batch in one forward. A vector env's ``num_envs`` must be a
    multiple of it, so that every micro-batch is the same size (the memory it bounds is that
    of one micro-batch, whichever it is).

    Example:
        >>> check_minibatch_size(8, num_envs=64), check_minibatch_size(None) is None
        (8, True)
    """
    if minibatch_size is None:
        return None
    value = check_positive_int("minibatch_size", minibatch_size, example=16)
    if num_envs is not None and num_envs % value:
        divisors = [d for d in range(1, num_envs + 1) if num_envs % d == 0 and d <= value]
        raise ValueError(
            f"minibatch_size={value} does not divide num_envs={num_envs}; expected the "
            f"reference to score num_envs rows in equal micro-batches. Pass a divisor of "
            f"num_envs such as minibatch_size={divisors[-1]}, or minibatch_size=None for one "
            "forward over the whole batch."
        )
    return value


def check_lm_env_args(
    *,
    kl_coef: Any,
    kl_target: Any,
    kl_horizon: Any,
    max_prompt_tokens: Any,
    max_new_tokens: Any,
    truncate_prompts: Any,
    minibatch_size: Any = None,
) -> None:
    """Validate the numeric and flag arguments shared by the LM envs, before anything is loaded.

    Example:
        >>> check_lm_env_args(kl_coef=0.05, kl_target=None, kl_horizon=10_000,
        ...                   max_prompt_tokens=16, max_new_tokens=16, truncate_prompts=False)
    """
    check_positive_int("max_prompt_tokens", max_prompt_tokens, example=16)
    check_positive_int("max_new_tokens", max_new_tokens, example=16)
    check_kl_coef(kl_coef)
    check_kl_target(kl_target)
    check_positive_int("kl_horizon", kl_horizon, example=10_000)
    check_bool("truncate_prompts", truncate_prompts)
    check_minibatch_size(minibatch_size)


def model_context_length(models: LMModels) -> int | None:
    """Positions the policy and reference models can take (the smaller), ``None`` if unknown.

    Read from ``config.max_position_embeddings`` (GPT-2's ``n_positions`` answers to it too).
    """
    limits = []
    for model in (models.model, models.ref_model):
        # Not every config names a position limit (e.g. models without position embeddings).
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 0:
            limits.append(limit)
    return min(limits) if limits else None


def fit_prompt_block(
    max_prompt_tokens: int, max_new_tokens: int, context: int | None, truncate_prompts: bool
) -> int:
    """The prompt block width that fits the model: ``max_prompt_tokens``, or less if allowed.

    A prompt and its completion are fed to the models as one sequence, so
    ``max_prompt_tokens + max_new_tokens`` must fit the model's positions; past them the
    position embedding has no row and the forward fails. With ``truncate_prompts=True`` the
    prompt block shrinks to what fits (prompts keep their last tokens), with a warning.

    Example:
        >>> fit_prompt_block(16, 16, context=64, truncate_prompts=False)
        16
        >>> fit_prompt_block(60, 30, context=64, truncate_prompts=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: max_prompt_tokens=60 + max_new_tokens=30 = 90 tokens exceeds the model's ...
    """
    if context is None or max_prompt_tokens + max_new_tokens <= context:
        return max_prompt_tokens
    room = context - max_new_tokens
    if truncate_prompts and room >= 1:
        warnings.warn(
            f"max_prompt_tokens={max_prompt_tokens} + max_new_tokens={max_new_tokens} exceeds "
            f"the model's {context} positions; with truncate_prompts=True prompts are cut to "
            f"their last {room} tokens, and the observation's prompt block is {room} wide.",
            stacklevel=4,
        )
        return room
    fixes = (
        f"lower max_prompt_tokens to {room} or less (truncate_prompts=True does that for you)"
        if room >= 1
        else f"lower max_new_tokens below {context}"
    )
    raise ValueError(
        f"max_prompt_tokens={max_prompt_tokens} + max_new_tokens={max_new_tokens} = "
        f"{max_prompt_tokens + max_new_tokens} tokens exceeds the model's context of {context} "
        f"positions (config.max_position_embeddings); expected a prompt and its completion to "
        f"fit in it. Fix: {fixes}."
    )


def check_render_mode(render_mode: Any, render_modes: list[str]) -> str | None:
    """Return ``render_mode`` if it is ``None`` or one of ``render_modes``, else raise naming it.

    Example:
        >>> check_render_mode("ansi", ["ansi", "human"])
        'ansi'
    """
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(
            f"render_mode={short_repr(render_mode)} is not supported; expected one of "
            f"{render_modes} or None."
        )
    return render_mode


def lm_env_arguments(env_class: type[gym.Env], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A vector env's ``kwargs``, completed with the defaults of ``env_class``'s signature.

    The single env's signature is the one place that states the arguments and their defaults;
    a vector env takes the same keyword arguments and builds its parts from them without
    building a single env. An unknown name raises ``TypeError``, as the single env would.
    ``render_mode`` is left out: a vector env has its own.

    Example:
        >>> from lmgym.envs.bandit import LMBanditEnv
        >>> lm_env_arguments(LMBanditEnv, {"kl_coef": 0.1})["max_new_tokens"]
        16
    """
    try:
        bound = inspect.signature(env_class).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"{env_class.__name__}: {err}; see help({env_class.__name__}).") from None
    bound.apply_defaults()
    return {name: value for name, value in bound.arguments.items() if name != "render_mode"}


@dataclass
class LMEnvParts:
    """Models, reward and prompts of one LM env, single or vector.

    Attributes:
        models: The models that serve the reward (policy LM, reference LM) and the tokenizer.
        rewarder: Task reward r_φ, KL estimator and β controller.
        prompt_source: Draws and encodes the prompts.
        max_prompt_tokens: Width of the observation's prompt block: the argument, or less when
            ``truncate_prompts=True`` had to shrink it to fit the model's positions.
        max_new_tokens: Completion length limit.
        minibatch_size: Rows per reference forward (``None``: the whole batch at once).
    """

    models: LMModels
    rewarder: SequenceRewarder
    prompt_source: PromptSource
    max_prompt_tokens: int
    max_new_tokens: int
    minibatch_size: int | None = None


class UsesLMEnvParts:
    """What an LM env, single or vector, reads from its :class:`LMEnvParts` (``self.parts``)."""

    parts: LMEnvParts

    @property
    def models(self) -> LMModels:
        """The models that serve the reward (policy LM, reference LM) and the tokenizer."""
        return self.parts.models

    @property
    def rewarder(self) -> SequenceRewarder:
        """Task reward r_φ, KL estimator and β controller."""
        return self.parts.rewarder

    @property
    def prompt_source(self) -> PromptSource:
        """Draws and encodes the prompts."""
        return self.parts.prompt_source

    @property
    def max_prompt_tokens(self) -> int:
        """Width of the observation's prompt block."""
        return self.parts.max_prompt_tokens

    @property
    def max_new_tokens(self) -> int:
        """Completion length limit."""
        return self.parts.max_new_tokens

    def use_reference(self, reference: nn.Module) -> None:
        """Make ``reference`` the env's π_ref in place of its own model.

        See :meth:`LMModels.use_reference`; :func:`lmgym.agents.attach.attach_lora_reference`
        calls it with a LoRA policy's base, so that no second env is needed to pass it.
        """
        self.models.use_reference(reference)


def build_lm_env_parts(
    *,
    model: ModelSpec | None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None,
    ref_model: ModelSpec | nn.Module | None,
    prompts: PromptSpec | None,
    reward_fn: RewardLike | None,
    kl_coef: float,
    kl_estimator: str,
    kl_target: float | None,
    kl_horizon: int,
    kl_batch_size: int | None,
    max_prompt_tokens: int,
    max_new_tokens: int,
    truncate_prompts: bool,
    trust_remote_code: bool,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    minibatch_size: int | None = None,
) -> LMEnvParts:
    """Check the shared arguments (cheap checks first), then load and build the parts.

    ``model=None`` is the embedded default model, ``reward_fn=None`` the lexicon sentiment
    reward ("write a positive review"), ``prompts=None`` the default training prompts. Once the
    models are loaded, ``max_prompt_tokens + max_new_tokens`` is checked against their positions
    (:func:`fit_prompt_block`).

    Example:
        >>> parts = build_lm_env_parts(
        ...     model=None, tokenizer=None, ref_model=None, prompts=None,
        ...     reward_fn=None, kl_coef=0.05, kl_estimator="k1", kl_target=None,
        ...     kl_horizon=10_000, kl_batch_size=None, max_prompt_tokens=8, max_new_tokens=8,
        ...     truncate_prompts=False, trust_remote_code=False)
        >>> parts.max_prompt_tokens + parts.max_new_tokens
        16
    """
    check_lm_env_args(
        kl_coef=kl_coef,
        kl_target=kl_target,
        kl_horizon=kl_horizon,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        truncate_prompts=truncate_prompts,
        minibatch_size=minibatch_size,
    )
    models = build_lm_models(
        model,
        tokenizer,
        ref_model,
        trust_remote_code=trust_remote_code,
        device=device,
        dtype=dtype,
    )
    new_tokens = int(max_new_tokens)
    prompt_tokens = fit_prompt_block(
        int(max_prompt_tokens), new_tokens, model_context_length(models), truncate_prompts
    )
    rewarder = SequenceRewarder(
        models,
        LexiconSentimentReward() if reward_fn is None else reward_fn,
        kl_coef=check_kl_coef(kl_coef),
        kl_estimator=kl_estimator,
        kl_target=check_kl_target(kl_target),
        kl_horizon=int(kl_horizon),
        kl_batch_size=kl_batch_size,
        minibatch_size=check_minibatch_size(minibatch_size),
    )
    prompt_source = PromptSource(
        default_prompts("train") if prompts is None else prompts,
        models.tokenizer,
        prompt_tokens,
        truncate_prompts,
    )
    return LMEnvParts(
        models=models,
        rewarder=rewarder,
        prompt_source=prompt_source,
        max_prompt_tokens=prompt_tokens,
        max_new_tokens=new_tokens,
        minibatch_size=check_minibatch_size(minibatch_size),
    )
