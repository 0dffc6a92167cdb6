"""LMPPO: SB3's PPO with a per-token ratio option and micro-batches, for the LM policy."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import explained_variance

from lmgym.algorithms.losses import Ratio, check_choice, row_weights
from lmgym.algorithms.minibatches import (
    check_minibatch_size,
    flatten_rollout,
    indexed_minibatches,
    micro_slices,
    take_rows,
)
from lmgym.algorithms.objective import PolicyObjective, rollout_token_logprobs

__all__ = ["LMPPO"]

logger = logging.getLogger(__name__)


class LMPPO(PPO):
    """PPO whose ratio is per completion (SB3's) or per token, with optional micro-batches.

    Paper: Schulman et al. 2017, "Proximal Policy Optimization Algorithms"; the per-token form
    is InstructGPT's (Ouyang et al. 2022) and TRL's.

    On ``LMBandit-v0`` an action is a whole completion, so SB3's PPO clips one ratio per
    completion, ``π_θ(y|x) / π_old(y|x)`` with the log-probs summed over its tokens. A long
    completion's ratio is the product of all its tokens' ratios, so it leaves ``1 ± ε`` much
    sooner than any one token's, and a few moved tokens clip the whole completion.

    - ``ratio="sequence"``: that, numerically the same as SB3's ``PPO`` (same seed, same
      weights after an update; tests/algorithms/test_ppo.py).
    - ``ratio="token"``: a ratio per token, ``r_t = exp(log π_θ(y_t | x, y_<t) − log
      π_old(y_t | x, y_<t))``, clipped per token, with the completion's advantage on each of
      its tokens. The loss is averaged over all the completion tokens of the mini-batch (each
      counted token weighs the same, as in TRL's PPO). ``π_old``'s per-token log-probs come
      from one no-gradient forward over the rollout before the update (the buffer keeps only
      their sums); ``train/clip_fraction`` is then the fraction of tokens clipped.
      ``train/approx_kl`` (and ``target_kl``) stay on the whole completion's log-ratio in both
      modes. Needs the LM policy's per-token log-probs
      (:meth:`~lmgym.agents.LMActorCriticPolicy.evaluate_actions_per_token`).

    The value loss, the entropy bonus, advantage normalisation, value clipping and every other
    argument are SB3's PPO's.

    ``minibatch_size`` runs each mini-batch of ``batch_size`` as micro-batches of that many
    rows, accumulating their gradients into the one optimizer step of the mini-batch (the
    losses are weighted by the whole mini-batch, so the gradient is the same up to float
    rounding). It bounds the activations held at once, for a large ``batch_size`` on a large
    model.

    Args:
        policy: The policy class (``LMActorCriticPolicy``) or an SB3 policy name.
        env: The env (``LMBandit-v0``, or its vector env).
        ratio: ``"sequence"`` or ``"token"`` (see above).
        minibatch_size: Rows per micro-batch; must divide ``batch_size``. None: one forward
            per mini-batch, as SB3's PPO.
        **kwargs: SB3's :class:`~stable_baselines3.PPO` arguments (``n_steps``,
            ``batch_size``, ``n_epochs``, ``clip_range``, ``learning_rate``, ...).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs
        >>> env = gym.make("LMBandit-v0")
        >>> model = LMPPO(LMActorCriticPolicy, env, ratio="token", n_steps=8, batch_size=8,
        ...               minibatch_size=4, policy_kwargs=lm_policy_kwargs(env))
        >>> _ = model.policy.attach_to(env)
        >>> _ = model.learn(8)
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
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
        minibatch_size: int | None = None,
    ) -> None:
        # Checked before anything is built or trained.
        check_choice("LMPPO", "ratio", ratio, Ratio)
        check_minibatch_size("LMPPO", minibatch_size, batch_size)
        self.ratio: Ratio = ratio
        self.minibatch_size = minibatch_size
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.ratio == "token" and not hasattr(self.policy, "evaluate_actions_per_token"):
            raise ValueError(
                f"LMPPO: ratio='token' needs per-token log-probs, which "
                f"{type(self.policy).__name__} does not serve; expected lmgym's "
                "LMActorCriticPolicy, or ratio='sequence'."
            )
        # The loss is chosen once, here (every token of the mini-batch weighs the same).
        self._objective = PolicyObjective(self.ratio, "token", clipped=True)

    def train(self) -> None:
        """Update the policy on the rollout: SB3's PPO, with the chosen ratio and micro-batches."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_vf = None
        if self.clip_range_vf is not None:
            clip_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        buffer = self.rollout_buffer
        old_tokens = None
        if self._objective.needs_old_tokens:
            flatten_rollout(buffer)
            old_tokens = rollout_token_logprobs(
                self.policy,
                buffer.to_torch(buffer.observations),
                buffer.to_torch(buffer.actions),
                self.minibatch_size or self.batch_size,
            )
        entropy_losses: list[float] = []
        pg_losses: list[float] = []
        value_losses: list[float] = []
        approx_kls: list[float] = []
        clipped = ratios = 0.0
        loss_value = 0.0
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kls = []
            for rows, data in indexed_minibatches(buffer, self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                advantages = data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                token_weights = None
                if self._objective.needs_token_mask:
                    mask = self.policy.action_token_mask(actions)  # type: ignore[operator]
                    token_weights = row_weights(mask.float(), "token")
                n_rows = len(advantages)
                self.policy.optimizer.zero_grad()
                pg_loss = value_loss = entropy_loss = approx_kl = loss_value = 0.0
                for part in micro_slices(n_rows, self.minibatch_size):
                    micro = take_rows(data, part)
                    share = (part.stop - part.start) / n_rows
                    out = self._objective(
                        self.policy,
                        micro.observations,
                        actions[part],
                        advantages[part],
                        micro.old_log_prob,
                        share=share,
                        clip=clip,
                        token_weights=None if token_weights is None else token_weights[part],
                        old_tokens=None if old_tokens is None else old_tokens[rows[part]],
                    )
                    values = out.values.flatten()
                    if clip_vf is not None:
                        values = micro.old_values + torch.clamp(
                            values - micro.old_values, -clip_vf, clip_vf
                        )
                    part_value_loss = F.mse_loss(micro.returns, values) * share
                    if out.entropy is None:
                        part_entropy_loss = -torch.mean(-out.log_prob) * share
                    else:
                        part_entropy_loss = -torch.mean(out.entropy) * share
                    loss = (
                        out.policy_loss
                        + self.ent_coef * part_entropy_loss
                        + self.vf_coef * part_value_loss
                    )
                    loss.backward()
                    with torch.no_grad():
                        kl = torch.mean(torch.exp(out.log_ratio) - 1 - out.log_ratio) * share
                    pg_loss += out.policy_loss.item()
                    value_loss += part_value_loss.item()
                    entropy_loss += part_entropy_loss.item()
                    approx_kl += kl.item()
                    loss_value += loss.item()
                    clipped += out.clipped
                    ratios += out.ratios
                pg_losses.append(pg_loss)
                value_losses.append(value_loss)
                entropy_losses.append(entropy_loss)
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    self.policy.optimizer.zero_grad()  # SB3 stops before this step's update
                    logger.info("early stop in epoch %d: approx_kl %.3f", epoch, approx_kl)
                    break
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        # Per completion with ratio="sequence", per counted token with ratio="token".
        self.logger.record("train/clip_fraction", clipped / max(ratios, 1.0))
        self.logger.record("train/loss", loss_value)
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip)
        if clip_vf is not None:
            self.logger.record("train/clip_range_vf", clip_vf)
