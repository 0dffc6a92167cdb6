"""The parts every LM environment builds the same way from its keyword arguments.

``LMBandit-v0`` and ``LMToken-v0`` take the same model / reward / KL / prompt arguments and check
them the same way; this module is the one place that does it, so the two envs cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.lm_setup import LMSetup, ModelSpec, build_lm_setup
from lmgym.envs.prompts import PromptSource, PromptSpec
from lmgym.envs.sequence_reward import SequenceRewarder
from lmgym.models.corpus import prompts as default_prompts
from lmgym.rewards import LexiconSentimentReward


def check_lm_env_args(*, kl_coef: float, max_prompt_tokens: int, max_new_tokens: int) -> None:
    """Validate the numeric arguments shared by the LM envs, before anything is loaded."""
    for name, value in (
        ("max_prompt_tokens", max_prompt_tokens),
        ("max_new_tokens", max_new_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name}={value!r} must be an int > 0, e.g. {name}=16.")
    if not isinstance(kl_coef, (int, float)) or not np.isfinite(kl_coef) or kl_coef < 0:
        raise ValueError(
            f"kl_coef={kl_coef!r} must be a finite float >= 0 (0 turns the KL penalty off)."
        )


@dataclass
class LMEnvParts:
    """Models, reward and prompts of one LM env (shared by its vector env)."""

    lm: LMSetup
    rewarder: SequenceRewarder
    prompt_source: PromptSource


def build_lm_env_parts(
    *,
    model: ModelSpec | None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None,
    ref_model: str | Path | PreTrainedModel | None,
    prompts: PromptSpec | None,
    reward_fn: Any,
    kl_coef: float,
    kl_estimator: str,
    kl_target: float | None,
    kl_horizon: int,
    kl_batch_size: int | None,
    max_prompt_tokens: int,
    max_new_tokens: int,
    truncate_prompts: bool,
    render_mode: str | None,
    render_modes: list[str],
    trust_remote_code: bool,
) -> LMEnvParts:
    """Check the shared arguments (cheap checks first), then load and build the parts.

    ``model=None`` is the embedded default model, ``reward_fn=None`` the lexicon sentiment
    reward ("write a positive review"), ``prompts=None`` the default training prompts.
    """
    check_lm_env_args(
        kl_coef=kl_coef, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens
    )
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(
            f"render_mode={render_mode!r} is not supported; expected one of {render_modes} or None."
        )
    lm = build_lm_setup(model, tokenizer, ref_model, trust_remote_code=trust_remote_code)
    rewarder = SequenceRewarder(
        lm,
        LexiconSentimentReward() if reward_fn is None else reward_fn,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        kl_target=kl_target,
        kl_horizon=kl_horizon,
        kl_batch_size=kl_batch_size,
    )
    prompt_source = PromptSource(
        default_prompts("train") if prompts is None else prompts,
        lm.tokenizer,
        max_prompt_tokens,
        truncate_prompts,
    )
    return LMEnvParts(lm=lm, rewarder=rewarder, prompt_source=prompt_source)
