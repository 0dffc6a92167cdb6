"""Envs on the tiny test model, and the fixed rollout that compares an env with its twin.

Shared by the reliability tests: after a refused call, an env must continue exactly like a twin
env that never saw it (:func:`rollout` of both gives the same steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmgym.agents import lm_logprobs, lm_token_logprobs
from lmgym.envs.bandit import LMBanditEnv
from lmgym.envs.bandit_vector import LMBanditVectorEnv
from lmgym.envs.token import LMTokenEnv
from lmgym.envs.token_vector import LMTokenVectorEnv
from lmgym.error import Error

PROMPTS = ["the food was", "i thought the staff were", "the soup is", "the service was very"]
P, T = 8, 4
PAD, BOS, EOS = 0, 1, 2
GREAT, FOOD = 12, 5  # ids of "great" and "food" in the tiny test tokenizer
CLEAR_ERRORS = (ValueError, TypeError, Error)
ENV_CLASSES = {"bandit": LMBanditEnv, "token": LMTokenEnv}
VECTOR_CLASSES = {"bandit": LMBanditVectorEnv, "token": LMTokenVectorEnv}


def count_great(prompts: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("great")) for c in completions]


def make_env(kind: str, tiny_lm_dir: Path, **kwargs: Any) -> LMBanditEnv | LMTokenEnv:
    kwargs = {"model": tiny_lm_dir, "prompts": PROMPTS, "reward_fn": count_great,
              "max_prompt_tokens": P, "max_new_tokens": T, **kwargs}  # fmt: skip
    return ENV_CLASSES[kind](**kwargs)


def make_vec(kind: str, tiny_lm_dir: Path, n: int = 3, **kwargs: Any) -> Any:
    kwargs = {"model": tiny_lm_dir, "prompts": PROMPTS, "reward_fn": count_great,
              "max_prompt_tokens": P, "max_new_tokens": T, **kwargs}  # fmt: skip
    return VECTOR_CLASSES[kind](num_envs=n, **kwargs)


def make_adaptive(kind: str, tiny_lm_dir: Path, vector: bool = False, **kwargs: Any) -> Any:
    """An env whose β moves after every finished episode (π_θ = the initial model, so KL = 0)."""
    kwargs = {"kl_target": 3.0, "kl_horizon": 20, "kl_batch_size": 1, **kwargs}
    env = make_vec(kind, tiny_lm_dir, **kwargs) if vector else make_env(kind, tiny_lm_dir, **kwargs)
    attach = lm_logprobs if kind == "bandit" else lm_token_logprobs
    env.attach_policy(attach(env.models.model, env.models))
    return env


def token_schedule(step: int) -> int:
    """A fixed action sequence with short, EOS-ended and length-limited episodes."""
    return (GREAT, FOOD, EOS, GREAT, GREAT, GREAT, GREAT, EOS)[step % 8]


def rollout(env: Any, steps: int = 10) -> list[tuple]:
    """Continue ``env`` without seeding: unseeded resets, fixed actions; what each step gave."""
    out: list[tuple] = []
    if isinstance(env, LMBanditEnv):
        for i in range(steps):
            _, info = env.reset()
            action = np.full(T, GREAT if i % 2 else FOOD)
            obs, reward, *_, info = env.step(action)
            out.append((obs.tolist(), reward, info["prompt"], info["kl_coef"]))
    elif isinstance(env, LMTokenEnv):
        done = True
        for i in range(steps):
            if done:
                _, info = env.reset()
            obs, reward, terminated, truncated, info = env.step(token_schedule(i))
            done = terminated or truncated
            out.append((obs.tolist(), reward, done, info["prompt"], info["kl_coef"]))
    else:  # a vector env
        for i in range(steps):
            if isinstance(env, LMBanditVectorEnv):
                actions = np.full((env.num_envs, T), GREAT if i % 2 else FOOD)
            else:
                actions = np.array([token_schedule(i + j) for j in range(env.num_envs)])
            obs, reward, terminated, _, info = env.step(actions)
            out.append((obs.tolist(), reward.tolist(), terminated.tolist(),
                        info["prompt"].tolist()))  # fmt: skip
    return out
