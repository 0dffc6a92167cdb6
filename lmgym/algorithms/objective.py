"""The policy objective of one micro-batch: per-sequence or per-token ratio, and GRPO's KL term.

:class:`PolicyObjective` is chosen once, when an algorithm is set up (which ratio, which loss,
how tokens are averaged, whether β·k3 enters the loss), and then called on each micro-batch.
It returns that micro-batch's share of the mini-batch's loss, so the micro-batches' gradients
add up to the mini-batch's (the weights come from the whole mini-batch: see
:mod:`lmgym.algorithms.losses`). :func:`rollout_token_logprobs` computes what a per-token ratio
or the KL term needs once per rollout, before the first update moves the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmgym.algorithms.losses import (
    LossAggregation,
    Ratio,
    clipped_terms,
    k3_terms,
    reinforce_terms,
    weighted_token_sum,
)
from lmgym.models.scoring import score_completions

__all__ = [
    "MicroBatchLoss",
    "PolicyObjective",
    "reference_token_logprobs",
    "rollout_token_logprobs",
]


@dataclass
class MicroBatchLoss:
    """What one micro-batch contributes to the update, and what its logs need.

    Attributes:
        policy_loss: Its share of the mini-batch's policy loss (with gradients).
        kl_loss: Its share of β · (aggregated k3) (with gradients); 0 without the KL term.
        values: (b, 1) the critic's values, from the same forward.
        entropy: (b,) entropies of the actions, or None where the distribution has none.
        log_prob: (b,) each completion's summed token log-prob (with gradients).
        log_ratio: (b,) ``log π_θ − log π_old`` of each whole completion (no gradients).
        clipped: How many ratios (sequences or tokens) were outside ``1 ± ε``.
        ratios: How many ratios there were (sequences, or counted tokens).
    """

    policy_loss: torch.Tensor
    kl_loss: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor | None
    log_prob: torch.Tensor
    log_ratio: torch.Tensor
    clipped: float
    ratios: float


@dataclass(frozen=True)
class PolicyObjective:
    """One choice of policy loss, applied to micro-batches.

    Attributes:
        ratio: ``"sequence"``: one ratio per completion, over its summed log-probs (SB3's PPO
            on a whole-completion action). ``"token"``: one ratio per token against the
            rollout's per-token log-probs, the completion's advantage on each of its tokens.
        aggregation: How per-token terms are averaged (``ratio="token"`` and the KL term).
        clipped: PPO's clipped surrogate; False: REINFORCE's ``−A·log π``.
        kl_coef: β of the k3 term in the loss (0: none).
    """

    ratio: Ratio
    aggregation: LossAggregation
    clipped: bool
    kl_coef: float = 0.0

    @property
    def needs_old_tokens(self) -> bool:
        """Whether the rollout's per-token log-probs must be computed before the update."""
        return self.ratio == "token" and self.clipped

    @property
    def needs_token_mask(self) -> bool:
        """Whether the mini-batch's token mask weighs the loss (per-token terms)."""
        return self.ratio == "token" or self.kl_coef > 0

    def __call__(
        self,
        policy: Any,
        observations: torch.Tensor,
        actions: torch.Tensor,
        advantages: torch.Tensor,
        old_log_prob: torch.Tensor,
        *,
        share: float,
        clip: float,
        token_weights: torch.Tensor | None = None,
        old_tokens: torch.Tensor | None = None,
        ref_tokens: torch.Tensor | None = None,
    ) -> MicroBatchLoss:
        """The loss of one micro-batch of a mini-batch.

        Args:
            policy: The SB3 policy (the LM policy for per-token terms).
            observations: (b, ...) the micro-batch's observations.
            actions: (b, ...) its actions.
            advantages: (b,) its advantages (already normalised over the mini-batch).
            old_log_prob: (b,) the rollout's summed log-probs.
            share: b / (rows of the mini-batch): the weight of this micro-batch's means.
            clip: PPO's ε (unused by REINFORCE).
            token_weights: (b,) :func:`~lmgym.algorithms.losses.row_weights` of these rows,
                from the whole mini-batch's mask (needed by per-token terms).
            old_tokens: (b, T) the rollout's per-token log-probs (``needs_old_tokens``).
            ref_tokens: (b, T) π_ref's per-token log-probs (``kl_coef > 0``).
        """
        if not self.needs_token_mask:
            values, log_prob, entropy = policy.evaluate_actions(observations, actions)
            if self.clipped:
                terms, ratio = clipped_terms(log_prob, old_log_prob, advantages, clip)
            else:
                terms, ratio = reinforce_terms(log_prob, old_log_prob, advantages)
            # mean() × share: with one micro-batch (share 1) exactly SB3's PPO loss.
            return MicroBatchLoss(
                policy_loss=terms.mean() * share,
                kl_loss=torch.zeros((), device=terms.device),
                values=values,
                entropy=entropy,
                log_prob=log_prob,
                log_ratio=(log_prob - old_log_prob).detach(),
                clipped=float((torch.abs(ratio - 1) > clip).sum()),
                ratios=float(ratio.numel()),
            )

        assert token_weights is not None, "per-token terms are weighed over the mini-batch"
        values, token_lp, mask, entropy = policy.evaluate_actions_per_token(observations, actions)
        mask = mask.to(token_lp.dtype)
        log_prob = (token_lp * mask).sum(-1)
        log_ratio = (log_prob - old_log_prob).detach()
        if self.ratio == "sequence":
            if self.clipped:
                terms, ratio = clipped_terms(log_prob, old_log_prob, advantages, clip)
            else:
                terms, ratio = reinforce_terms(log_prob, old_log_prob, advantages)
            policy_loss = terms.mean() * share
            clipped, ratios = float((torch.abs(ratio - 1) > clip).sum()), float(ratio.numel())
        else:
            if self.clipped:
                assert old_tokens is not None, "a per-token ratio needs the rollout's log-probs"
                terms, ratio = clipped_terms(token_lp, old_tokens, advantages, clip)
                log_ratio = ((token_lp.detach() - old_tokens) * mask).sum(-1)
            else:
                terms, ratio = reinforce_terms(token_lp, token_lp.detach(), advantages)
            policy_loss = weighted_token_sum(terms, mask, token_weights)
            clipped = float(((torch.abs(ratio - 1) > clip) * mask).sum())
            ratios = float(mask.sum())
        kl_loss = torch.zeros((), device=token_lp.device)
        if self.kl_coef > 0:
            assert ref_tokens is not None, "the KL term needs π_ref's per-token log-probs"
            kl_loss = self.kl_coef * weighted_token_sum(
                k3_terms(token_lp, ref_tokens), mask, token_weights
            )
        return MicroBatchLoss(
            policy_loss=policy_loss,
            kl_loss=kl_loss,
            values=values,
            entropy=entropy,
            log_prob=log_prob,
            log_ratio=log_ratio,
            clipped=clipped,
            ratios=ratios,
        )


