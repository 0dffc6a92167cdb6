"""Grouped bandit envs and LM policies on the tiny test model, for GRPO and RLOO."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.logger import configure

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import SB3VecEnv
from tests.conftest import PROMPTS


def count_words(prompts, completions):
    """A reward that varies between completions of one prompt (the tiny LM rarely says "great")."""
    return [len(c.split()) for c in completions]


def grouped_vec(tiny_lm_dir: Path, num_envs: int = 8, group_size: int = 4) -> SB3VecEnv:
    return SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=num_envs,
            group_size=group_size,
            model=tiny_lm_dir,
            prompts=PROMPTS,
            reward_fn=count_words,
            max_prompt_tokens=8,
            max_new_tokens=6,
        )
    )


def lm_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.lm.state_dict().items()}


def learn_and_log(model, steps: int) -> dict[str, float]:
    """``model.learn(steps)``; the logger's values of the last update."""
    model.set_logger(configure(None, []))
    model.policy.attach_to(model.get_env())
    model.learn(steps)
    return dict(model.logger.name_to_value)
