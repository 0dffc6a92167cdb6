"""The terms of the ILQL loss, as functions of tensors.

ILQL is Snell et al. 2022, *Offline RL for Natural Language Generation with Implicit Language
Q Learning*.

Token-level transitions: the state s_t is the prompt and the completion tokens before t, the
action a_t is token t, the reward r_t is what the episode paid at token t, and s_{t+1} follows.

* Q: ``(Q(s_t, a_t) − y_t)²`` with the Bellman target ``y_t = r_t + γ (1 − d_t) V(s_{t+1})``
  (:func:`bellman_targets`): V of the next state, not a max over actions, so nothing is
  evaluated on actions outside the data.
* V: expectile regression of V(s_t) onto the target network's Q(s_t, a_t)
  (:func:`expectile_loss`): with τ > 0.5 it approaches the best action *in the data*.
* CQL (:func:`cql_loss`): the cross-entropy of softmax(Q(s_t, ·)) on the logged token, which
  pushes Q down on tokens the data never took.

All of them average over the counted tokens (``mask``).
"""

from __future__ import annotations

import torch

__all__ = ["bellman_targets", "cql_loss", "expectile_loss", "masked_mean"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 if nothing counts).

    Example:
        >>> masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item()
        2.0
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def expectile_loss(diff: torch.Tensor, tau: float, mask: torch.Tensor) -> torch.Tensor:
    """Expectile regression ``|τ − 1(u < 0)| · u²`` averaged over ``mask``, with ``u = diff``.

    ``diff`` is target − prediction: under-estimates (u > 0) weigh τ, over-estimates 1 − τ,
    so τ = 0.5 is half the squared error and τ → 1 approaches the maximum of the targets.

    Example:
        >>> u = torch.tensor([2.0, -1.0])
        >>> round(expectile_loss(u, 0.7, torch.ones(2)).item(), 4)  # (0.7 * 4 + 0.3 * 1) / 2
        1.55
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return masked_mean(weight * diff.pow(2), mask)


def bellman_targets(
    rewards: torch.Tensor, dones: torch.Tensor, next_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``y_t = r_t + γ (1 − d_t) V(s_{t+1})``, all (B, T); ``next_values`` carries no gradient.

    Example:
        >>> r = torch.tensor([[0.0, 0.0, 1.0]]); d = torch.tensor([[0.0, 0.0, 1.0]])
        >>> bellman_targets(r, d, torch.tensor([[0.5, 0.8, 9.0]]), gamma=1.0).tolist()
        [[0.5, 0.800000011920929, 1.0]]
    """
    return rewards + gamma * (1.0 - dones.to(rewards.dtype)) * next_values.detach()


def cql_loss(q_values: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CQL's term for a discrete action space: ``logsumexp_a Q(s, a) − Q(s, a_data)``, averaged.

    ``q_values`` (B, T, V), ``actions`` (B, T) token ids, ``mask`` (B, T).

    Example:
        >>> q = torch.tensor([[[0.0, 0.0]]])
        >>> round(cql_loss(q, torch.tensor([[1]]), torch.ones(1, 1)).item(), 4)  # log 2
        0.6931
    """
    taken = torch.gather(q_values, -1, actions.unsqueeze(-1)).squeeze(-1)
    return masked_mean(torch.logsumexp(q_values, dim=-1) - taken, mask)
