"""GRPO/RLOO's loss options: per-token ratios, token/sequence averaging, β·k3 in the loss."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
from lmgym.algorithms import GRPO, RLOO
from lmgym.algorithms.losses import row_weights
from lmgym.algorithms.objective import PolicyObjective
from lmgym.models.scoring import completion_logprobs
from tests.algorithms.conftest import count_words, grouped_vec, learn_and_log, lm_state
from tests.conftest import PROMPTS


class FixedPolicy:
    """Serves given per-token log-probs, as the LM policy's evaluate_actions_per_token does."""

    def __init__(self, token_lp: torch.Tensor, mask: torch.Tensor) -> None:
        self.token_lp, self.mask = token_lp, mask

    def evaluate_actions_per_token(self, obs, actions):
        return torch.zeros(len(self.mask), 1), self.token_lp, self.mask, None


# Two completions: 3 tokens and 1 token (then padding).
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
OLD = torch.tensor([[-1.0, -2.0, -1.5, 0.0], [-0.5, 0.0, 0.0, 0.0]])
NEW = torch.tensor([[-0.5, -2.1, -1.4, -9.0], [-0.9, -9.0, -9.0, -9.0]])
ADV = torch.tensor([1.0, -2.0])


def objective_loss(aggregation: str, **kwargs) -> tuple[float, float]:
    new = NEW.clone().requires_grad_(True)
    out = PolicyObjective("token", aggregation, clipped=True, **kwargs)(  # type: ignore[arg-type]
        FixedPolicy(new, MASK),
        torch.zeros(2, 1),
        torch.zeros(2, 4),
        ADV,
        (OLD * MASK).sum(1),
        share=1.0,
        clip=0.2,
        token_weights=row_weights(MASK, aggregation),  # type: ignore[arg-type]
        old_tokens=OLD,
        ref_tokens=OLD,  # the reference: the rollout's policy here
    )
    return out.policy_loss.item(), out.kl_loss.item()


def clipped(a: float, r: float) -> float:
    return -min(a * r, a * min(max(r, 0.8), 1.2))


def per_token_terms() -> list[list[float]]:
    return [
        [clipped(float(ADV[b]), float(torch.exp(NEW[b, t] - OLD[b, t]))) for t in range(n)]
        for b, n in enumerate([3, 1])
    ]


def test_token_aggregation_is_the_mean_over_all_tokens() -> None:
    terms = per_token_terms()
    loss, kl = objective_loss("token")
    assert loss == pytest.approx(sum(terms[0] + terms[1]) / 4, rel=1e-6)
    assert kl == 0.0  # no KL term unless asked


def test_sequence_aggregation_is_the_mean_of_each_completions_mean() -> None:
    terms = per_token_terms()
    loss, _ = objective_loss("sequence")
    assert loss == pytest.approx((np.mean(terms[0]) + np.mean(terms[1])) / 2, rel=1e-6)


def test_kl_in_the_loss_is_beta_times_k3_per_token() -> None:
    k3 = torch.exp(OLD - NEW) - (OLD - NEW) - 1  # π_ref = OLD here
    _, kl = objective_loss("sequence", kl_coef=0.1)
    expected = 0.1 * (k3[0, :3].mean() + k3[1, :1].mean()) / 2
    assert kl == pytest.approx(expected.item(), rel=1e-6)
    _, kl_tokens = objective_loss("token", kl_coef=0.1)
    assert kl_tokens == pytest.approx(0.1 * (k3 * MASK).sum().item() / 4, rel=1e-6)


