"""What GRPO and RLOO share: an on-policy algorithm whose baseline is the prompt's group.

Both sample G completions of each prompt (the grouped ``LMBandit-v0`` vector env,
``group_size=G``), score them with the env's reward (r_φ − β·KL) and compare each completion with
the others of its group instead of with a learned value: no value head is trained, and
``vf_coef`` / ``gae_lambda`` do not exist here. They differ only in the advantage (each
subclass's :meth:`GroupAlgorithm.group_advantages`) and in their default loss.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule

__all__ = ["GroupAlgorithm", "clipped_surrogate", "reinforce_surrogate"]


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
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return -torch.min(unclipped, clipped).mean(), ratio


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
    ratio = torch.exp(log_prob.detach() - old_log_prob)  # for the logs only
    return -(advantages * log_prob).mean(), ratio


class GroupAlgorithm(OnPolicyAlgorithm):
    """Base of :class:`~lmgym.algorithms.GRPO` and :class:`~lmgym.algorithms.RLOO`.

    A rollout of ``n_steps`` steps of ``num_envs = groups × group_size`` envs is
    ``n_steps × groups`` groups: every bandit step ends every episode, so the completions of one
    step and one group answer one prompt. After each rollout the buffer's advantages are
    replaced by :meth:`group_advantages` of its rewards, then ``n_epochs`` passes of mini-batches
    of ``batch_size`` minimise the loss (the clipped surrogate when ``clip_range`` is set,
    REINFORCE's otherwise) plus ``ent_coef`` times the entropy loss.

    The ratio is one per completion, over its summed token log-probs (what the policy's
    ``evaluate_actions`` returns): per-token ratios and clipping need per-token log-probs from
    the policy, which it does not expose yet.

    See :class:`~lmgym.algorithms.GRPO` for the arguments.
    """

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        n_steps: int = 1,
        batch_size: int = 64,
        n_epochs: int = 1,
        clip_range: float | Schedule | None = None,
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
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=1.0,  # one step per episode: nothing to discount
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.MultiDiscrete, spaces.Discrete, spaces.Box),
        )
        name = type(self).__name__
        for arg, value in (("batch_size", batch_size), ("n_epochs", n_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg}={value!r} must be an int >= 1, e.g. {arg}=2.")
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.target_kl = target_kl
        self.group_size = 0
        if self.env is not None:
            self.group_size = self._find_group_size()
        if _init_setup_model:
            self._setup_model()

    def _find_group_size(self) -> int:
        """The env's ``group_size``, refused unless it is at least 2."""
        assert self.env is not None
        name = type(self).__name__
        fix = (
            f"build the env as SB3VecEnv(gym.make_vec('LMBandit-v0', num_envs=16, "
            f"group_size=4)) (lmgym.agents.SB3VecEnv): {name}'s baseline is the other "
            "completions of the same prompt"
        )
        try:
            group_size = int(self.env.get_attr("group_size")[0])
        except AttributeError:
            raise ValueError(
                f"{name} needs a grouped env and {type(self.env).__name__} has no group_size; "
                f"{fix}."
            ) from None
        if group_size < 2:
            raise ValueError(f"{name} needs group_size >= 2, and the env has {group_size}; {fix}.")
        return group_size

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Use ``env`` from now on; it must be grouped too (its ``group_size`` is taken)."""
        super().set_env(env, force_reset)
        self.group_size = self._find_group_size()

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.env is not None:  # SB3's load restores a saved group_size: take the env's
            self.group_size = self._find_group_size()
        self.clip_range = FloatSchedule(self.clip_range) if self.clip_range is not None else None
        # The loss is chosen once, here: clipped when a clip range is set, REINFORCE otherwise.
        self._surrogate = reinforce_surrogate if self.clip_range is None else clipped_surrogate
        if self.clip_range is None and self.n_epochs > 1:
            warnings.warn(
                f"{type(self).__name__}: n_epochs={self.n_epochs} without clip_range reuses "
                "each rollout for REINFORCE steps that ignore how far the policy moved; "
                "set clip_range (e.g. 0.2) to clip the ratio as PPO does.",
                UserWarning,
                stacklevel=3,
            )

    @abstractmethod
    def group_advantages(self, rewards: np.ndarray) -> np.ndarray:
        """Advantages (..., G) of rewards (..., G), one group per row."""

    def _advantages(self, rewards: np.ndarray) -> np.ndarray:
        """The advantages of a rollout's rewards (n_steps, num_envs), grouped by env index."""
        steps, n_envs = rewards.shape
        grouped = rewards.reshape(steps, n_envs // self.group_size, self.group_size)
        return self.group_advantages(grouped).reshape(steps, n_envs)

    def train(self) -> None:
        """Update the policy on the rollout, with group advantages in place of GAE's."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip = 0.0 if self.clip_range is None else self.clip_range(progress)  # type: ignore[operator]
        buffer = self.rollout_buffer
        rewards = buffer.rewards  # (n_steps, num_envs), before get() flattens it
        buffer.advantages = self._advantages(rewards).astype(np.float32)
        groups = rewards.reshape(-1, self.group_size)
        entropy_losses, pg_losses, clip_fractions, approx_kls = [], [], [], []
        loss = torch.zeros(())
        continue_training = True
        for _epoch in range(self.n_epochs):
            for data in buffer.get(self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                _, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
                policy_loss, ratio = self._surrogate(
                    log_prob, data.old_log_prob, data.advantages, clip
                )
                entropy_loss = -torch.mean(-log_prob if entropy is None else entropy)
                loss = policy_loss + self.ent_coef * entropy_loss
                with torch.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl = torch.mean(torch.exp(log_ratio) - 1 - log_ratio).item()
                pg_losses.append(policy_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip).float()).item())
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/group_reward_std", float(np.mean(groups.std(axis=1))))
        # Groups whose completions all scored alike teach nothing (zero advantage).
        self.logger.record("train/flat_groups", float(np.mean(np.ptp(groups, axis=1) == 0)))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if self.clip_range is not None:
            self.logger.record("train/clip_fraction", np.mean(clip_fractions))
            self.logger.record("train/clip_range", clip)
