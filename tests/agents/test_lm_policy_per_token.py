"""LMActorCriticPolicy.evaluate_actions_per_token: per-token log-probs from the update's forward."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy
from tests.conftest import PROMPTS, build_tiny_tokenizer, count_great

EOS, PAD = 2, 0


def bandit(tiny_lm_dir: Path) -> gym.Env:
    return gym.make(
        "LMBandit-v0",
        model=tiny_lm_dir,
        prompts=PROMPTS,
        reward_fn=count_great,
        max_prompt_tokens=8,
        max_new_tokens=6,
    )


def policy_for(env: gym.Env, tiny_lm_dir: Path, **kwargs) -> LMActorCriticPolicy:
    return LMActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-3, model=tiny_lm_dir, **kwargs
    )


def rollout(env: gym.Env, policy: LMActorCriticPolicy, n: int = 6):
    obs = torch.as_tensor(np.stack([env.reset(seed=i)[0] for i in range(n)]))
    with torch.no_grad():
        actions = policy(obs)[0]
    return obs, actions


def oracle_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log π(y_t | x, y_<t) of one unpadded sequence, with no lmgym code."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_summed_over_the_mask_it_is_evaluate_actions(tiny_lm_dir: Path) -> None:
    env = bandit(tiny_lm_dir)
    policy = policy_for(env, tiny_lm_dir)
    obs, actions = rollout(env, policy)
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    values_t, token_lp, mask, entropy_t = policy.evaluate_actions_per_token(obs, actions)
    assert token_lp.shape == mask.shape == actions.shape
    torch.testing.assert_close((token_lp * mask).sum(1), log_prob)
    torch.testing.assert_close(values_t, values)
    assert entropy is not None
    torch.testing.assert_close(entropy_t, entropy)
    assert torch.equal(policy.action_token_mask(actions), mask.long())
    # Gradients reach the LM through the per-token log-probs.
    token_lp.sum().backward()
    assert policy.lm.transformer.wte.weight.grad is not None  # type: ignore[union-attr]


def test_per_token_ratios_are_exp_of_the_log_prob_differences(tiny_lm_dir: Path) -> None:
    env = bandit(tiny_lm_dir)
    old, new = policy_for(env, tiny_lm_dir), policy_for(env, tiny_lm_dir)
    with torch.no_grad():  # move the new policy away from the old one
        for p in new.lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obs, actions = rollout(env, old)
    with torch.no_grad():
        _, old_lp, mask, _ = old.evaluate_actions_per_token(obs, actions)
        _, new_lp, _, _ = new.evaluate_actions_per_token(obs, actions)
    ratio = torch.exp(new_lp - old_lp)
    for row in range(len(obs)):
        prompt = [int(t) for t in obs[row] if t != PAD]
        n = int(mask[row].sum())
        completion = actions[row, :n].tolist()
        new_lp_row = oracle_logprobs(new.lm, prompt, completion)
        expected = torch.exp(new_lp_row - oracle_logprobs(old.lm, prompt, completion))
        torch.testing.assert_close(ratio[row, :n], expected, rtol=1e-4, atol=1e-5)
        assert torch.all(ratio[row, n:] == 1.0)  # nothing counts after the EOS
    assert not torch.allclose(ratio[mask.bool()], torch.ones(()))  # the ratios did move


def test_the_mask_counts_the_ending_eos_and_nothing_after_when_pad_is_eos(
    tiny_lm_dir: Path,
) -> None:
    tokenizer = build_tiny_tokenizer()
    obs_space = spaces.Box(0, len(tokenizer) - 1, shape=(8,), dtype=np.int64)
    act_space = spaces.MultiDiscrete([len(tokenizer)] * 6)
    policy = LMActorCriticPolicy(
        obs_space, act_space, lambda _: 1e-3, model=tiny_lm_dir, pad_token_id=EOS, eos_token_id=EOS
    )
    prompt = tokenizer.encode("the food was")
    obs = torch.tensor([prompt + [EOS] * (8 - len(prompt))])  # padded with the EOS id
    great, good = tokenizer.convert_tokens_to_ids(["great", "good"])
    actions = torch.tensor([[great, good, EOS, EOS, great, EOS]])  # words after the EOS ignored
    _, token_lp, mask, _ = policy.evaluate_actions_per_token(obs, actions)
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0]]
    oracle = oracle_logprobs(policy.lm, prompt, [great, good, EOS])
    torch.testing.assert_close(token_lp[0, :3], oracle, rtol=1e-4, atol=1e-5)
    assert torch.all(token_lp[0, 3:] == 0)


def test_next_token_actions_are_one_token(tiny_lm_dir: Path) -> None:
    env = gym.make("LMToken-v0", model=tiny_lm_dir, prompts=PROMPTS, reward_fn=count_great)
    policy = policy_for(env, tiny_lm_dir)
    obs = torch.as_tensor(np.stack([env.reset(seed=i)[0] for i in range(3)]))
    actions = torch.tensor([4, 5, 6])
    _, log_prob, _ = policy.evaluate_actions(obs, actions)
    _, token_lp, mask, _ = policy.evaluate_actions_per_token(obs, actions)
    assert token_lp.shape == mask.shape == (3, 1)
    torch.testing.assert_close(token_lp[:, 0], log_prob)
