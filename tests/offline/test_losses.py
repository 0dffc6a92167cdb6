"""The ILQL loss terms against hand-computed values, and the loss's alignment of states."""

from __future__ import annotations

import math

import pytest
import torch

from lmgym.models.loading import load_model
from lmgym.models.scoring import score_completions
from lmgym.offline.config import ILQLConfig
from lmgym.offline.dataset import Episode
from lmgym.offline.ilql import collate, ilql_loss
from lmgym.offline.losses import bellman_targets, cql_loss, expectile_loss, masked_mean
from lmgym.offline.model import ILQLModel


def test_expectile_loss_hand_computed() -> None:
    u = torch.tensor([2.0, -1.0, 0.5, -3.0])
    mask = torch.tensor([1, 1, 1, 0])
    # τ = 0.7: under-estimates (u > 0) weigh 0.7, over-estimates 0.3; the masked one is out.
    expected = (0.7 * 4 + 0.3 * 1 + 0.7 * 0.25) / 3
    assert expectile_loss(u, 0.7, mask).item() == pytest.approx(expected)
    # τ = 0.5 is half the mean squared error
    assert expectile_loss(u, 0.5, mask).item() == pytest.approx(0.5 * (4 + 1 + 0.25) / 3)
    # τ = 0.9 punishes over-estimates by 0.1 only
    assert expectile_loss(torch.tensor([-2.0]), 0.9, torch.ones(1)).item() == pytest.approx(0.4)


def test_expectile_regression_moves_v_to_an_upper_expectile() -> None:
    targets = torch.tensor([0.0, 0.0, 0.0, 1.0])  # one good action in four
    v = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=0.5)
    for _ in range(500):
        optimizer.zero_grad()
        expectile_loss(targets - v, 0.9, torch.ones(4)).backward()
        optimizer.step()
    # the 0.9-expectile solves 0.9 * (1 - v) = 0.1 * 3 v: v = 0.75, far above the mean 0.25
    assert v.item() == pytest.approx(0.75, abs=1e-3)


def test_bellman_targets_on_a_three_token_toy() -> None:
    rewards = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 2.0]])
    next_values = torch.tensor([[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]])  # V(s_1), V(s_2), V(s_3)
    ended = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # row 2 was cut: bootstrap V(s_3)
    assert bellman_targets(rewards, ended, next_values, 1.0).tolist() == [
        [10.0, 20.5, 1.0],
        [10.0, 20.0, 32.0],
    ]
    discounted = bellman_targets(rewards, ended, next_values, 0.5)
    assert discounted.tolist() == [[5.0, 10.5, 1.0], [5.0, 10.0, 17.0]]


def test_bellman_targets_carry_no_gradient_to_v() -> None:
    next_values = torch.ones(1, 2, requires_grad=True)
    targets = bellman_targets(torch.zeros(1, 2), torch.zeros(1, 2), next_values, 1.0)
    assert not targets.requires_grad


def test_cql_term_hand_computed() -> None:
    q = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    actions = torch.tensor([[0, 1]])
    first = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1.0
    assert cql_loss(q, actions, torch.tensor([[1, 0]])).item() == pytest.approx(first)
    both = (first + math.log(3.0)) / 2
    assert cql_loss(q, actions, torch.tensor([[1, 1]])).item() == pytest.approx(both, rel=1e-6)
    # its gradient lowers Q of the tokens not taken and raises the taken one
    q.requires_grad_(True)
    cql_loss(q, actions, torch.tensor([[1, 0]])).backward()
    assert q.grad is not None
    grad = q.grad[0, 0]
    assert grad[0] < 0 < grad[1] < grad[2]


def test_masked_mean_ignores_padding_and_empty_masks() -> None:
    assert masked_mean(torch.tensor([1.0, 5.0]), torch.tensor([0, 0])).item() == 0.0


def test_ilql_loss_on_a_three_token_episode(tiny_lm_dir) -> None:
    """The loss's states line up: Q(s_t, a_t) is regressed onto r_t + V(s_{t+1})."""
    lm, _ = load_model(tiny_lm_dir)
    torch.manual_seed(0)
    model = ILQLModel(lm)
    episodes = [
        Episode("p", [1, 4], [7, 8, 2], [0.0, 0.0, 1.0]),  # ended at EOS
        Episode("p", [1], [9, 10, 11], [0.0, 0.5, 0.0], [0, 0, 0]),  # cut: bootstraps V(s_3)
    ]
    batch = collate(episodes, pad_token_id=0)
    config = ILQLConfig(tau=0.7, cql_alpha=0.0, bc_coef=0.0)
    loss, parts = ilql_loss(model, batch, config, pad_token_id=0)

    with torch.no_grad():
        out = model.token_outputs(batch.prompt_ids, batch.prompt_mask, batch.actions,
                                  pad_token_id=0)  # fmt: skip
        v = model.heads.v(out.states)  # (2, 4): V(s_0) .. V(s_3)
        q_heads = model.heads.q(out.states[:, :3])
        target_q = model.heads.target_q(out.states[:, :3])
    expected_q, expected_v = 0.0, 0.0
    for row, episode in enumerate(episodes):
        for t, action in enumerate(episode.completion_ids):
            end = episode.dones[t] if episode.dones else 0
            y = episode.rewards[t] + (1 - end) * v[row, t + 1]
            expected_q += sum((q[row, t, action] - y) ** 2 for q in q_heads) / 6
            u = target_q[row, t, action] - v[row, t]
            expected_v += (0.7 if u >= 0 else 0.3) * u**2 / 6
    assert parts["loss_q"] == pytest.approx(float(expected_q), rel=1e-5)
    assert parts["loss_v"] == pytest.approx(float(expected_v), rel=1e-5)
    assert loss.item() == pytest.approx(parts["loss_q"] + parts["loss_v"], rel=1e-5)


def test_states_and_logits_match_the_env_scorer(tiny_lm_dir) -> None:
    """token_outputs' logits at s_t predict token t, exactly as score_completions scores it."""
    lm, _ = load_model(tiny_lm_dir)
    episodes = [Episode("p", [1, 4, 5], [7, 8, 2], [0.0, 0.0, 1.0]),
                Episode("p", [1], [9, 2], [0.0, 0.0])]  # fmt: skip
    batch = collate(episodes, pad_token_id=0)
    with torch.no_grad():
        out = ILQLModel(lm).token_outputs(
            batch.prompt_ids, batch.prompt_mask, batch.actions, pad_token_id=0
        )
        scored = score_completions(lm, batch.prompt_ids, batch.prompt_mask, batch.actions,
                                   batch.mask, pad_token_id=0)  # fmt: skip
    logprobs = torch.log_softmax(out.logits, -1).gather(2, batch.actions.unsqueeze(-1))[..., 0]
    torch.testing.assert_close(logprobs * batch.mask, scored.logprobs, atol=1e-5, rtol=1e-5)