def first_rollout(model) -> None:
    """Collect one rollout without updating (what learn() does before train())."""
    _, callback = model._setup_learn(model.n_steps * model.env.num_envs, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def test_the_reference_log_probs_come_from_the_envs_reference(tiny_lm_dir: Path) -> None:
    vec = grouped_vec(tiny_lm_dir)
    vec.venv.rewarder.controller.value = 0.0  # type: ignore[attr-defined]
    model = GRPO(LMActorCriticPolicy, vec, batch_size=8, ratio="token", kl_in_loss=True,
                 policy_kwargs=dict(model=tiny_lm_dir))  # fmt: skip
    first_rollout(model)
    old, ref = model._rollout_token_logprobs()
    assert old is not None and ref is not None
    buffer = model.rollout_buffer
    models = vec.get_attr("models")[0]
    oracle = completion_logprobs(
        models.ref_model,
        torch.as_tensor(buffer.observations).long(),
        torch.as_tensor(buffer.actions).long(),
        pad_token_id=models.pad_token_id,
        eos_token_id=models.eos_token_id,
        full=False,
    )
    torch.testing.assert_close(ref, oracle, rtol=1e-5, atol=1e-6)
    # Before any update the policy is the reference: k3 is 0 on every token.
    torch.testing.assert_close(old, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algo", [GRPO, RLOO], ids=["grpo", "rloo"])
def test_paper_form_trains_and_logs_the_kl_loss(tiny_lm_dir: Path, algo) -> None:
    vec = grouped_vec(tiny_lm_dir)
    vec.venv.rewarder.controller.value = 0.0  # type: ignore[attr-defined]
    model = algo(
        LMActorCriticPolicy,
        vec,
        n_steps=2,
        batch_size=8,
        n_epochs=2,
        clip_range=0.2,
        ratio="token",
        loss_aggregation="token",
        kl_in_loss=True,
        learning_rate=1e-3,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    before = lm_state(model)
    logs = learn_and_log(model, 32)
    assert any(not torch.equal(before[k], v) for k, v in model.policy.lm.state_dict().items())
    assert logs["train/kl_loss"] > 0  # the policy moved away from π_ref
    assert 0 <= logs["train/clip_fraction"] <= 1


def trained(tiny_lm_dir: Path, **kwargs) -> dict[str, torch.Tensor]:
    vec = grouped_vec(tiny_lm_dir)
    vec.venv.rewarder.controller.value = 0.0  # type: ignore[attr-defined]
    model = GRPO(LMActorCriticPolicy, vec, batch_size=8, learning_rate=1e-3, seed=0,
                 policy_kwargs=dict(model=tiny_lm_dir), **kwargs)  # fmt: skip
    learn_and_log(model, 16)
    return lm_state(model)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(ratio="token", loss_aggregation="sequence", kl_in_loss=True, kl_coef=0.5)],
    ids=["sequence", "token_kl"],
)
def test_micro_batches_give_the_same_update(tiny_lm_dir: Path, options) -> None:
    whole = trained(tiny_lm_dir, **options)
    micro = trained(tiny_lm_dir, minibatch_size=2, **options)
    for name, value in whole.items():
        torch.testing.assert_close(micro[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_kl_in_the_loss_and_in_the_reward_warns(tiny_lm_dir: Path) -> None:
    vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=4, group_size=2, model=tiny_lm_dir,
                                 prompts=PROMPTS, reward_fn=count_words, kl_coef=0.05,
                                 max_prompt_tokens=8, max_new_tokens=6))  # fmt: skip
    with pytest.warns(UserWarning, match=r"kl_in_loss=True .* kl_coef is 0.05.*counts twice"):
        GRPO(LMActorCriticPolicy, vec, batch_size=4, kl_in_loss=True,
             policy_kwargs=dict(model=tiny_lm_dir))  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(ratio="words"), ValueError, r"GRPO: ratio='words' is unknown"),
        (dict(loss_aggregation="mean"), ValueError,
         r"loss_aggregation='mean' is unknown; expected one of \['token', 'sequence'\]"),
        (dict(kl_in_loss="yes"), TypeError, r"kl_in_loss='yes' is not a bool"),
        (dict(kl_coef=-0.1), ValueError, r"kl_coef=-0.1 must be a number >= 0"),
        (dict(minibatch_size=3), ValueError,
         r"minibatch_size=3 does not divide batch_size=8"),
    ],
    ids=["ratio", "loss_aggregation", "kl_in_loss", "kl_coef", "minibatch_size"],
)  # fmt: skip
def test_bad_options_fail_before_anything_is_built(tiny_lm_dir: Path, kwargs, error, match):
    with pytest.raises(error, match=match):
        GRPO("NotAPolicy", grouped_vec(tiny_lm_dir), batch_size=8, **kwargs)
