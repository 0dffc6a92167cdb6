"""Shared fixtures of the offline-RL tests: the tiny LM's env and a small logged dataset."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

import lmgym  # noqa: F401 - registers the envs
from lmgym.offline.dataset import EpisodeDataset
from lmgym.offline.record import record_episodes
from tests.conftest import PROMPTS, count_great


def tiny_env_kwargs(model_dir: Path) -> dict:
    """The tiny LM's bandit task: 8 new tokens, paid for every "great", no KL penalty."""
    return {
        "model": model_dir,
        "prompts": PROMPTS,
        "reward_fn": count_great,
        "max_new_tokens": 8,
        "kl_coef": 0.0,
    }


@pytest.fixture(scope="session")
def tiny_episodes(tiny_lm_dir: Path) -> EpisodeDataset:
    """64 recorded episodes of the tiny LM on its bandit task."""
    env = gym.make_vec("LMBandit-v0", num_envs=32, **tiny_env_kwargs(tiny_lm_dir))
    return record_episodes(env, 64, seed=0)
