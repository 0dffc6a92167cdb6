"""Evaluate an agent on a fixed set of episodes of a separate, seeded env.

Each of the eval env's ``n`` copies plays a fixed share of the episodes (as SB3's
``evaluate_policy`` does), and the env is reset with the same seed every time, so the episodes
before and after training start from the same prompts (cells); on the LM envs those are the
held-out test prompts (:mod:`lmgym.training.algorithms`), and the result lists the ones played. The
agent acts stochastically (it samples, as it does in training) from a torch generator seeded
from the same seed, and the caller's random state is restored afterwards, so evaluating never
changes the training run.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

__all__ = ["EpisodeStats", "evaluate_episodes"]


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
