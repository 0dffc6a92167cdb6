"""lmgym.rllib: the LM RL module's log-probs, and short RLlib PPO runs on 2 EnvRunners."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns

import lmgym  # noqa: F401  (registers the ids)
from lmgym.rllib import (
    CompletionLogits,
    LMRLModule,
    RLlibConfigError,
    check_lm_module,
    env_name,
    ppo_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, address="local", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_sampled_logp_equals_teacher_forced_logp() -> None:
    env = gym.make("LMBandit-v0")
    module = LMRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config={}
    )
    obs = np.stack([env.reset(seed=seed)[0] for seed in range(4)])
    batch = {Columns.OBS: torch.as_tensor(obs)}
    torch.manual_seed(0)
    with torch.no_grad():
        out = module.forward_exploration(batch)
    actions = out[Columns.ACTIONS]
    assert actions.shape == (4, env.action_space.shape[0])
    assert env.action_space.contains(actions[0].numpy())
    train = module.forward_train({**batch, Columns.ACTIONS: actions})
    dist = module.get_train_action_dist_cls().from_logits(train[Columns.ACTION_DIST_INPUTS])
    assert isinstance(dist, CompletionLogits)
    logp = dist.logp(actions)
    torch.testing.assert_close(logp.detach(), out[Columns.ACTION_LOGP], atol=1e-4, rtol=0)
    assert torch.isfinite(dist.entropy()).all()
    logp.sum().backward()  # gradients reach the LM
    assert module.lm.get_input_embeddings().weight.grad is not None
    values = module.compute_values(batch, train[Columns.EMBEDDINGS])
    assert values.shape == (4,)
    # The value feature of the scoring forward is the prompt's own last hidden state.
    with torch.no_grad():
        torch.nn.init.normal_(module.value_head.weight)
        from_scoring = module.compute_values(batch, train[Columns.EMBEDDINGS].detach())
        torch.testing.assert_close(from_scoring, module.compute_values(batch), atol=1e-5, rtol=0)


def test_token_env_gives_next_token_logits() -> None:
    env = gym.make("LMToken-v0")
    module = LMRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config={}
    )
    obs = torch.as_tensor(env.reset(seed=0)[0])[None]
    out = module.forward_train({Columns.OBS: obs})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (1, env.action_space.n)
    assert module.compute_values({Columns.OBS: obs}).shape == (1,)


def test_lm_env_without_lm_module_is_refused() -> None:
    config = PPOConfig().environment(env_name("LMBandit-v0"))
    with pytest.raises(RLlibConfigError, match="LMRLModule"):
        check_lm_module(config)


def test_a_model_object_in_env_config_is_refused_and_a_path_is_taken(tmp_path) -> None:
    with pytest.raises(RLlibConfigError, match=r"env_config\['model'\] is a object object.*"
                       r"save_pretrained"):  # fmt: skip
        ppo_config("LMBandit-v0", env_config={"model": object()})
    config = ppo_config("LMBandit-v0", env_config={"model": tmp_path})
    assert config.env_config["model"] == str(tmp_path)
    assert config.rl_module_spec.model_config == {"model": str(tmp_path)}


def _train_once(config: PPOConfig) -> dict:
    algo = config.build_algo()
    try:
        return algo.train()
    finally:
        algo.stop()


def test_one_ppo_iteration_on_the_bandit_with_two_env_runners(local_ray: None) -> None:
    result = _train_once(ppo_config("LMBandit-v0", num_env_runners=2))
    assert result["env_runners"]["num_env_steps_sampled"] > 0
    losses = result["learners"]["default_policy"]
    for key in ("policy_loss", "vf_loss", "total_loss", "entropy"):
        assert math.isfinite(losses[key]), (key, losses[key])


def test_one_ppo_iteration_on_catgrid(local_ray: None) -> None:
    result = _train_once(ppo_config("CatGrid-v0", num_env_runners=2, train_batch_size=64))
    assert result["env_runners"]["num_env_steps_sampled"] > 0
    assert math.isfinite(result["learners"]["default_policy"]["total_loss"])
