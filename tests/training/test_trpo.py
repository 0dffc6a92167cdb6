"""BatchedTRPO computes exactly what sb3-contrib's TRPO computes, in one autograd call."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch
from sb3_contrib import TRPO

import lmgym  # noqa: F401
from lmgym.agents import LMActorCriticPolicy
from lmgym.training.trpo import BatchedTRPO


def objectives(model, env):
    obs = torch.as_tensor(env.observation_space.sample()[None].repeat(3, 0))
    if isinstance(model.policy, LMActorCriticPolicy):
        obs = torch.full((3, 8), 5)
    with torch.no_grad():
        actions, _, _ = model.policy(obs)
    distribution = model.policy.get_distribution(obs)
    log_prob = distribution.log_prob(actions)
    # Any two differentiable scalars of the actor exercise the gradient code.
    return distribution.entropy().sum() + (log_prob**2).sum(), log_prob.mean()


def compare(model, env) -> None:
    kl_like, objective = objectives(model, env)
    params, obj_grad, kl_grad, shapes = TRPO._compute_actor_grad(model, kl_like, objective)
    params2, obj_grad2, kl_grad2, shapes2 = model._compute_actor_grad(kl_like, objective)
    assert [id(p) for p in params] == [id(p) for p in params2]
    assert [tuple(s) for s in shapes] == shapes2
    torch.testing.assert_close(obj_grad2, obj_grad)
    torch.testing.assert_close(kl_grad2, kl_grad)
    vector = torch.randn_like(kl_grad)
    expected = model.hessian_vector_product(params, kl_grad, vector)
    actual = model.hessian_vector_product(params2, kl_grad2, vector)
    # The same sums in another order: float32 rounding only (measured ~2e-7 of the norm).
    assert float((actual - expected).norm() / expected.norm()) < 1e-5


def test_same_gradients_as_trpo_on_mlp() -> None:
    env = gym.make("CatGrid-v0")
    compare(BatchedTRPO("MlpPolicy", env, seed=0), env)


def test_same_gradients_as_trpo_on_lm_policy(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, max_prompt_tokens=8, max_new_tokens=4)
    kwargs = dict(model=tiny_lm_dir, attn_implementation="eager", value_trunk="detached")
    compare(BatchedTRPO(LMActorCriticPolicy, env, seed=0, policy_kwargs=kwargs), env)


def test_frozen_layers_are_skipped(tiny_lm_dir: Path) -> None:
    env = gym.make("LMBandit-v0", model=tiny_lm_dir, max_prompt_tokens=8, max_new_tokens=4)
    kwargs = dict(model=tiny_lm_dir, attn_implementation="eager", freeze_layers=1)
    model = BatchedTRPO(LMActorCriticPolicy, env, seed=0, policy_kwargs=kwargs)
    kl_like, objective = objectives(model, env)
    params, *_ = model._compute_actor_grad(kl_like, objective)
    assert params and all(p.requires_grad for p in params)
    with pytest.raises(RuntimeError):  # what sb3-contrib's own version does with frozen layers
        TRPO._compute_actor_grad(model, kl_like, objective)
