"""RLlib's view of a whole-completion action: per-token logits, teacher forced on the action.

PPO's learner builds the action distribution from ``fwd_out[ACTION_DIST_INPUTS]`` and asks it
for ``logp(actions)`` and ``entropy()``. For a completion those are sums over its counted tokens
(up to and including the first EOS), which need the per-position logits and which positions
count; :class:`CompletionLogits` reads both from one tensor, ``(B, T, V + 1)``: the logits with
the completion mask appended as the last channel (see :func:`completion_dist_inputs`).

It cannot ``sample``: a completion is drawn autoregressively, which the RL module does itself
(``forward_exploration`` returns the actions and their log-probs), so RLlib never samples from
this class.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import TorchDistribution

__all__ = ["CompletionLogits", "completion_dist_inputs"]


def completion_dist_inputs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pack per-token logits (B, T, V) and the completion mask (B, T) into (B, T, V + 1).

    Example:
        >>> completion_dist_inputs(torch.zeros(2, 3, 5), torch.ones(2, 3)).shape
        torch.Size([2, 3, 6])
    """
    return torch.cat([logits.float(), mask.to(logits.device, torch.float32)[..., None]], dim=-1)


class CompletionLogits(TorchDistribution):
    """Log-probs and entropies of whole completions from teacher-forced per-token logits.

    Args:
        logits: ``(B, T, V + 1)`` from :func:`completion_dist_inputs`. The sampling pass stores
            a ``(B, 1)`` placeholder instead (it keeps no logits), which only :meth:`kl` would
            read: PPO's KL loss is off in :func:`lmgym.rllib.ppo_config` (the env's reward
            already carries the KL penalty to the reference model).

    Example:
        >>> inputs = completion_dist_inputs(torch.zeros(1, 2, 4), torch.tensor([[1.0, 0.0]]))
        >>> dist = CompletionLogits.from_logits(inputs)
        >>> round(float(dist.logp(torch.tensor([[3, 0]]))[0]), 4)  # one counted token of 4
        -1.3863
    """

    def __init__(self, logits: torch.Tensor) -> None:
        Distribution.__init__(self)  # no torch.distributions object: see _get_torch_distribution
        self.inputs = logits

    def _get_torch_distribution(self, *args: Any, **kwargs: Any) -> Any:
        """Not used: no torch distribution describes a completion's teacher-forced logits."""
        raise NotImplementedError("CompletionLogits computes logp / entropy / kl itself")

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inputs.dim() != 3:
            raise ValueError(
                f"CompletionLogits inputs have shape {tuple(self.inputs.shape)}; expected "
                "(B, T, V + 1) from forward_train (the sampling pass keeps no logits, so "
                "use_kl_loss must stay False: lmgym.rllib.ppo_config sets it)."
            )
        return torch.log_softmax(self.inputs[..., :-1], dim=-1), self.inputs[..., -1]

    @classmethod
    def from_logits(cls, logits: Any, **kwargs: Any) -> CompletionLogits:
        """The distribution of ``logits`` (RLlib's constructor)."""
        return cls(logits)

    def logp(self, value: Any, **kwargs: Any) -> torch.Tensor:
        """``log π(y | x)`` (B,): the counted tokens' log-probs summed."""
        logp, mask = self._parts()
        taken = logp.gather(-1, value.long().reshape(logp.shape[:2])[..., None])[..., 0]
        return (taken * mask).sum(-1)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        """Σ_t H(π(· | x, y_<t)) (B,) along the completion (the chain-rule estimate)."""
        logp, mask = self._parts()
        return (-(logp.exp() * logp).sum(-1) * mask).sum(-1)

    def kl(self, other: Distribution, **kwargs: Any) -> torch.Tensor:
        """Σ_t KL(self ‖ other) (B,) along the completion both were teacher forced on."""
        assert isinstance(other, CompletionLogits)
        p, mask = self._parts()
        q, _ = other._parts()
        return ((p.exp() * (p - q)).sum(-1) * mask).sum(-1)

    def sample(self, *, sample_shape: Any = None, return_logp: bool = False, **kwargs: Any) -> Any:
        """Not available: completions are sampled autoregressively by the RL module."""
        raise NotImplementedError(
            "CompletionLogits cannot sample: a completion is drawn token by token, which "
            "lmgym.rllib.LMRLModule.forward_exploration does; use its Columns.ACTIONS."
        )

    def rsample(self, *, sample_shape: Any = None, return_logp: bool = False, **kwargs: Any) -> Any:
        """Not available (discrete tokens; see :meth:`sample`)."""
        return self.sample(sample_shape=sample_shape)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs: Any) -> int:
        """``(V + 1) * T`` inputs for ``MultiDiscrete([V] * T)``."""
        assert isinstance(space, gym.spaces.MultiDiscrete)
        return int((space.nvec[0] + 1) * space.nvec.shape[0])
