"""Best-of-n of the initial policy: the reward–KL baseline that needs no training.

Best-of-n samples n completions of a prompt from the initial (reference) model and keeps the one
the reward model scores highest. Its reward rises with n and so does its distance from the
reference, which makes it the baseline every RL algorithm's frontier should beat at matched KL.

**Reward.** One batch of ``N = max(ns)`` completions per prompt is sampled once (one ``generate``
call per ``batch_size`` completions, all prompts together) and scored by the env's reward. The
best-of-n reward of a prompt is then the mean of the best of n over *every* n-subset of its N
samples, ``Σ_i r_(i) · C(i−1, n−1) / C(N, n)`` with the scores sorted ascending: an unbiased
estimate of E[max of n draws], with less variance than one draw of n. For n = 1 it is the mean
of all samples, the plain policy's mean reward.

**KL.** ``log n − (n−1)/n`` (:func:`kl_bound`) is the KL of best-of-n from the reference when
no two completions tie in reward; Beirami et al. 2024 ("Theoretical guarantees on the best-of-n
alignment policy") show it is an upper bound, far from tight when rewards tie or the
distribution is concentrated. :func:`kl_estimate` is a plug-in estimate instead: with ties
broken at random, best-of-n changes only the distribution of the reward *level*, from q_j to
``F_j^n − F_{j−1}^n`` (F the cumulative of q), so its KL is that of the levels,
``Σ_j p_j log(p_j / q_j)``, here computed on each prompt's N samples and averaged over prompts.
It is exact for a reward with few distinct values (the default lexicon score) once N resolves
them; for a continuous reward it approaches the bound as N grows and is biased low as n nears N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BEST_OF_N",
    "best_of_n",
    "expected_best",
    "kl_bound",
    "kl_estimate",
    "sample_rewards",
]

BEST_OF_N = (1, 2, 4, 8, 16, 32, 64)
"""The n of ``lmgym bench``'s best-of-n baseline."""


def kl_bound(n: int) -> float:
    """``log n − (n−1)/n``: the analytic KL of best-of-n from its base policy (an upper bound).

    Example:
        >>> kl_bound(1), round(kl_bound(2), 6), round(math.log(2) - 0.5, 6)
        (0.0, 0.193147, 0.193147)
    """
    _check_n(n)
    return math.log(n) - (n - 1) / n


