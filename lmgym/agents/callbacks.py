"""SB3 callbacks that record the parts of an LM env's reward while an agent trains."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["RewardHistory", "RewardPartsCallback"]


@dataclass
class RewardHistory:
    """Per-episode records, in the order episodes ended.

    Attributes:
        timesteps: Env steps taken when the episode ended.
        reward: Total reward of the episode.
        reward_model: Reward-model part (LM envs only; NaN otherwise).
        kl: KL term summed over the episode, Σ_t k_t (LM envs only; NaN otherwise): the
            bandit's ``info["kl"]``, the token env's ``info["episode_kl"]`` on its last step.
        kl_coef: β at the end of the episode (LM envs only; NaN otherwise).
    """

    timesteps: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    reward_model: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    kl_coef: list[float] = field(default_factory=list)

    def smoothed(self, name: str, window: int) -> tuple[np.ndarray, np.ndarray]:
        """``(timesteps, moving average of the named series)`` over ``window`` episodes."""
        values = np.asarray(getattr(self, name), dtype=float)
        steps = np.asarray(self.timesteps)
        if values.size == 0:  # no episode has ended yet: nothing to average
            return steps, values
        if values.size < window:
            window = max(1, values.size)
        kernel = np.ones(window) / window
        return steps[window - 1 :], np.convolve(values, kernel, mode="valid")


class RewardPartsCallback(BaseCallback):
    """Record reward parts of every finished episode and log their means under ``lmgym/``.

    It reads ``info["reward_model"]``, the episode's KL and ``info["kl_coef"]`` from the infos
    SB3 passes to callbacks, on the step that ends each episode, and sums the step rewards into
    the episode return. The episode's KL is ``info["episode_kl"]`` where the env gives one
    (``LMToken-v0``, whose ``info["kl"]`` is the last token's k_t only), else ``info["kl"]``
    (``LMBandit-v0``: one step, the whole completion's KL).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> callback = RewardPartsCallback()
        >>> _ = PPO("MlpPolicy", gym.make("CatGrid-v0"), n_steps=32, batch_size=32).learn(
        ...     64, callback=callback)
        >>> len(callback.history.timesteps) >= 0
        True
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.history = RewardHistory()
        self._returns: np.ndarray | None = None

    def _on_step(self) -> bool:
        rewards = np.asarray(self.locals["rewards"], dtype=float)
        dones = np.asarray(self.locals["dones"], dtype=bool)
        if self._returns is None or self._returns.shape != rewards.shape:
            self._returns = np.zeros_like(rewards)
        self._returns += rewards
        for i, info in enumerate(self.locals["infos"]):
            if not dones[i]:
                continue
            h = self.history
            h.timesteps.append(self.num_timesteps)
            h.reward.append(float(self._returns[i]))
            h.reward_model.append(float(info.get("reward_model", np.nan)))
            # LMToken-v0's "kl" is the last token's k_t; the episode paid Σ_t k_t.
            h.kl.append(float(info.get("episode_kl", info.get("kl", np.nan))))
            h.kl_coef.append(float(info.get("kl_coef", np.nan)))
            self._returns[i] = 0.0
        return True

    def _on_rollout_end(self) -> None:
        h = self.history
        recent = slice(-100, None)
        if not h.reward:
            return
        self.logger.record("lmgym/episode_reward", float(np.mean(h.reward[recent])))
        if np.isfinite(h.kl_coef[-1]):  # an LM env: the reward has parts
            self.logger.record("lmgym/reward_model", float(np.mean(h.reward_model[recent])))
            self.logger.record("lmgym/kl", float(np.mean(h.kl[recent])))
            self.logger.record("lmgym/kl_coef", h.kl_coef[-1])
