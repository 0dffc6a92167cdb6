"""GRPO (Shao et al. 2024, "DeepSeekMath"): PPO's clipped loss with a group-relative baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from lmgym.algorithms.group import GroupAlgorithm
from lmgym.algorithms.losses import LossAggregation, Ratio

__all__ = ["GRPO", "grpo_advantages"]


def grpo_advantages(
    rewards: np.ndarray, scale_rewards: bool = True, eps: float = 1e-4
) -> np.ndarray:
    """Group-relative advantages ``(r − mean_group(r)) / (std_group(r) + eps)`` (..., G).

    Each row of the last axis is one group (the G completions of one prompt). The standard
    deviation is the sample one (``ddof=1``), as DeepSeekMath's GRPO computes it.
    ``scale_rewards=False`` keeps only the centring: Dr. GRPO (Liu et al. 2025, "Understanding
    R1-Zero-Like Training"), which argues the division over-weights groups whose rewards barely
    differ (too easy or too hard prompts).

    Example:
        >>> grpo_advantages(np.array([[1.0, 2.0, 3.0]]), eps=0.0)
        array([[-1.,  0.,  1.]])
        >>> grpo_advantages(np.array([[1.0, 2.0, 3.0]]), scale_rewards=False)
        array([[-1.,  0.,  1.]])
        >>> grpo_advantages(np.array([[0.0, 0.0, 4.0]]), scale_rewards=False)
        array([[-1.33333333, -1.33333333,  2.66666667]])
    """
    centred = rewards - rewards.mean(axis=-1, keepdims=True)
    if not scale_rewards:
        return centred
    return centred / (rewards.std(axis=-1, ddof=1, keepdims=True) + eps)


class GRPO(GroupAlgorithm):
    """Group Relative Policy Optimization on the grouped ``LMBandit-v0`` vector env.

    Paper: Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
    Language Models" (GRPO); ``scale_rewards=False`` is Dr. GRPO (Liu et al. 2025).

    Each prompt is answered G times (``group_size=G`` envs share it); a completion's advantage
    is its reward against its group's, ``(r − mean) / (std + eps)``, and PPO's clipped
    surrogate maximises it. No value head is trained: the group is the baseline.

    Two forms, as in docs/algorithms.md:

    - lmgym's default: one ratio per completion (its summed token log-probs), and the KL to
      π_ref in the env's reward, r_φ − β·KL (attach the policy as π_θ with
      ``model.policy.attach_to(vec)``).
    - the paper's (and TRL's): ``ratio="token"`` clips each token's ratio, the completion's
      advantage on each of its tokens; ``loss_aggregation="sequence"`` averages over each
      completion's tokens and then over completions (the paper), ``"token"`` over all tokens of
      the mini-batch (DAPO); ``kl_in_loss=True`` adds ``kl_coef · k3`` per token against the
      env's frozen π_ref to the loss, ``k3 = exp(ref − π) − (ref − π) − 1``. The env's β must
      then be 0 (``gym.make_vec(..., kl_coef=0.0)``), or the KL counts twice: that warns.

    Args:
        policy: The policy class (``LMActorCriticPolicy``) or an SB3 policy name.
        env: An SB3 VecEnv of the grouped bandit env, e.g.
            ``SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=16, group_size=4))``;
            ``group_size`` must be at least 2.
        learning_rate: Adam's learning rate, or a schedule of the remaining progress.
        n_steps: Vector-env steps per rollout; a rollout has ``n_steps × num_envs`` completions.
        batch_size: Mini-batch size (completions) of each gradient step.
        n_epochs: Passes over each rollout.
        clip_range: PPO's ε (or a schedule): the ratio is clipped to ``[1 − ε, 1 + ε]``.
        scale_rewards: Divide by the group's reward standard deviation (GRPO); False centres
            only (Dr. GRPO).
        eps: Added to the standard deviation, so a group of equal rewards gives 0, not NaN.
        ent_coef: Weight of the entropy bonus.
        max_grad_norm: Gradients are clipped to this global norm.
        target_kl: Stop the epochs early when the approximate KL to the rollout's policy passes
            ``1.5 × target_kl`` (as SB3's PPO); None never stops.
        stats_window_size: Episodes averaged in the rollout logs.
        tensorboard_log: TensorBoard directory, or None.
        policy_kwargs: Arguments of the policy (e.g. ``lm_policy_kwargs(env)``).
        verbose: 0 silent, 1 training info.
        seed: Seed of the random generators.
        device: Torch device of the policy.
        _init_setup_model: Build the policy now (SB3's ``load`` passes False).
        ratio: ``"sequence"``: one ratio per completion. ``"token"``: one per token, clipped
            per token (its old per-token log-probs from one no-gradient forward over the
            rollout before the update).
        loss_aggregation: How per-token terms (``ratio="token"``, the KL term) are averaged:
            ``"sequence"`` (each completion's mean, then the mean over completions: the GRPO
            paper) or ``"token"`` (the mean over the mini-batch's tokens: DAPO, Yu et al. 2025).
        kl_in_loss: Add ``kl_coef · k3`` per token to the loss (the paper's form); the env's
            β should then be 0.
        kl_coef: β of the k3 term (the paper's 0.04); read only with ``kl_in_loss=True``.
        minibatch_size: Rows per micro-batch: each mini-batch of ``batch_size`` runs as
            micro-batches whose gradients add up to its one optimizer step (the same update
            with less memory held at once). Must divide ``batch_size``; None: one forward.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
        >>> vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=8, group_size=4))
        >>> model = GRPO(LMActorCriticPolicy, vec, batch_size=8)
        >>> _ = model.policy.attach_to(vec)
        >>> _ = model.learn(16)

        The paper's form: per-token ratios, β·k3 in the loss, no KL in the env's reward.

        >>> vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=8, group_size=4, kl_coef=0.0))
        >>> model = GRPO(LMActorCriticPolicy, vec, batch_size=8, ratio="token", kl_in_loss=True)
        >>> _ = model.learn(16)
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        n_steps: int = 1,
        batch_size: int = 64,
        n_epochs: int = 2,
        clip_range: float | Schedule = 0.2,
        scale_rewards: bool = True,
        eps: float = 1e-4,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        ratio: Ratio = "sequence",
        loss_aggregation: LossAggregation = "sequence",
        kl_in_loss: bool = False,
        kl_coef: float = 0.04,
        minibatch_size: int | None = None,
    ) -> None:
        if not isinstance(scale_rewards, bool):
            raise TypeError(
                f"GRPO: scale_rewards={scale_rewards!r} is not a bool; expected True or False."
            )
        if not eps >= 0:
            raise ValueError(f"GRPO: eps={eps!r} must be >= 0, e.g. eps=1e-4.")
        self.scale_rewards = scale_rewards
        self.eps = eps
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            clip_range=clip_range,
            ent_coef=ent_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
            ratio=ratio,
            loss_aggregation=loss_aggregation,
            kl_in_loss=kl_in_loss,
            kl_coef=kl_coef,
            minibatch_size=minibatch_size,
        )

    def group_advantages(self, rewards: np.ndarray) -> np.ndarray:
        """:func:`grpo_advantages` with this run's ``scale_rewards`` and ``eps``."""
        return grpo_advantages(rewards, self.scale_rewards, self.eps)
