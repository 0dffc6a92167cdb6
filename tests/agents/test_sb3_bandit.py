"""Unmodified SB3 / sb3-contrib agents train on LMBandit-v0 for a tiny budget."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib import TRPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import lmgym  # noqa: F401
from lmgym.agents import SB3VecEnv, attach_sb3
from tests.conftest import PROMPTS, count_great

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 6,
}

ALGOS = {
    "ppo": lambda env: PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0),
    "a2c": lambda env: A2C("MlpPolicy", env, n_steps=4, seed=0),
    "trpo": lambda env: TRPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0),
}


@pytest.mark.parametrize("algo", ALGOS.values(), ids=ALGOS.keys())
def test_single_env_trains(tiny_lm_dir: Path, algo) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)
    model = algo(env)
    attach_sb3(model)
    model.learn(64)
    assert model.num_timesteps >= 64


@pytest.mark.parametrize("algo", ALGOS.values(), ids=ALGOS.keys())
def test_make_vec_through_adapter_trains(tiny_lm_dir: Path, algo) -> None:
    vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=4, model=tiny_lm_dir, **KWARGS))
    model = algo(vec)
    attach_sb3(model)
    model.learn(64)
    assert model.num_timesteps >= 64


def test_attach_sb3_through_dummy_vec_env(tiny_lm_dir: Path) -> None:
    vec = DummyVecEnv([lambda: gym.make("LMBandit-v0", model=tiny_lm_dir, **KWARGS)] * 2)
    model = PPO("MlpPolicy", vec, n_steps=8, batch_size=16, seed=0)
    attach_sb3(model)
    vec.reset()
    _, _, _, infos = vec.step(np.stack([vec.action_space.sample()] * 2))
    assert all(info["kl_form"] == "policy" for info in infos)


def test_same_seed_same_training(tiny_lm_dir: Path) -> None:
    def train() -> np.ndarray:
        vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=4, model=tiny_lm_dir, **KWARGS))
        model = PPO("MlpPolicy", vec, n_steps=8, batch_size=16, n_epochs=1, seed=3)
        attach_sb3(model)
        model.learn(64)
        return model.policy.action_net.weight.detach().clone().numpy()

    np.testing.assert_array_equal(train(), train())


def test_sb3_adapter_reports_terminal_observation(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=2, model=tiny_lm_dir, **KWARGS))
    vec.seed(0)
    obs = vec.reset()
    _, rewards, dones, infos = vec.step(np.stack([vec.action_space.sample()] * 2))
    assert dones.all()
    np.testing.assert_array_equal(infos[0]["terminal_observation"], obs[0])
    assert infos[0]["TimeLimit.truncated"] is False
    assert rewards[1] == pytest.approx(
        infos[1]["reward_model"] - infos[1]["kl_coef"] * infos[1]["kl"], abs=1e-5
    )