def expected_best(rewards: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the mean over all n-subsets of its samples of the best reward in the subset.

    Args:
        rewards: (P, N) rewards of N samples of each of P prompts.
        n: Subset size, 1 <= n <= N.

    Example:
        >>> r = np.array([[0.0, 1.0, 2.0, 3.0]])
        >>> expected_best(r, 1), expected_best(r, 4)
        (array([1.5]), array([3.]))
        >>> expected_best(r, 2)  # pairs: max 1,2,3,2,3,3 -> 14/6
        array([2.33333333])
    """
    rewards = _check_rewards(rewards, n)
    size = rewards.shape[1]
    weights = np.array([math.comb(i - 1, n - 1) for i in range(1, size + 1)], dtype=float)
    weights /= math.comb(size, n)  # sums to 1: C(N, n) = Σ_i C(i−1, n−1)
    return np.sort(rewards, axis=1) @ weights


def kl_estimate(rewards: np.ndarray, n: int) -> float:
    """Plug-in KL of best-of-n from the base policy, from its samples' reward levels (nats).

    Per prompt, the N samples' distinct rewards are the levels, with empirical masses q_j and
    cumulative F_j; best-of-n puts ``p_j = F_j^n − F_{j−1}^n`` on level j, and its KL is
    ``Σ_j p_j log(p_j / q_j)`` (ties broken at random leave the distribution within a level
    unchanged). The mean over prompts is returned.

    Example:
        >>> kl_estimate(np.array([[0.0, 1.0, 2.0, 3.0]]), 1)
        0.0
        >>> kl_estimate(np.array([[0.5, 0.5, 0.5, 0.5]]), 4)  # all tied: nothing to pick
        0.0
        >>> # two levels, q = (1/2, 1/2); best of 2 picks the top one w.p. 3/4
        >>> p = np.array([0.25, 0.75])
        >>> round(kl_estimate(np.array([[0.0, 0.0, 1.0, 1.0]]), 2), 6) == round(
        ...     float(p @ np.log(p / 0.5)), 6)
        True
    """
    rewards = _check_rewards(rewards, n)
    total = 0.0
    for row in rewards:
        _, counts = np.unique(row, return_counts=True)  # levels ascending
        q = counts / row.size
        cumulative = np.cumsum(q)
        p = cumulative**n - np.concatenate([[0.0], cumulative[:-1]]) ** n
        kept = p > 0
        total += float(np.sum(p[kept] * np.log(p[kept] / q[kept])))
    return max(total / len(rewards), 0.0)  # rounding can leave -1e-17


def sample_rewards(
    env: Any, prompts: Sequence[Any], samples: int, *, seed: int, batch_size: int = 512
) -> np.ndarray:
    """(P, samples) reward-model scores of completions sampled from ``env``'s initial LM.

    The prompts are repeated ``samples`` times each (prompt-major) and sampled in batches of
    ``batch_size`` completions, one ``generate`` call each, from torch's generator seeded with
    ``seed``; each batch is scored by the env's own reward (``env.rewarder``, as in training),
    without touching its β.

    Args:
        env: An unwrapped ``LMBandit-v0`` env (or its vector env) on the initial model.
        prompts: The prompts (the held-out ones in ``lmgym bench``).
        samples: Completions per prompt (N).
        seed: Seeds the sampling.
        batch_size: Completions per ``generate`` call.
    """
    import torch

    from lmgym.evaluation import lm_sampler, prompt_observations
    from lmgym.models.generation import DecodingConfig
    from lmgym.seeding import set_seed

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples={samples!r} must be an int >= 1 (completions per prompt).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1, e.g. 512.")
    repeated = [p for p in prompts for _ in range(samples)]
    observations = prompt_observations(env, repeated)
    texts = [env.prompt_source.prepare(p)[0] for p in repeated]
    act = lm_sampler(env, DecodingConfig(max_new_tokens=env.max_new_tokens))
    scores = []
    with torch.random.fork_rng(devices=[]):
        set_seed(seed)
        for start in range(0, len(repeated), batch_size):
            chunk = slice(start, start + batch_size)
            actions = act(observations[chunk])
            batch = env.rewarder(
                texts[chunk], observations[chunk], actions, update_controller=False
            )
            scores.append(np.asarray(batch.reward_model, dtype=float))
    return np.concatenate(scores).reshape(len(prompts), samples)


def best_of_n(rewards: np.ndarray, ns: Sequence[int] = BEST_OF_N) -> dict[str, Any]:
    """The best-of-n curve of (P, N) sampled rewards: reward, KL bound and KL estimate per n.

    Example:
        >>> curve = best_of_n(np.array([[0.0, 1.0], [2.0, 2.0]]), [1, 2])
        >>> curve["reward"], curve["kl_bound"][0], curve["prompts"], curve["samples"]
        ([1.25, 1.5], 0.0, 2, 2)
    """
    rewards = np.asarray(rewards, dtype=float)
    return {
        "n": [int(n) for n in ns],
        "reward": [float(expected_best(rewards, n).mean()) for n in ns],
        "kl_bound": [kl_bound(n) for n in ns],
        "kl_estimate": [kl_estimate(rewards, n) for n in ns],
        "prompts": int(rewards.shape[0]),
        "samples": int(rewards.shape[1]),
    }


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n={n!r} must be an int >= 1 (completions to pick the best of).")


def _check_rewards(rewards: np.ndarray, n: int) -> np.ndarray:
    _check_n(n)
    rewards = np.asarray(rewards, dtype=float)
    if rewards.ndim != 2 or rewards.size == 0:
        raise ValueError(
            f"rewards of shape {rewards.shape} must be 2-D (prompts, samples) and non-empty."
        )
    if n > rewards.shape[1]:
        raise ValueError(
            f"n={n} is more than the {rewards.shape[1]} samples per prompt; expected n <= "
            f"{rewards.shape[1]}, or sample more completions per prompt."
        )
    if not np.isfinite(rewards).all():
        raise ValueError("rewards must all be finite numbers; got NaN or inf.")
    return rewards
