"""Best-of-n: the KL bound, the subset-mean reward, the KL estimate, the sampling."""

from __future__ import annotations

import itertools
import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmgym  # noqa: F401
from lmgym.evaluation import evaluate_actions_on_prompts, lm_sampler
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.generation import DecodingConfig
from lmgym.training.best_of_n import (
    best_of_n,
    expected_best,
    kl_bound,
    kl_estimate,
    sample_rewards,
)


def test_kl_bound_on_hand_values() -> None:
    assert kl_bound(1) == 0.0
    assert kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bound(64) == pytest.approx(math.log(64) - 63 / 64)
    with pytest.raises(ValueError, match=re.escape("n=0 must be an int >= 1")):
        kl_bound(0)


def test_expected_best_is_the_mean_best_over_every_subset() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 6))
    for n in (1, 2, 3, 6):
        brute = [np.mean([max(c) for c in itertools.combinations(row, n)]) for row in rewards]
        assert expected_best(rewards, n) == pytest.approx(brute)
    with pytest.raises(ValueError, match=re.escape("n=7 is more than the 6 samples")):
        expected_best(rewards, 7)


def test_kl_estimate_is_exact_on_reward_levels_and_below_the_bound() -> None:
    # Levels with masses q = (1/4, 1/2, 1/4): best of 2 puts F_j^2 - F_{j-1}^2 on each.
    rewards = np.array([[0.0, 1.0, 1.0, 2.0]])
    q = np.array([0.25, 0.5, 0.25])
    p = np.array([0.25**2, 0.75**2 - 0.25**2, 1 - 0.75**2])
    assert kl_estimate(rewards, 2) == pytest.approx(float(p @ np.log(p / q)))
    # Distinct rewards of many samples: the estimate approaches the bound from below.
    distinct = np.arange(4096, dtype=float)[None, :]
    for n in (2, 8, 64):
        assert kl_estimate(distinct, n) <= kl_bound(n) + 1e-9
        assert kl_estimate(distinct, n) == pytest.approx(kl_bound(n), abs=0.02)


def test_best_of_one_equals_the_plain_policy_on_the_same_seed() -> None:
    env = gym.make("LMBandit-v0", prompts=corpus_prompts("test")).unwrapped
    prompts = corpus_prompts("test")[:6]
    rewards = sample_rewards(env, prompts, 4, seed=3)
    assert rewards.shape == (6, 4)
    torch.manual_seed(3)
    act = lm_sampler(env, DecodingConfig(max_new_tokens=env.max_new_tokens))
    plain = evaluate_actions_on_prompts(env, prompts, act, samples_per_prompt=4)
    curve = best_of_n(rewards, [1, 2, 4])
    assert curve["reward"][0] == pytest.approx(plain.reward_model)
    assert curve["kl_bound"] == pytest.approx([0.0, kl_bound(2), kl_bound(4)])
    assert curve["reward"][0] <= curve["reward"][1] <= curve["reward"][2]
    assert curve["kl_estimate"][0] == 0.0 and curve["kl_estimate"][2] <= kl_bound(4)
    # Batching does not change the samples: one generate call per batch, the same draws.
    again = sample_rewards(env, prompts, 4, seed=3, batch_size=24)
    assert np.array_equal(again, rewards)
    with pytest.raises(ValueError, match=re.escape("samples=0 must be an int >= 1")):
        sample_rewards(env, prompts, 0, seed=3)
