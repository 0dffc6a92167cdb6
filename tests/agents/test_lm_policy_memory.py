"""The LM policy's memory options: gradient checkpointing and the weights' dtype."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
from lmgym.algorithms import LMPPO
from tests.conftest import PROMPTS, count_great


def bandit(tiny_lm_dir: Path) -> gym.Env:
    return gym.make("LMBandit-v0", model=tiny_lm_dir, prompts=PROMPTS, reward_fn=count_great,
                    max_prompt_tokens=8, max_new_tokens=6)  # fmt: skip


def policy_for(env: gym.Env, tiny_lm_dir: Path, **kwargs) -> LMActorCriticPolicy:
    return LMActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-3, model=tiny_lm_dir, **kwargs
    )


def batch(env: gym.Env, policy: LMActorCriticPolicy):
    obs = torch.as_tensor(np.stack([env.reset(seed=i)[0] for i in range(6)]))
    torch.manual_seed(0)
    with torch.no_grad():
        actions = policy(obs)[0]
    return obs, actions


def gradients(policy: LMActorCriticPolicy, obs, actions) -> dict[str, torch.Tensor]:
    policy.set_training_mode(True)
    policy.optimizer.zero_grad()
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    assert entropy is not None
    (-log_prob.mean() + values.pow(2).mean() - 0.1 * entropy.mean()).backward()
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def checkpointing_on(lm) -> bool:
    """Whether transformers checkpoints ``lm`` (the property's name changed after 5.0)."""
    if hasattr(type(lm), "is_activation_checkpointing"):
        return bool(lm.is_activation_checkpointing)
    return bool(lm.is_gradient_checkpointing)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm_dir: Path) -> None:
    env = bandit(tiny_lm_dir)
    plain = policy_for(env, tiny_lm_dir)
    checkpointed = policy_for(env, tiny_lm_dir, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())  # the value heads start alike too
    assert checkpointing_on(checkpointed.lm) and not checkpointing_on(plain.lm)
    plain.set_training_mode(False)
    checkpointed.set_training_mode(False)
    obs, actions = batch(env, plain)
    # Rollouts (eval mode) run as without checkpointing: the same completions, same seed.
    assert torch.equal(batch(env, checkpointed)[1], actions)
    expected = gradients(plain, obs, actions)
    got = gradients(checkpointed, obs, actions)
    assert expected.keys() == got.keys() and len(expected) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_bfloat16_weights_float32_log_probs_and_losses(tiny_lm_dir: Path) -> None:
    env = bandit(tiny_lm_dir)
    policy = policy_for(env, tiny_lm_dir, dtype="bfloat16")
    assert {p.dtype for p in policy.lm.parameters()} == {torch.bfloat16}
    assert policy.value_net.weight.dtype == torch.float32
    obs, actions = batch(env, policy)
    values, token_lp, mask, entropy = policy.evaluate_actions_per_token(obs, actions)
    assert values.dtype == token_lp.dtype == entropy.dtype == torch.float32
    # The bf16 policy scores completions close to the float32 one.
    _, reference, _, _ = policy_for(env, tiny_lm_dir).evaluate_actions_per_token(obs, actions)
    torch.testing.assert_close(token_lp, reference, atol=0.1, rtol=0.05)


def test_a_bfloat16_policy_trains_with_per_token_ppo(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(
        gym.make_vec("LMBandit-v0", num_envs=8, model=tiny_lm_dir, prompts=PROMPTS,
                     reward_fn=count_great, max_prompt_tokens=8, max_new_tokens=6)
    )  # fmt: skip
    model = LMPPO(LMActorCriticPolicy, vec, ratio="token", n_steps=1, batch_size=8,
                  learning_rate=1e-2, seed=0,
                  policy_kwargs=dict(model=tiny_lm_dir, dtype="bfloat16",
                                     gradient_checkpointing=True))  # fmt: skip
    before = model.policy.lm.transformer.wte.weight.detach().clone()  # type: ignore[union-attr]
    model.policy.attach_to(vec)
    model.learn(8)
    after = model.policy.lm.transformer.wte.weight  # type: ignore[union-attr]
    assert after.dtype == torch.bfloat16 and not torch.equal(before, after)
    assert np.isfinite(model.logger.name_to_value["train/loss"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(dtype="float8"), ValueError, r"dtype='float8' is not a dtype lmgym runs models in"),
        (dict(dtype="float16"), ValueError, r"dtype='float16' cannot run on device 'cpu'"),
        (dict(gradient_checkpointing="yes"), TypeError,
         r"gradient_checkpointing='yes' is not a bool"),
    ],
    ids=["unknown_dtype", "float16_cpu", "checkpointing_type"],
)  # fmt: skip
def test_bad_memory_options(tiny_lm_dir: Path, kwargs, error, match) -> None:
    if "float16" in str(kwargs) and torch.cuda.is_available():
        kwargs = dict(dtype="float8")  # float16 runs on a GPU: check the other refusal
        match = r"dtype='float8' is not a dtype"
    with pytest.raises(error, match=match):
        policy_for(bandit(tiny_lm_dir), tiny_lm_dir, **kwargs)