def rollout_token_logprobs(
    policy: Any, observations: torch.Tensor, actions: torch.Tensor, chunk: int
) -> torch.Tensor:
    """π_θ's per-token log-probs (N, T) of a whole rollout, before the update (no gradients).

    The "old" log-probs of a per-token ratio: SB3's rollout buffer keeps only each
    completion's sum. One teacher-forced pass per ``chunk`` rows, the same forward the update
    then runs, so every ratio starts at exactly 1 (TRL computes its old per-token log-probs the
    same way).
    """
    parts = []
    with torch.no_grad():
        for start in range(0, len(observations), chunk):
            rows = slice(start, start + chunk)
            _, token_lp, _, _ = policy.evaluate_actions_per_token(observations[rows], actions[rows])
            parts.append(token_lp.detach())
    return torch.cat(parts)


def reference_token_logprobs(
    models: Any,
    observations: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """π_ref's per-token log-probs (N, T) of a rollout, from the env's own frozen reference.

    ``models`` is the env's :class:`~lmgym.envs.lm_env_parts.LMModels`: its ``ref_model`` is
    the one frozen reference the env's KL term already uses (or, with LoRA, the policy's base
    with adapters off), so no second copy is built. ``mask`` (N, T) is the policy's token mask,
    so the two log-probs count the same tokens.
    """
    device = observations.device
    parts = []
    with torch.no_grad():
        for start in range(0, len(observations), chunk):
            rows = slice(start, start + chunk)
            prompt_ids = observations[rows].long().to(models.device)
            scores = score_completions(
                models.ref_model,
                prompt_ids,
                (prompt_ids != models.pad_token_id).long(),
                actions[rows].long().to(models.device),
                mask[rows].to(models.device),
                pad_token_id=models.pad_token_id,
                vocab_size=models.vocab_size,
            )
            parts.append(scores.logprobs.float().to(device))
    return torch.cat(parts)
