"""Helpers of the env tests: the LM envs on the tiny model, with the tests' prompts and reward."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from tests.conftest import PROMPTS, count_great

P, T = 8, 6
"""Prompt block width and completion length of the envs below."""
EOS, PAD, BOS = 2, 0, 1
"""The tiny tokenizer's special token ids."""


def _tiny_defaults(tiny_lm_dir: Path, kwargs: dict) -> dict:
    """``kwargs`` completed with the tiny model, the tests' prompts and reward, P and T."""
    return {"model": tiny_lm_dir, "prompts": PROMPTS, "reward_fn": count_great,
            "max_prompt_tokens": P, "max_new_tokens": T, **kwargs}  # fmt: skip


def make_lm_env(env_id: str, tiny_lm_dir: Path, **kwargs) -> gym.Env:
    """``gym.make(env_id)`` on the tiny model, the tests' prompts and reward, P and T."""
    return gym.make(env_id, **_tiny_defaults(tiny_lm_dir, kwargs))


def make_bandit_vec(tiny_lm_dir: Path, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    """``gym.make_vec("LMBandit-v0", num_envs)`` with the defaults of :func:`make_lm_env`."""
    return gym.make_vec("LMBandit-v0", num_envs=num_envs, **_tiny_defaults(tiny_lm_dir, kwargs))


def make_bandit(tiny_lm_dir: Path, **kwargs) -> gym.Env:
    """``LMBandit-v0`` on the tiny model (see :func:`make_lm_env`)."""
    return make_lm_env("LMBandit-v0", tiny_lm_dir, **kwargs)


def make_token(tiny_lm_dir: Path, **kwargs) -> gym.Env:
    """``LMToken-v0`` on the tiny model (see :func:`make_lm_env`)."""
    return make_lm_env("LMToken-v0", tiny_lm_dir, **kwargs)
