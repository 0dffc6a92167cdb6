"""Unmodified SB3 / sb3-contrib agents train on LMToken-v0 for a tiny budget."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO

import lmgym  # noqa: F401
from lmgym.agents import SB3VecEnv, attach_sb3
from lmgym.agents.attach import sb3_token_logprobs
from tests.conftest import PROMPTS, count_great

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 4,
    "kl_estimator": "k3",
}

ALGOS = {
    "ppo": lambda env: PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0),
    "a2c": lambda env: A2C("MlpPolicy", env, n_steps=4, seed=0),
    "maskable_ppo": lambda env: MaskablePPO(
        "MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0
    ),
}


@pytest.mark.parametrize("algo", ALGOS.values(), ids=ALGOS.keys())
def test_single_env_trains(tiny_lm_dir: Path, algo) -> None:
    env = gym.make("LMToken-v0", model=tiny_lm_dir, **KWARGS)
    model = algo(env)
    attach_sb3(model)
    model.learn(64)
    assert model.num_timesteps >= 64


@pytest.mark.parametrize("algo", ALGOS.values(), ids=ALGOS.keys())
def test_make_vec_through_adapter_trains(tiny_lm_dir: Path, algo) -> None:
    vec = SB3VecEnv(gym.make_vec("LMToken-v0", num_envs=4, model=tiny_lm_dir, **KWARGS))
    model = algo(vec)
    attach_sb3(model)
    model.learn(64)
    assert model.num_timesteps >= 64


def test_maskable_ppo_never_emits_masked_tokens(tiny_lm_dir: Path) -> None:
    allowed = np.zeros(27, dtype=bool)
    allowed[[2, 12, 13]] = True  # eos, "great", "good"
    vec = SB3VecEnv(
        gym.make_vec("LMToken-v0", num_envs=4, model=tiny_lm_dir, action_mask=allowed, **KWARGS)
    )
    model = MaskablePPO("MlpPolicy", vec, n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.learn(64)
    actions = model.rollout_buffer.actions.reshape(-1).astype(int)
    assert set(actions.tolist()) <= {2, 12, 13}


def test_attached_sb3_policy_gives_policy_kl(tiny_lm_dir: Path) -> None:
    env = gym.make("LMToken-v0", model=tiny_lm_dir, **KWARGS)
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0)
    fn = attach_sb3(model)
    obs, _ = env.reset(seed=0)
    *_, info = env.step(5)
    assert info["kl_form"] == "policy"
    logp = fn(obs[None, :])
    assert logp.shape == (1, 27)
    assert torch.logsumexp(logp, dim=-1).item() == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(logp, sb3_token_logprobs(model)(obs[None, :]))


def test_same_seed_same_training(tiny_lm_dir: Path) -> None:
    def train() -> np.ndarray:
        vec = SB3VecEnv(gym.make_vec("LMToken-v0", num_envs=4, model=tiny_lm_dir, **KWARGS))
        model = PPO("MlpPolicy", vec, n_steps=8, batch_size=16, n_epochs=1, seed=3)
        attach_sb3(model)
        model.learn(64)
        return model.policy.action_net.weight.detach().clone().numpy()

    np.testing.assert_array_equal(train(), train())
