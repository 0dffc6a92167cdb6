"""RewardPartsCallback: one record per finished episode, with the episode's summed KL."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents.callbacks import RewardPartsCallback
from tests.conftest import PROMPTS, count_great


class EpisodeKLSums(BaseCallback):
    """Sums ``info["kl"]`` over each env's steps: the KL an episode paid, and its last k_t."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: list[float] = []
        self.last: list[float] = []
        self._running: np.ndarray | None = None

    def _on_step(self) -> bool:
        infos, dones = self.locals["infos"], self.locals["dones"]
        if self._running is None:
            self._running = np.zeros(len(infos))
        for i, info in enumerate(infos):
            self._running[i] += info["kl"]
            if dones[i]:
                self.sums.append(float(self._running[i]))
                self.last.append(float(info["kl"]))
                self._running[i] = 0.0
        return True


def test_token_env_records_the_kl_summed_over_the_episode(tiny_lm_dir: Path) -> None:
    env = gym.make("LMToken-v0", model=tiny_lm_dir, prompts=PROMPTS, reward_fn=count_great,
                   max_prompt_tokens=8, max_new_tokens=4, kl_coef=0.1)  # fmt: skip
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    sums, parts = EpisodeKLSums(), RewardPartsCallback()
    model.learn(64, callback=[sums, parts])
    assert len(parts.history.kl) == len(sums.sums) >= 10
    assert parts.history.kl == pytest.approx(sums.sums, rel=1e-6)
    # Multi-token episodes: the sum is not the last token's k_t the callback used to log.
    assert not np.allclose(parts.history.kl, sums.last)
    assert parts.history.reward_model[-1] == pytest.approx(
        parts.history.reward[-1] + 0.1 * parts.history.kl[-1], abs=1e-5
    )


def test_bandit_env_records_the_completions_kl(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, prompts=PROMPTS, reward_fn=count_great,
                   max_prompt_tokens=8, max_new_tokens=4, kl_coef=0.1)  # fmt: skip
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    sums, parts = EpisodeKLSums(), RewardPartsCallback()
    model.learn(16, callback=[sums, parts])
    assert len(parts.history.kl) == 16
    assert parts.history.kl == pytest.approx(sums.sums, rel=1e-6)
