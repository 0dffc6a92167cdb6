"""GRPO: group-relative advantages (hand-computed), the env check, and a short learn()."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
from lmgym.algorithms import GRPO, grpo_advantages
from tests.algorithms.conftest import grouped_vec, learn_and_log, lm_state
from tests.conftest import PROMPTS


def test_grpo_advantages_by_hand() -> None:
    rewards = np.array([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0]])
    # Group 0: mean 4, sample std sqrt((9 + 1 + 1 + 9) / 3) = sqrt(20 / 3).
    std = np.sqrt(20 / 3)
    expected = np.array([[-3, -1, 1, 3], [0, 0, 0, 0]]) / np.array([[std + 1e-4], [1e-4]])
    np.testing.assert_allclose(grpo_advantages(rewards), expected)
    # Dr. GRPO: centred, not scaled.
    np.testing.assert_allclose(
        grpo_advantages(rewards, scale_rewards=False), [[-3, -1, 1, 3], [0, 0, 0, 0]]
    )
    np.testing.assert_allclose(grpo_advantages(rewards, eps=0.5)[0], [-3, -1, 1, 3] / (std + 0.5))


def test_rollout_advantages_follow_the_env_groups(tiny_lm_dir: Path) -> None:
    model = GRPO(
        LMActorCriticPolicy,
        grouped_vec(tiny_lm_dir, 4, 2),
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    rewards = np.array([[1.0, 3.0, 0.0, 0.0], [2.0, 2.0, 5.0, 1.0]])  # (n_steps, num_envs)
    np.testing.assert_allclose(
        model._advantages(rewards),
        grpo_advantages(np.array([[[1, 3], [0, 0]], [[2, 2], [5, 1]]], dtype=float)).reshape(2, 4),
    )


def test_learn_changes_the_lm_and_logs_losses(tiny_lm_dir: Path) -> None:
    vec = grouped_vec(tiny_lm_dir)
    model = GRPO(
        LMActorCriticPolicy,
        vec,
        n_steps=2,
        batch_size=8,
        seed=0,
        learning_rate=1e-3,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    before = lm_state(model)
    value_before = model.policy.value_net.weight.detach().clone()
    logs = learn_and_log(model, 32)
    assert model.num_timesteps == 32
    assert any(not torch.equal(before[k], v) for k, v in model.policy.lm.state_dict().items())
    assert torch.equal(model.policy.value_net.weight, value_before)  # no value loss
    for key in (
        "train/policy_gradient_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/loss",
        "train/group_reward_std",
        "train/flat_groups",
    ):
        assert np.isfinite(logs[key]), key
    assert "train/value_loss" not in logs
    assert logs["train/n_updates"] == 2 * 2  # two rollouts of two epochs


def test_same_seed_same_training(tiny_lm_dir: Path) -> None:
    states = []
    for _ in range(2):
        model = GRPO(
            LMActorCriticPolicy,
            grouped_vec(tiny_lm_dir),
            batch_size=8,
            seed=3,
            learning_rate=1e-3,
            policy_kwargs=dict(model=tiny_lm_dir),
        )
        learn_and_log(model, 16)
        states.append(lm_state(model))
    for k, v in states[0].items():
        torch.testing.assert_close(v, states[1][k], msg=k)


def test_refuses_an_ungrouped_env(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"GRPO needs group_size >= 2.*group_size=4"):
        GRPO(
            LMActorCriticPolicy,
            grouped_vec(tiny_lm_dir, 4, 1),
            policy_kwargs=dict(model=tiny_lm_dir),
        )
    single = gym.make(
        "LMBandit-v0", model=tiny_lm_dir, prompts=PROMPTS, max_prompt_tokens=8, max_new_tokens=6
    )
    with pytest.raises(ValueError, match=r"GRPO needs a grouped env.*SB3VecEnv"):
        GRPO(LMActorCriticPolicy, single, policy_kwargs=dict(model=tiny_lm_dir))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(scale_rewards="no"), TypeError, r"scale_rewards='no' is not a bool"),
        (dict(eps=-1.0), ValueError, r"eps=-1.0 must be >= 0"),
        (dict(batch_size=0), ValueError, r"batch_size=0 must be an int >= 1"),
        (dict(n_epochs=1.5), ValueError, r"n_epochs=1.5 must be an int >= 1"),
    ],
    ids=["scale_rewards", "eps", "batch_size", "n_epochs"],
)
def test_bad_arguments(tiny_lm_dir: Path, kwargs, error, match) -> None:
    vec: SB3VecEnv = grouped_vec(tiny_lm_dir)
    with pytest.raises(error, match=match):
        GRPO(LMActorCriticPolicy, vec, policy_kwargs=dict(model=tiny_lm_dir), **kwargs)


def test_save_load_takes_the_new_envs_group_size(tiny_lm_dir: Path, tmp_path: Path) -> None:
    model = GRPO(
        LMActorCriticPolicy,
        grouped_vec(tiny_lm_dir),
        batch_size=8,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    learn_and_log(model, 8)
    model.save(tmp_path / "grpo.zip")
    loaded = GRPO.load(tmp_path / "grpo.zip", env=grouped_vec(tiny_lm_dir, 8, 2))
    assert loaded.group_size == 2 and loaded.scale_rewards
    for k, v in model.policy.lm.state_dict().items():
        torch.testing.assert_close(loaded.policy.lm.state_dict()[k], v, msg=k)
    with pytest.raises(ValueError, match=r"GRPO needs group_size >= 2"):
        loaded.set_env(grouped_vec(tiny_lm_dir, 8, 1))
