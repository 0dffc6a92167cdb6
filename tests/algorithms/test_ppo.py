"""LMPPO: SB3's PPO weight for weight, per-token clipping by hand, micro-batches, bad input."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
from lmgym.algorithms import LMPPO
from lmgym.algorithms.losses import row_weights
from lmgym.algorithms.objective import PolicyObjective
from lmgym.training.algorithms import algorithm_class, hyperparameters
from tests.algorithms.conftest import count_words, learn_and_log
from tests.conftest import PROMPTS


def bandit_vec(tiny_lm_dir: Path, num_envs: int = 8) -> SB3VecEnv:
    return SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=num_envs,
            model=tiny_lm_dir,
            prompts=PROMPTS,
            reward_fn=count_words,
            max_prompt_tokens=8,
            max_new_tokens=6,
        )
    )


def trained_state(algo, tiny_lm_dir: Path, **kwargs) -> dict[str, torch.Tensor]:
    """Every parameter of the policy after one rollout of 8 completions and its update."""
    model = algo(
        LMActorCriticPolicy,
        bandit_vec(tiny_lm_dir),
        n_steps=1,
        batch_size=4,
        n_epochs=2,
        learning_rate=1e-3,
        gamma=1.0,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
        **kwargs,
    )
    learn_and_log(model, 8)
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_sequence_ratio_is_sb3_ppo(tiny_lm_dir: Path) -> None:
    sb3 = trained_state(PPO, tiny_lm_dir)
    ours = trained_state(LMPPO, tiny_lm_dir, ratio="sequence")
    initial = LMActorCriticPolicy(
        bandit_vec(tiny_lm_dir).observation_space,
        bandit_vec(tiny_lm_dir).action_space,
        lambda _: 1e-3,
        model=tiny_lm_dir,
    ).state_dict()
    assert not torch.equal(sb3["lm.transformer.h.0.attn.c_attn.weight"],
                           initial["lm.transformer.h.0.attn.c_attn.weight"])  # fmt: skip
    for name, value in sb3.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("minibatch_size", [1, 2], ids=["micro1", "micro2"])
@pytest.mark.parametrize("ratio", ["sequence", "token"])
def test_micro_batches_give_the_same_update(tiny_lm_dir: Path, ratio, minibatch_size) -> None:
    whole = trained_state(LMPPO, tiny_lm_dir, ratio=ratio)
    micro = trained_state(LMPPO, tiny_lm_dir, ratio=ratio, minibatch_size=minibatch_size)
    for name, value in whole.items():
        torch.testing.assert_close(micro[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_token_ratio_clips_each_token_by_hand(tiny_lm_dir: Path) -> None:
    # Seeded here: the perturbation and the sampled replies must not depend on which tests ran
    # before in this worker (unseeded, all 20 ratios were once clipped).
    torch.manual_seed(0)
    vec = bandit_vec(tiny_lm_dir, 4)
    vec.seed(0)  # the prompts, too
    old = LMActorCriticPolicy(vec.observation_space, vec.action_space, lambda _: 1e-3,
                              model=tiny_lm_dir)  # fmt: skip
    new = LMActorCriticPolicy(vec.observation_space, vec.action_space, lambda _: 1e-3,
                              model=tiny_lm_dir)  # fmt: skip
    with torch.no_grad():
        for p in new.lm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    obs = torch.as_tensor(vec.reset())
    with torch.no_grad():
        actions = old(obs)[0]
        _, old_tokens, mask, _ = old.evaluate_actions_per_token(obs, actions)
    advantages = torch.tensor([1.0, -1.0, 2.0, -0.5])
    mask = mask.float()
    out = PolicyObjective("token", "token", clipped=True)(
        new,
        obs,
        actions,
        advantages,
        (old_tokens * mask).sum(1),
        share=1.0,
        clip=0.2,
        token_weights=row_weights(mask, "token"),
        old_tokens=old_tokens,
    )
    # By hand: every counted token's ratio, clipped on its own, the mean over all tokens.
    with torch.no_grad():
        _, new_tokens, _, _ = new.evaluate_actions_per_token(obs, actions)
    terms, clipped, total = [], 0, 0
    for b in range(len(obs)):
        for t in range(int(mask[b].sum())):
            r = float(torch.exp(new_tokens[b, t] - old_tokens[b, t]))
            a = float(advantages[b])
            terms.append(-min(a * r, a * min(max(r, 0.8), 1.2)))
            clipped += abs(r - 1) > 0.2
            total += 1
    assert out.policy_loss.item() == pytest.approx(np.mean(terms), rel=1e-5)
    assert out.clipped == clipped and out.ratios == total
    assert 0 < clipped < total  # the check exercises both sides of the clip


def test_token_ratio_trains_and_logs_a_token_clip_fraction(tiny_lm_dir: Path) -> None:
    model = LMPPO(
        LMActorCriticPolicy,
        bandit_vec(tiny_lm_dir),
        ratio="token",
        n_steps=2,
        batch_size=8,
        n_epochs=2,
        learning_rate=1e-3,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    before = model.policy.lm.transformer.wte.weight.detach().clone()  # type: ignore[union-attr]
    logs = learn_and_log(model, 16)
    assert not torch.equal(before, model.policy.lm.transformer.wte.weight)  # type: ignore[union-attr]
    for key in ("train/clip_fraction", "train/value_loss", "train/approx_kl", "train/loss"):
        assert np.isfinite(logs[key]), key
    assert 0 <= logs["train/clip_fraction"] <= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(ratio="word"), ValueError,
         r"LMPPO: ratio='word' is unknown; expected one of \['sequence', 'token'\]"),
        (dict(minibatch_size=3), ValueError,
         r"LMPPO: minibatch_size=3 does not divide batch_size=8; .* minibatch_size=4"),
        (dict(minibatch_size=2.0), TypeError, r"minibatch_size=2.0 is not an int"),
    ],
    ids=["ratio", "minibatch_size", "minibatch_type"],
)  # fmt: skip
def test_bad_arguments_fail_before_anything_is_built(tiny_lm_dir: Path, kwargs, error, match):
    with pytest.raises(error, match=match):
        LMPPO("NotAPolicy", bandit_vec(tiny_lm_dir, 2), batch_size=8, **kwargs)


def test_token_ratio_needs_the_lm_policy() -> None:
    env = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match=r"ratio='token' needs per-token log-probs"):
        LMPPO("MlpPolicy", env, ratio="token", n_steps=8, batch_size=8)


def test_ppo_token_is_registered() -> None:
    assert algorithm_class("ppo-token") is LMPPO
    assert algorithm_class("ppo") is PPO  # plain ppo stays SB3's
    kwargs = hyperparameters("LMBandit-v0", "ppo-token", "lm")
    plain = hyperparameters("LMBandit-v0", "ppo", "lm")
    assert kwargs.pop("ratio") == "token" and kwargs == plain
