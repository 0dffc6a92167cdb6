"""Group sampling in the ``LMBandit-v0`` vector env (``group_size``), for GRPO and RLOO."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import lmgym  # noqa: F401
from tests.envs.conftest import make_bandit_vec as make_vec


def test_groups_share_a_prompt_through_autoresets(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 6, group_size=3)
    obs, info = envs.reset(seed=5)
    np.testing.assert_array_equal(info["group"], [0, 0, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(4):
        groups = obs.reshape(2, 3, -1)
        assert (groups == groups[:, :1]).all()
        prompts = list(info["prompt"])
        assert prompts[:3] == [prompts[0]] * 3 and prompts[3:] == [prompts[3]] * 3
        seen.update(prompts)
        actions = rng.integers(0, envs.models.vocab_size, size=(6, 6))
        obs, rewards, terminated, _, info = envs.step(actions)
        assert terminated.all() and rewards.shape == (6,)
        np.testing.assert_array_equal(info["group"], [0, 0, 0, 1, 1, 1])
        final = info["final_info"]
        np.testing.assert_allclose(rewards, final["reward_model"] - final["kl_coef"] * final["kl"])
    assert len(seen) > 2  # groups get fresh prompts after each step


def test_group_prompts_are_the_leaders_draws(tiny_lm_dir: Path) -> None:
    plain = make_vec(tiny_lm_dir, 4)
    grouped = make_vec(tiny_lm_dir, 4, group_size=2)
    obs, _ = plain.reset(seed=3)
    grouped_obs, _ = grouped.reset(seed=3)
    np.testing.assert_array_equal(grouped_obs, obs[[0, 0, 2, 2]])
    again, _ = make_vec(tiny_lm_dir, 4, group_size=2).reset(seed=3)
    np.testing.assert_array_equal(again, grouped_obs)


def test_group_size_one_is_unchanged(tiny_lm_dir: Path) -> None:
    plain, ones = make_vec(tiny_lm_dir, 3), make_vec(tiny_lm_dir, 3, group_size=1)
    a, info_a = plain.reset(seed=1)
    b, info_b = ones.reset(seed=1)
    np.testing.assert_array_equal(a, b)
    assert info_a.keys() == info_b.keys() and "group" not in info_b
    actions = np.random.default_rng(1).integers(0, plain.models.vocab_size, size=(3, 6))
    step_a, step_b = plain.step(actions), ones.step(actions)
    np.testing.assert_array_equal(step_a[0], step_b[0])
    np.testing.assert_array_equal(step_a[1], step_b[1])
    assert step_a[4].keys() == step_b[4].keys()


def test_forced_prompts_per_group(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 4, group_size=2)
    _, info = envs.reset(seed=0, options={"prompt": "the food was"})
    assert list(info["prompt"]) == ["the food was"] * 4
    texts = ["the food was", "the food was", "the soup is", "the soup is"]
    _, info = envs.reset(options={"prompt": texts})
    assert list(info["prompt"]) == texts
    obs = envs._obs.copy()
    with pytest.raises(ValueError, match=r"group_size=2.*one prompt per group"):
        envs.reset(
            options={"prompt": ["the food was", "the soup is", "the soup is", "the soup is"]}
        )
    np.testing.assert_array_equal(envs._obs, obs)  # a refused reset changes nothing


@pytest.mark.parametrize(
    ("num_envs", "group_size", "error", "match"),
    [
        (6, 4, ValueError, r"group_size=4 does not divide num_envs=6.*num_envs=4 or 8"),
        (4, 0, ValueError, r"group_size=0 must be an int >= 1"),
        (4, 2.0, TypeError, r"group_size=2.0 .*is not an int"),
        (4, True, TypeError, r"group_size=True .*is not an int"),
    ],
    ids=["not-dividing", "zero", "float", "bool"],
)
def test_bad_group_size_raises_before_loading(num_envs, group_size, error, match) -> None:
    # A model path that does not exist: the check must come first.
    with pytest.raises(error, match=match):
        gym.make_vec(
            "LMBandit-v0", num_envs=num_envs, group_size=group_size, model="/nonexistent/model"
        )
