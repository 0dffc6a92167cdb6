"""Evaluate an agent on a fixed set of episodes of a separate, seeded env.

Each of the eval env's ``n`` copies plays a fixed share of the episodes (as SB3's
``evaluate_policy`` does), and the env is reset with the same seed every time, so the episodes
before and after training start from the same prompts (cells); on the LM envs those are the
held-out test prompts (:mod:`lmgym.training.algorithms`), and the result lists the ones played. The
agent acts stochastically (it samples, as it does in training) from a torch generator seeded
from the same seed, and the caller's random state is restored afterwards, so evaluating never
changes the training run.

:class:`EvalPointsCallback` repeats that evaluation while training runs, every ``eval_every``
env steps: the (steps, reward, r_φ, KL) points of the reward–KL frontier
(:mod:`lmgym.training.frontier`). Because an evaluation restores every random state it used,
adding points does not change the run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

__all__ = ["EpisodeStats", "EvalPointsCallback", "eval_point", "evaluate_episodes"]


@dataclass
class EpisodeStats:
    """Means over the evaluated episodes.

    Attributes:
        reward: Episode return (LM envs: ``reward_model − β·KL`` summed over the episode).
        kl: KL summed over the episode (LM envs), None for envs without a KL penalty.
        reward_model: Reward-model part of the return (LM envs), None otherwise.
        episodes: Number of episodes.
        kl_form: ``info["kl_form"]`` of the LM env (``policy`` or ``cross_entropy``), else None.
        prompts: The distinct prompts of the episodes, sorted (LM envs), else None: which
            prompts the figures are about.
    """

    reward: float
    kl: float | None
    reward_model: float | None
    episodes: int
    kl_form: str | None
    prompts: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return asdict(self)


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite and len(finite) == len(values) else None


def evaluate_episodes(
    model: BaseAlgorithm, env: VecEnv, episodes: int, *, seed: int
) -> EpisodeStats:
    """Play ``episodes`` episodes of ``env`` with ``model`` and average their return and KL.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from stable_baselines3.common.env_util import make_vec_env
        >>> env = make_vec_env("CatGrid-v0", n_envs=2)
        >>> stats = evaluate_episodes(PPO("MlpPolicy", env), env, 4, seed=0)
        >>> stats.episodes, stats.kl, stats.prompts
        (4, None, None)
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1.")
    n = env.num_envs
    targets = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    done_count = np.zeros(n, dtype=int)
    returns = np.zeros(n)
    kls = np.zeros(n)
    rms = np.zeros(n)
    out_reward: list[float] = []
    out_kl: list[float] = []
    out_rm: list[float] = []
    prompts: set[str] = set()
    kl_form: str | None = None
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # DQN's epsilon-greedy draws from NumPy's global generator
        env.seed(seed)
        obs = env.reset()
        state = None
        starts = np.ones(n, dtype=bool)
        while (done_count < targets).any():
            kwargs: dict[str, object] = {}
            if isinstance(model, MaskablePPO):
                kwargs["action_masks"] = get_action_masks(env)
            if isinstance(model, RecurrentPPO):
                kwargs.update(state=state, episode_start=starts)
            actions, state = model.predict(obs, deterministic=False, **kwargs)  # type: ignore[arg-type]
            obs, rewards, dones, infos = env.step(actions)
            returns += rewards
            for i, info in enumerate(infos):
                kls[i] += float(info.get("kl", np.nan))
                rms[i] += float(info.get("reward_model", np.nan))
                kl_form = info.get("kl_form", kl_form)
                if dones[i]:
                    if done_count[i] < targets[i]:
                        out_reward.append(float(returns[i]))
                        out_kl.append(float(kls[i]))
                        out_rm.append(float(rms[i]))
                        if "prompt" in info:
                            prompts.add(str(info["prompt"]))
                    done_count[i] += 1
                    returns[i] = kls[i] = rms[i] = 0.0
            starts = np.asarray(dones, dtype=bool)
    np.random.set_state(np_state)
    random.setstate(py_state)
    return EpisodeStats(
        reward=float(np.mean(out_reward)),
        kl=_mean_or_none(out_kl),
        reward_model=_mean_or_none(out_rm),
        episodes=len(out_reward),
        kl_form=kl_form,
        prompts=sorted(prompts) if prompts else None,
    )


def eval_point(steps: int, stats: EpisodeStats | dict[str, Any]) -> dict[str, Any]:
    """One point of a run's evaluation curve: env steps trained, reward, r_φ and KL.

    Example:
        >>> eval_point(512, {"reward": 0.2, "reward_model": 0.25, "kl": 2.5, "episodes": 64})
        {'steps': 512, 'reward': 0.2, 'reward_model': 0.25, 'kl': 2.5}
    """
    values = stats.as_dict() if isinstance(stats, EpisodeStats) else stats
    point: dict[str, Any] = {"steps": int(steps)}
    point.update({key: values[key] for key in ("reward", "reward_model", "kl")})
    return point


class EvalPointsCallback(BaseCallback):
    """Evaluate every ``every`` env steps while training; append the points to ``points``.

    The evaluation runs when a rollout starts (after the previous update, so the weights and
    ``num_timesteps`` agree), at the first rollout boundary at or past each multiple of
    ``every``. ``points`` is the run's own list, so a checkpoint taken at the same boundary
    holds the point, and a resumed run goes on from the next multiple.

    Args:
        every: Env steps between evaluations (> 0).
        evaluate: Plays the evaluation episodes (:func:`evaluate_episodes` bound to the run's
            eval env and seed).
        points: The list the points are appended to (:func:`eval_point` dicts, with
            ``eval_s``, the evaluation's wall time).

    Example:
        >>> points = []
        >>> callback = EvalPointsCallback(512, lambda: {"reward": 0.0, "reward_model": 0.0,
        ...                                             "kl": 0.0}, points)
        >>> callback.every
        512
    """

    def __init__(
        self,
        every: int,
        evaluate: Callable[[], EpisodeStats | dict[str, Any]],
        points: list[dict[str, Any]],
    ) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"every={every!r} must be an int > 0 (env steps between evals).")
        self.every = every
        self.evaluate = evaluate
        self.points = points
        self.next_at = every

    def _on_training_start(self) -> None:
        self.next_at = (self.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_at:
            started = time.perf_counter()
            point = eval_point(self.num_timesteps, self.evaluate())
            point["eval_s"] = time.perf_counter() - started  # what the frontier costs the run
            self.points.append(point)
            self.next_at = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True
