"""The policy losses of lmgym's LM algorithms, per sequence or per token, as weighted sums.

A whole completion is one action, so a PPO-style ratio can be taken per sequence (the
completion's summed token log-probs: SB3's PPO on ``LMBandit-v0``) or per token (InstructGPT,
TRL, the GRPO paper), with the completion's advantage broadcast over its tokens. Each loss here is
written as ``Σ_b w_b · Σ_t ℓ_bt · m_bt``: per-element terms ``ℓ`` (:func:`clipped_terms`,
:func:`reinforce_terms`, :func:`k3_terms`), the mask ``m`` of the tokens that count, and row
weights ``w`` (:func:`row_weights`) that say how the mini-batch is averaged. Because the weights
come from the whole mini-batch, the same sum split over micro-batches gives the same gradient
(:mod:`lmgym.algorithms.minibatches`).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

__all__ = [
    "LossAggregation",
    "Ratio",
    "check_choice",
    "clipped_surrogate",
    "clipped_terms",
    "k3_terms",
    "reinforce_surrogate",
    "reinforce_terms",
    "row_weights",
    "weighted_token_sum",
]

Ratio = Literal["sequence", "token"]
"""``"sequence"``: one ratio per completion; ``"token"``: one per completion token."""

LossAggregation = Literal["token", "sequence"]
"""How per-token terms are averaged: over all tokens of the mini-batch (``"token"``), or over
each completion's tokens and then over completions (``"sequence"``)."""


def check_choice(owner: str, name: str, value: object, choices: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of the ``Literal`` ``choices``.

    Example:
        >>> check_choice("LMPPO", "ratio", "token", Ratio)
        >>> check_choice("LMPPO", "ratio", "word", Ratio)
        Traceback (most recent call last):
        ...
        ValueError: LMPPO: ratio='word' is unknown; expected one of ['sequence', 'token'].
    """
    allowed = list(get_args(choices))
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{owner}: {name}={value!r} is unknown; expected one of {allowed}.")


def row_weights(mask: torch.Tensor, aggregation: LossAggregation) -> torch.Tensor:
    """Weights (B,) of each completion's summed per-token terms, from the mini-batch's mask (B, T).

    ``"token"``: ``1 / (tokens in the mini-batch)``, every token weighs the same, so long
    completions weigh more (DAPO, Yu et al. 2025; TRL's ``loss_type="dapo"``/``"bnpo"``).
    ``"sequence"``: ``1 / (B · tokens of the completion)``, each completion's mean, then the
    mean over completions (the GRPO paper, Shao et al. 2024; TRL's ``loss_type="grpo"``).
    A completion with no counted token weighs nothing either way.

    Example:
        >>> mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        >>> row_weights(mask, "token").tolist()
        [0.25, 0.25]
        >>> row_weights(mask, "sequence").tolist()
        [0.1666666716337204, 0.5]
    """
    counts = mask.sum(-1)
    if aggregation == "token":
        return torch.full_like(counts, 1.0 / max(float(counts.sum()), 1.0))
    return 1.0 / (len(counts) * counts.clamp(min=1.0))


def weighted_token_sum(
    terms: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``Σ_b w_b · Σ_t terms_bt · mask_bt``: a loss of per-token terms (B, T) over these rows."""
    return ((terms * mask).sum(-1) * weights).sum()


def clipped_terms(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per element, ``(−min(A·r, A·clip(r, 1 ± ε)), r)``.

    ``log_prob`` and ``old_log_prob`` are (B,) per sequence or (B, T) per token; advantages
    (B,) are broadcast over a completion's tokens.

    Example:
        >>> lp = torch.zeros(1, 2)
        >>> terms, ratio = clipped_terms(lp + 1.0, lp, torch.tensor([1.0]), 0.2)
        >>> terms.tolist()  # A = +1: each token's ratio e is capped at 1.2
        [[-1.2000000476837158, -1.2000000476837158]]
    """
    if log_prob.ndim == 2:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return -torch.min(unclipped, clipped), ratio


def reinforce_terms(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE's ``(−A·log π, r)`` per element (r only for the logs).

    Shapes as :func:`clipped_terms`.

    Example:
        >>> lp = torch.tensor([[-2.0, -1.0]])
        >>> reinforce_terms(lp, lp, torch.tensor([0.5]))[0].tolist()
        [[1.0, 0.5]]
    """
    if log_prob.ndim == 2:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(log_prob.detach() - old_log_prob)
    return -advantages * log_prob, ratio


def k3_terms(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(π_θ ‖ π_ref) per token: ``exp(ref − π) − (ref − π) − 1``.

    Non-negative, zero where the two log-probs agree, and unbiased for samples of π_θ (the form
    GRPO adds to its loss, Shao et al. 2024).

    Example:
        >>> k3 = k3_terms(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0]))
        >>> [round(k, 4) for k in k3.tolist()]  # e − 1 − 1 where π is e times below π_ref
        [0.0, 0.7183]
    """
    delta = ref_log_prob - log_prob
    return torch.exp(delta) - delta - 1


def clipped_surrogate(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped loss on sequence log-probs: ``(loss, ratio)``; all tensors (B,).

    Example:
        >>> lp = torch.tensor([0.0, 0.0])
        >>> loss, ratio = clipped_surrogate(lp + 1.0, lp, torch.tensor([1.0, -1.0]), 0.2)
        >>> round(loss.item(), 4)  # A=+1 is capped at 1.2; A=-1 takes the unclipped e
        0.7591
    """
    terms, ratio = clipped_terms(log_prob, old_log_prob, advantages, clip)
    return terms.mean(), ratio


def reinforce_surrogate(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE's loss ``−A·log π(y|x)``: ``(loss, ratio)``; ``clip`` is not used.

    Example:
        >>> lp = torch.tensor([-2.0, -1.0])
        >>> loss, _ = reinforce_surrogate(lp, lp, torch.tensor([1.0, -1.0]), 0.0)
        >>> loss.item()
        0.5
    """
    terms, ratio = reinforce_terms(log_prob, old_log_prob, advantages)
    return terms.mean(), ratio
