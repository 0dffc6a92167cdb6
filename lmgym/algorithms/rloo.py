"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out baseline."""

from __future__ import annotations

import numpy as np

from lmgym.algorithms.group import GroupAlgorithm

__all__ = ["RLOO", "rloo_advantages"]


def rloo_advantages(rewards: np.ndarray) -> np.ndarray:
    """Leave-one-out advantages ``r_i − mean_{j≠i} r_j`` (..., G), G >= 2.

    Each row of the last axis is one group (the G completions of one prompt). The baseline of
    a completion is the mean of the others' rewards, so it does not depend on the completion
    itself and the REINFORCE estimate stays unbiased (Kool et al. 2019, "Buy 4 REINFORCE
    Samples, Get a Baseline for Free!"). It equals ``G / (G − 1) · (r_i − mean(r))``.

    Example:
        >>> rloo_advantages(np.array([[1.0, 2.0, 6.0]]))
        array([[-3. , -1.5,  4.5]])
    """
    size = rewards.shape[-1]
    assert size >= 2, f"a leave-one-out baseline needs groups of 2 or more, got {size}"
    others = (rewards.sum(axis=-1, keepdims=True) - rewards) / (size - 1)
    return rewards - others


class RLOO(GroupAlgorithm):
    """REINFORCE Leave-One-Out on the grouped ``LMBandit-v0`` vector env.

    Paper: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs"; the baseline is Kool et al. 2019's.

    Each prompt is answered G times (``group_size=G`` envs share it); a completion's advantage
    is its reward minus the mean reward of the other G − 1, and the loss is REINFORCE's
    ``−A · log π(y|x)`` over the whole completion. No value head is trained. The reward is the
    env's, r_φ − β·KL (attach the policy as π_θ with ``model.policy.attach_to(vec)``), as in
    the paper, which also puts the KL penalty in the sequence reward.

    With ``n_epochs > 1`` a rollout is reused after the policy moved; set ``clip_range`` to
    then use PPO's clipped ratio instead of plain REINFORCE (the default, ``clip_range=None``,
    with one epoch, is the paper's on-policy RLOO).

    The loss options are GRPO's: ``ratio="token"`` makes the loss per token (``−A·log π_t``
    for REINFORCE, or a clipped ratio per token with ``clip_range``), averaged as
    ``loss_aggregation`` says; ``kl_in_loss=True`` moves the KL from the env's reward into
    the loss as ``kl_coef · k3`` per token (the paper keeps it in the reward, the default).

    Args:
        policy: The policy class (``LMActorCriticPolicy``) or an SB3 policy name.
        env: An SB3 VecEnv of the grouped bandit env, e.g.
            ``SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=16, group_size=4))``;
            ``group_size`` must be at least 2.
        learning_rate: Adam's learning rate, or a schedule of the remaining progress.
        n_steps: Vector-env steps per rollout; a rollout has ``n_steps × num_envs`` completions.
        batch_size: Mini-batch size (completions) of each gradient step.
        n_epochs: Passes over each rollout.
        clip_range: None: REINFORCE's loss. A float (or schedule) ε: PPO's clipped ratio.
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
        ratio: ``"sequence"`` (the whole completion's log-prob) or ``"token"``.
        loss_aggregation: ``"sequence"`` or ``"token"``: see :class:`~lmgym.algorithms.GRPO`.
        kl_in_loss: Add ``kl_coef · k3`` per token to the loss (then build the env with
            ``kl_coef=0.0``).
        kl_coef: β of the k3 term; read only with ``kl_in_loss=True``.
        minibatch_size: Rows per micro-batch (must divide ``batch_size``); None: one forward.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.agents import LMActorCriticPolicy, SB3VecEnv
        >>> vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=8, group_size=4))
        >>> model = RLOO(LMActorCriticPolicy, vec, batch_size=8)
        >>> _ = model.policy.attach_to(vec)
        >>> _ = model.learn(16)
    """

    def group_advantages(self, rewards: np.ndarray) -> np.ndarray:
        """:func:`rloo_advantages`."""
        return rloo_advantages(rewards)
