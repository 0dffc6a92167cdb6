"""Online PPO on the same reward-model budget: the baseline ``lmgym ilql`` compares against.

ILQL pays one reward-model call per logged episode, once, at collection. Online PPO pays one
per completion it trains on. Given as many calls as the dataset cost, PPO trains
``LMActorCriticPolicy`` on ``LMBandit-v0`` for that many completions, on the same training
prompts, base model and β as the data, with ``lmgym train``'s PPO defaults for the bandit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

__all__ = ["train_online_ppo"]

N_ENVS = 16  # completions sampled together: one generate call per env step


def train_online_ppo(
    model: str | Path, rm_calls: int, *, kl_coef: float, seed: int
) -> tuple[PreTrainedModel, int]:
    """Train PPO from ``model`` for ``rm_calls`` completions; the trained LM and its calls.

    The rollout is ``N_ENVS`` envs × ``n_steps`` (:func:`lmgym.training.algorithms.
    hyperparameters` for ``("LMBandit-v0", "ppo", "lm")``), shortened so that one rollout fits
    in a small budget; SB3 rounds the budget up to whole rollouts, so PPO may spend up to one
    rollout more than ``rm_calls`` (the count returned is what it spent). The env's reward,
    KL and prompts are those the logged episodes were scored with.

    Raises:
        ValueError: ``rm_calls`` is below one rollout of ``N_ENVS`` completions.
    """
    if rm_calls < N_ENVS:
        raise ValueError(
            f"rm_calls={rm_calls} is below one rollout of {N_ENVS} completions; collect or "
            f"load at least {N_ENVS} episodes."
        )
    import gymnasium as gym
    from stable_baselines3 import PPO

    import lmgym  # noqa: F401 - registers the envs
    from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.training.algorithms import hyperparameters

    kwargs: dict[str, Any] = hyperparameters("LMBandit-v0", "ppo", "lm")
    kwargs["n_steps"] = max(1, min(kwargs["n_steps"], rm_calls // N_ENVS))
    kwargs["batch_size"] = min(kwargs["batch_size"], kwargs["n_steps"] * N_ENVS)
    env = SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=N_ENVS,
            model=model,
            kl_coef=kl_coef,
            prompts=corpus_prompts("train"),
        )  # fmt: skip
    )
    env.seed(seed)
    agent = PPO(LMActorCriticPolicy, env, seed=seed, policy_kwargs=lm_policy_kwargs(env),
                **kwargs)  # fmt: skip
    policy: Any = agent.policy  # LMActorCriticPolicy (SB3 types it as its base class)
    policy.attach_to(env)
    agent.learn(rm_calls)
    env.close()
    return policy.lm, int(agent.num_timesteps)
