"""The LM policy's heads: one per action space, chosen at construction, with per-token log-probs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from stable_baselines3.common.distributions import CategoricalDistribution

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, MaskableLMActorCriticPolicy, SB3VecEnv
from lmgym.agents.completion_distribution import CompletionDistribution
from lmgym.agents.heads import CompletionHead, NextTokenHead, make_head
from lmgym.models.generation import DecodingConfig
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import completion_logprobs
from lmgym.seeding import set_seed
from tests.conftest import PROMPTS, count_great

KWARGS = {"prompts": PROMPTS, "reward_fn": count_great, "max_prompt_tokens": 8}


def make_vec(tiny_lm_dir: Path, env_id: str, max_new_tokens: int) -> SB3VecEnv:
    return SB3VecEnv(
        gym.make_vec(env_id, num_envs=4, model=tiny_lm_dir, max_new_tokens=max_new_tokens, **KWARGS)
    )


def make_policy(env, cls=LMActorCriticPolicy, **kwargs):
    return cls(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)


CASES = {
    "completion": (spaces.MultiDiscrete([27] * 4), False, CompletionHead, CompletionDistribution),
    "next_token": (spaces.Discrete(27), False, NextTokenHead, CategoricalDistribution),
    "masked_next_token": (
        spaces.Discrete(27),
        True,
        NextTokenHead,
        MaskableCategoricalDistribution,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_make_head_chooses_by_action_space(case) -> None:
    action_space, maskable, head_class, dist_class = case
    decoding = None if maskable or isinstance(action_space, spaces.Discrete) else DecodingConfig(4)
    head = make_head(
        action_space, decoding=decoding, pad_token_id=0, eos_token_id=2, maskable=maskable
    )
    assert type(head) is head_class
    assert type(head.action_dist) is dist_class


@pytest.mark.parametrize(
    ("env_id", "cls", "head_class"),
    [
        ("LMBandit-v0", LMActorCriticPolicy, CompletionHead),
        ("LMToken-v0", LMActorCriticPolicy, NextTokenHead),
        ("LMToken-v0", MaskableLMActorCriticPolicy, NextTokenHead),
    ],
    ids=["bandit", "token", "token_maskable"],
)
def test_policy_exposes_its_head_distribution(tiny_lm_dir: Path, env_id, cls, head_class) -> None:
    env = gym.make(env_id, model=tiny_lm_dir, max_new_tokens=4, **KWARGS)
    policy = make_policy(env, cls, model=tiny_lm_dir)
    assert type(policy.head) is head_class
    assert policy.action_dist is policy.head.action_dist  # what SB3 and TRPO read


def test_completion_head_per_token_logprobs(tiny_lm_dir: Path) -> None:
    vec = make_vec(tiny_lm_dir, "LMBandit-v0", max_new_tokens=6)
    policy = make_policy(vec, model=tiny_lm_dir)
    vec.seed(0)
    obs = torch.as_tensor(vec.reset())
    set_seed(0)
    with torch.no_grad():
        rollout = policy.head.act(policy.lm, obs, False, None)
    actions = rollout.actions.clone()
    actions[0, 1] = 2  # an EOS mid-completion: the tokens after it do not count
    evaluation = policy.head.evaluate(policy.lm, obs, actions, None)
    assert evaluation.logprobs.shape == evaluation.mask.shape == (4, 6)
    torch.testing.assert_close(
        evaluation.mask, completion_mask_from_ids(actions, 2).to(evaluation.mask.dtype)
    )
    assert bool((evaluation.logprobs[0, 2:] == 0).all())
    fresh = completion_logprobs(policy.lm, obs, actions, pad_token_id=0, eos_token_id=2, full=False)
    torch.testing.assert_close(evaluation.logprobs.detach(), fresh, atol=1e-5, rtol=0)
    # Sampling and scoring agree token by token, not only in their sum.
    torch.testing.assert_close(
        evaluation.logprobs[1:].detach(), rollout.logprobs[1:], atol=1e-5, rtol=0
    )
    _, log_prob, _ = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(evaluation.log_prob, log_prob, atol=0, rtol=0)
    # Per-token log-probs carry gradients into the LM (a per-token PPO ratio needs them).
    (evaluation.logprobs * evaluation.mask).sum().backward()
    assert policy.lm.transformer.h[0].attn.c_attn.weight.grad is not None


@pytest.mark.parametrize("cls", [LMActorCriticPolicy, MaskableLMActorCriticPolicy])
def test_next_token_head_per_token_logprobs(tiny_lm_dir: Path, cls) -> None:
    vec = make_vec(tiny_lm_dir, "LMToken-v0", max_new_tokens=4)
    policy = make_policy(vec, cls, model=tiny_lm_dir)
    vec.seed(0)
    obs = torch.as_tensor(vec.reset())
    set_seed(0)
    with torch.no_grad():
        rollout = policy.head.act(policy.lm, obs, False, None)
    assert rollout.logprobs.shape == rollout.mask.shape == (4, 1)  # T = 1: one token
    evaluation = policy.head.evaluate(policy.lm, obs, rollout.actions, None)
    assert evaluation.logprobs.shape == evaluation.mask.shape == (4, 1)
    assert bool((evaluation.mask == 1).all())
    logp = policy.kl_logprobs(obs.numpy())  # (B, V), the rollout's own
    chosen = logp[torch.arange(4), rollout.actions.long()]
    torch.testing.assert_close(evaluation.logprobs[:, 0].detach(), chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(evaluation.logprobs.detach(), rollout.logprobs, atol=0, rtol=0)
    _, log_prob, _ = policy.evaluate_actions(obs, rollout.actions)
    torch.testing.assert_close(evaluation.log_prob, log_prob, atol=0, rtol=0)


def test_masks_apply_to_the_maskable_head_only(tiny_lm_dir: Path) -> None:
    vec = make_vec(tiny_lm_dir, "LMToken-v0", max_new_tokens=4)
    policy = make_policy(vec, MaskableLMActorCriticPolicy, model=tiny_lm_dir)
    vec.seed(0)
    obs = torch.as_tensor(vec.reset())
    masks = np.zeros((4, 27), dtype=bool)
    masks[:, [2, 12]] = True
    for _ in range(5):
        with torch.no_grad():
            actions, _, _ = policy(obs, action_masks=masks)
        assert set(actions.tolist()) <= {2, 12}
    logp = policy.kl_logprobs(obs.numpy())  # the LM's own, unmasked distribution
    assert bool(torch.isfinite(logp).all())
