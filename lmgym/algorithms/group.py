"""What GRPO and RLOO share: an on-policy algorithm whose baseline is the prompt's group.

Both sample G completions of each prompt (the grouped ``LMBandit-v0`` vector env,
``group_size=G``), score them with the env's reward (r_φ − β·KL) and compare each completion with
the others of its group instead of with a learned value: no value head is trained, and
``vf_coef`` / ``gae_lambda`` do not exist here. They differ only in the advantage (each
subclass's :meth:`GroupAlgorithm.group_advantages`) and in their default loss.

The loss options (a per-sequence or per-token ratio, how tokens are averaged, GRPO's β·k3 term
in the loss, micro-batches) are the same for both; see :class:`GroupAlgorithm`.
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

try:  # SB3 >= 2.7
    from stable_baselines3.common.utils import FloatSchedule as constant_schedule
except ImportError:  # SB3 2.6 (lmgym's floor): the older name of the same wrapper
    from stable_baselines3.common.utils import (  # type: ignore[assignment]
        get_schedule_fn as constant_schedule,
    )

from lmgym.algorithms.losses import (
    LossAggregation,
    Ratio,
    check_choice,
    row_weights,
)
from lmgym.algorithms.minibatches import (
    check_minibatch_size,
    flatten_rollout,
    indexed_minibatches,
    micro_slices,
    take_rows,
)
from lmgym.algorithms.objective import (
    PolicyObjective,
    reference_token_logprobs,
    rollout_token_logprobs,
)

__all__ = ["GroupAlgorithm"]


class GroupAlgorithm(OnPolicyAlgorithm):
    """Base of :class:`~lmgym.algorithms.GRPO` and :class:`~lmgym.algorithms.RLOO`.

    A rollout of ``n_steps`` steps of ``num_envs = groups × group_size`` envs is
    ``n_steps × groups`` groups: every bandit step ends every episode, so the completions of one
    step and one group answer one prompt. After each rollout the buffer's advantages are
    replaced by :meth:`group_advantages` of its rewards, then ``n_epochs`` passes of mini-batches
    of ``batch_size`` minimise the loss (the clipped surrogate when ``clip_range`` is set,
    REINFORCE's otherwise) plus ``ent_coef`` times the entropy loss, plus with ``kl_in_loss``
    β·k3 to the reference per token.

    ``ratio="sequence"`` (the default) takes one ratio per completion, over its summed token
    log-probs; ``ratio="token"`` one per token, clipped per token, with the completion's
    advantage on each of its tokens (the GRPO paper, TRL); its "old" per-token log-probs come
    from one no-gradient forward over the rollout before the update. ``loss_aggregation`` says
    how per-token terms are averaged (see :func:`~lmgym.algorithms.losses.row_weights`).

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
        *,
        ratio: Ratio = "sequence",
        loss_aggregation: LossAggregation = "sequence",
        kl_in_loss: bool = False,
        kl_coef: float = 0.04,
        minibatch_size: int | None = None,
    ) -> None:
        # Every argument is checked before anything is built.
        name = type(self).__name__
        for arg, value in (("batch_size", batch_size), ("n_epochs", n_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg}={value!r} must be an int >= 1, e.g. {arg}=2.")
        check_choice(name, "ratio", ratio, Ratio)
        check_choice(name, "loss_aggregation", loss_aggregation, LossAggregation)
        if not isinstance(kl_in_loss, bool):
            raise TypeError(
                f"{name}: kl_in_loss={kl_in_loss!r} is not a bool; expected True (β·k3 to the "
                "reference in the loss) or False (the KL stays in the env's reward)."
            )
        if isinstance(kl_coef, bool) or not isinstance(kl_coef, int | float) or not kl_coef >= 0:
            raise ValueError(
                f"{name}: kl_coef={kl_coef!r} must be a number >= 0 (β of the k3 term with "
                "kl_in_loss=True), e.g. kl_coef=0.04."
            )
        check_minibatch_size(name, minibatch_size, batch_size)
        self.ratio: Ratio = ratio
        self.loss_aggregation: LossAggregation = loss_aggregation
        self.kl_in_loss = kl_in_loss
        self.kl_coef = float(kl_coef)
        self.minibatch_size = minibatch_size
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
        self._warn_if_the_kl_counts_twice()

    def _setup_model(self) -> None:
        super()._setup_model()
        name = type(self).__name__
        if self.env is not None:  # SB3's load restores a saved group_size: take the env's
            self.group_size = self._find_group_size()
        self.clip_range = (
            constant_schedule(self.clip_range) if self.clip_range is not None else None
        )
        if (self.ratio == "token" or self.kl_in_loss) and not hasattr(
            self.policy, "evaluate_actions_per_token"
        ):
            raise ValueError(
                f"{name}: ratio={self.ratio!r} with kl_in_loss={self.kl_in_loss} needs per-token "
                f"log-probs, which {type(self.policy).__name__} does not serve; expected "
                "lmgym's LMActorCriticPolicy."
            )
        # The loss is chosen once, here: clipped when a clip range is set, REINFORCE otherwise.
        self._objective = PolicyObjective(
            self.ratio,
            self.loss_aggregation,
            clipped=self.clip_range is not None,
            kl_coef=self.kl_coef if self.kl_in_loss else 0.0,
        )
        if self.clip_range is None and self.n_epochs > 1:
            warnings.warn(
                f"{name}: n_epochs={self.n_epochs} without clip_range reuses "
                "each rollout for REINFORCE steps that ignore how far the policy moved; "
                "set clip_range (e.g. 0.2) to clip the ratio as PPO does.",
                UserWarning,
                stacklevel=3,
            )
        self._warn_if_the_kl_counts_twice()

    def _warn_if_the_kl_counts_twice(self) -> None:
        """With ``kl_in_loss``, the env's own KL penalty should be off (β = 0)."""
        if not self.kl_in_loss or self.env is None:
            return
        env_beta = float(self.env.get_attr("rewarder")[0].controller.value)
        if env_beta > 0:
            warnings.warn(
                f"{type(self).__name__}: kl_in_loss=True adds β·k3 to the loss, and the env "
                f"also subtracts β·KL from the reward (its kl_coef is {env_beta}): the KL to the "
                "reference counts twice. Build the env with kl_coef=0.0 (as TRL's GRPO, whose "
                "reward is r_φ alone), or keep kl_in_loss=False.",
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

    def _rollout_token_logprobs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The rollout's per-token log-probs under π_old and π_ref, where the loss needs them."""
        objective = self._objective
        if not (objective.needs_old_tokens or objective.kl_coef > 0):
            return None, None
        buffer = self.rollout_buffer
        flatten_rollout(buffer)
        observations = buffer.to_torch(buffer.observations)
        actions = buffer.to_torch(buffer.actions)
        chunk = self.minibatch_size or self.batch_size
        old_tokens = ref_tokens = None
        if objective.needs_old_tokens:
            old_tokens = rollout_token_logprobs(self.policy, observations, actions, chunk)
        if objective.kl_coef > 0:
            assert self.env is not None, "a rollout came from an env"
            mask = self.policy.action_token_mask(actions)  # type: ignore[operator]
            models = self.env.get_attr("models")[0]  # the env's one frozen π_ref
            ref_tokens = reference_token_logprobs(models, observations, actions, mask, chunk)
        return old_tokens, ref_tokens

    def train(self) -> None:
        """Update the policy on the rollout, with group advantages in place of GAE's."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip = 0.0 if self.clip_range is None else self.clip_range(progress)  # type: ignore[operator]
        buffer = self.rollout_buffer
        rewards = buffer.rewards  # (n_steps, num_envs), before the buffer is flattened
        buffer.advantages = self._advantages(rewards).astype(np.float32)
        groups = rewards.reshape(-1, self.group_size)
        old_tokens, ref_tokens = self._rollout_token_logprobs()
        objective = self._objective
        entropy_losses, pg_losses, kl_losses, approx_kls = [], [], [], []
        clipped = ratios = 0.0
        loss_value = 0.0
        continue_training = True
        for _epoch in range(self.n_epochs):
            for rows, data in indexed_minibatches(buffer, self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                token_weights = None
                if objective.needs_token_mask:
                    mask = self.policy.action_token_mask(actions)  # type: ignore[operator]
                    token_weights = row_weights(mask.float(), self.loss_aggregation)
                n_rows = len(rows)
                self.policy.optimizer.zero_grad()
                pg_loss = entropy_loss = kl_loss = approx_kl = loss_value = 0.0
                for part in micro_slices(n_rows, self.minibatch_size):
                    micro = take_rows(data, part)
                    share = (part.stop - part.start) / n_rows
                    out = objective(
                        self.policy,
                        micro.observations,
                        actions[part],
                        micro.advantages,
                        micro.old_log_prob,
                        share=share,
                        clip=clip,
                        token_weights=None if token_weights is None else token_weights[part],
                        old_tokens=None if old_tokens is None else old_tokens[rows[part]],
                        ref_tokens=None if ref_tokens is None else ref_tokens[rows[part]],
                    )
                    entropy = -out.log_prob if out.entropy is None else out.entropy
                    part_entropy_loss = -torch.mean(entropy) * share
                    loss = out.policy_loss + out.kl_loss + self.ent_coef * part_entropy_loss
                    loss.backward()
                    with torch.no_grad():
                        kl = torch.mean(torch.exp(out.log_ratio) - 1 - out.log_ratio) * share
                    pg_loss += out.policy_loss.item()
                    entropy_loss += part_entropy_loss.item()
                    kl_loss += out.kl_loss.item()
                    approx_kl += kl.item()
                    loss_value += loss.item()
                    clipped += out.clipped
                    ratios += out.ratios
                pg_losses.append(pg_loss)
                entropy_losses.append(entropy_loss)
                kl_losses.append(kl_loss)
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    self.policy.optimizer.zero_grad()  # stop before this mini-batch's step
                    break
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        self.logger.record("train/loss", loss_value)
        self.logger.record("train/group_reward_std", float(np.mean(groups.std(axis=1))))
        # Groups whose completions all scored alike teach nothing (zero advantage).
        self.logger.record("train/flat_groups", float(np.mean(np.ptp(groups, axis=1) == 0)))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if self.kl_in_loss:
            self.logger.record("train/kl_loss", np.mean(kl_losses))  # β · aggregated k3
        if self.clip_range is not None:
            # Per completion with ratio="sequence", per counted token with ratio="token".
            self.logger.record("train/clip_fraction", clipped / max(ratios, 1.0))
            self.logger.record("train/clip_range", clip)
