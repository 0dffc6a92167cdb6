"""RLOO: the leave-one-out baseline (hand-computed), its loss, and a short learn()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmgym.agents import LMActorCriticPolicy
from lmgym.algorithms import RLOO, rloo_advantages
from lmgym.algorithms.losses import clipped_surrogate, reinforce_surrogate
from tests.algorithms.conftest import grouped_vec, learn_and_log, lm_state


def test_rloo_baseline_by_hand() -> None:
    rewards = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 4.0, 4.0]])
    # Env 0's baseline is (2 + 3 + 10) / 3 = 5, env 3's (1 + 2 + 3) / 3 = 2.
    expected = [[1 - 5, 2 - 14 / 3, 3 - 13 / 3, 10 - 2], [0, 0, 0, 0]]
    np.testing.assert_allclose(rloo_advantages(rewards), expected)
    np.testing.assert_allclose(rloo_advantages(np.array([[0.0, 1.0]])), [[-1.0, 1.0]])


def test_reinforce_loss_gradient_is_advantage_weighted() -> None:
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss, _ = reinforce_surrogate(log_prob, log_prob.detach(), torch.tensor([2.0, -1.0]), 0.0)
    loss.backward()
    assert log_prob.grad is not None
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, 0.5]))  # -A / B
    # At ratio 1 the clipped loss has the same gradient.
    again = log_prob.detach().clone().requires_grad_(True)
    clipped, _ = clipped_surrogate(again, again.detach(), torch.tensor([2.0, -1.0]), 0.2)
    clipped.backward()
    torch.testing.assert_close(again.grad, log_prob.grad)


@pytest.mark.parametrize("clip_range", [None, 0.2], ids=["reinforce", "clipped"])
def test_learn_changes_the_lm_and_logs_losses(tiny_lm_dir: Path, clip_range) -> None:
    model = RLOO(
        LMActorCriticPolicy,
        grouped_vec(tiny_lm_dir),
        n_steps=2,
        batch_size=8,
        n_epochs=1 if clip_range is None else 2,
        clip_range=clip_range,
        learning_rate=1e-3,
        seed=0,
        policy_kwargs=dict(model=tiny_lm_dir),
    )
    before = lm_state(model)
    logs = learn_and_log(model, 32)
    assert model.num_timesteps == 32
    assert any(not torch.equal(before[k], v) for k, v in model.policy.lm.state_dict().items())
    for key in ("train/policy_gradient_loss", "train/approx_kl", "train/loss"):
        assert np.isfinite(logs[key]), key
    assert ("train/clip_fraction" in logs) == (clip_range is not None)


def test_epochs_without_clipping_warn(tiny_lm_dir: Path) -> None:
    with pytest.warns(UserWarning, match=r"n_epochs=2 without clip_range"):
        RLOO(
            LMActorCriticPolicy,
            grouped_vec(tiny_lm_dir),
            n_epochs=2,
            policy_kwargs=dict(model=tiny_lm_dir),
        )


def test_refuses_an_ungrouped_env(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"RLOO needs group_size >= 2, and the env has 1"):
        RLOO(
            LMActorCriticPolicy,
            grouped_vec(tiny_lm_dir, 4, 1),
            policy_kwargs=dict(model=tiny_lm_dir),
        )
