"""The reward–KL frontier: reward-model score against the KL to the reference, at matched KL.

An RLHF run trades KL for reward: the further the policy moves from the reference model, the
more reward-model score it can buy. Comparing algorithms by their final reward alone rewards the
one that moved furthest; the fair comparison is the reward each reached *at the same KL*
(Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", plot reward against √KL).

A run's evaluation points (:func:`lmgym.training.evaluation.eval_point`: steps, r_φ, KL, all
from the same evaluator on the same held-out episodes) form a path in the (√KL, r_φ) plane.
:func:`reward_at_kl` reads the reward off that path where it first reaches a given KL,
interpolating linearly in √KL between neighbouring points; a KL beyond the largest one the run
reached is not extrapolated (None: missing). :func:`matched_kl` aggregates that over seeds with
the Student-t interval of :func:`lmgym.training.stats.mean_ci`, and :func:`frontier_band` gives
the mean path and its band over seeds for ``frontier.png``.

The KL is the evaluation env's: its ``kl_estimator`` (``k1`` by default, the summed log-ratio of
the sampled completion, whose mean is an unbiased estimate of the sequence KL) summed over the
completion, in nats. A k1 mean can come out slightly below 0 for a policy next to the reference;
such a point counts as √KL = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmgym.training.stats import mean_ci

__all__ = [
    "MATCHED_KLS",
    "check_eval_points",
    "frontier_band",
    "matched_kl",
    "reward_at_kl",
    "run_frontier",
]

MATCHED_KLS = (1.0, 2.0, 4.0)
"""KLs (nats, summed over the completion) at which ``lmgym bench`` reports the reward."""


def check_eval_points(kls: Sequence[float], rewards: Sequence[float]) -> None:
    """Raise a ValueError unless (kls, rewards) are >= 2 finite points of equal length.

    Example:
        >>> check_eval_points([0.0], [0.1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: eval points: got 1 (KL, reward) point, expected at least 2 ... --eval-every 512.
    """
    if len(kls) != len(rewards):
        raise ValueError(
            f"eval points: {len(kls)} KLs but {len(rewards)} rewards; expected one reward per KL."
        )
    if len(kls) < 2:
        noun = "point" if len(kls) == 1 else "points"
        raise ValueError(
            f"eval points: got {len(kls)} (KL, reward) {noun}, expected at least 2 to "
            "interpolate the reward at a matched KL; evaluate more often during training, "
            "e.g. lmgym bench --eval-every 512."
        )
    if not (np.isfinite(kls).all() and np.isfinite(rewards).all()):
        raise ValueError(
            f"eval points: kls={list(kls)!r}, rewards={list(rewards)!r} must all be finite "
            "numbers; an env without a KL penalty (CatGrid-v0) has no reward–KL frontier."
        )


def reward_at_kl(kls: Sequence[float], rewards: Sequence[float], kl: float) -> float | None:
    """The reward where the run's path first reaches ``kl``, linear in √KL; None if it never does.

    The points are taken in training order. The first segment between consecutive points whose
    √KLs enclose √kl gives the reward, interpolated linearly in √KL. A KL above every measured
    one is not extrapolated: None (missing). Negative KL estimates count as 0.

    Args:
        kls: Summed KL to the reference (nats) at each evaluation, in training order.
        rewards: Reward-model score at the same evaluations.
        kl: The KL (nats) to read the reward at (>= 0).

    Example:
        >>> # √KL = 0, 1, 2: at KL = 2.25 (√ = 1.5) halfway between 0.3 and 0.5
        >>> reward_at_kl([0.0, 1.0, 4.0], [0.1, 0.3, 0.5], 2.25)
        0.4
        >>> reward_at_kl([0.0, 1.0, 4.0], [0.1, 0.3, 0.5], 9.0) is None  # beyond the last KL
        True
    """
    check_eval_points(kls, rewards)
    if isinstance(kl, bool) or not isinstance(kl, int | float) or not 0 <= kl < np.inf:
        raise ValueError(f"kl={kl!r} must be a finite number >= 0 (nats), e.g. 2.0.")
    roots = np.sqrt(np.maximum(np.asarray(kls, dtype=float), 0.0))
    values = np.asarray(rewards, dtype=float)
    target = float(np.sqrt(kl))
    for i in range(len(roots) - 1):
        a, b = roots[i], roots[i + 1]
        if a == target:
            return float(values[i])
        if min(a, b) <= target <= max(a, b):
            share = (target - a) / (b - a)
            return float(values[i] + share * (values[i + 1] - values[i]))
    return float(values[-1]) if roots[-1] == target else None


def run_frontier(run: dict[str, Any]) -> tuple[list[float], list[float]]:
    """``(kls, reward-model scores)`` of one run's metrics, in training order.

    Runs recorded before ``eval_points`` existed give their two points, before and after.

    Example:
        >>> run_frontier({"eval_points": [{"steps": 0, "reward_model": 0.1, "kl": 0.0},
        ...                                {"steps": 8, "reward_model": 0.3, "kl": 1.0}]})
        ([0.0, 1.0], [0.1, 0.3])
    """
    if "eval_points" in run:
        points = run["eval_points"]
    else:
        points = [
            {"kl": run["eval_kl_before"], "reward_model": run["eval_reward_model_before"]},
            {"kl": run["eval_kl_after"], "reward_model": run["eval_reward_model_after"]},
        ]
    return [p["kl"] for p in points], [p["reward_model"] for p in points]


def matched_kl(
    runs: Sequence[dict[str, Any]], kls: Sequence[float] = MATCHED_KLS
) -> dict[str, dict[str, Any]]:
    """Per KL in ``kls``: the seeds' mean reward at that KL, its 95% interval, and who reached it.

    ``mean``/``ci95`` are over the runs that reached the KL (``reached`` of ``runs``); None when
    none did. ``per_run`` keeps each run's value (None: missing).

    Example:
        >>> runs = [{"eval_points": [{"kl": 0.0, "reward_model": 0.0},
        ...                          {"kl": k, "reward_model": r}]} for k, r in ((4.0, 0.4),
        ...                                                                     (1.0, 0.2))]
        >>> at = matched_kl(runs, [1.0, 4.0])
        >>> at["1"]["mean"], at["1"]["reached"], at["4"]["reached"]
        (0.2, 2, 1)
    """
    out: dict[str, dict[str, Any]] = {}
    for kl in kls:
        values = [reward_at_kl(*run_frontier(run), kl) for run in runs]
        reached = [v for v in values if v is not None]
        mean, half = mean_ci(reached) if reached else (None, None)
        out[f"{kl:g}"] = {
            "mean": mean,
            "ci95": half,
            "reached": len(reached),
            "runs": len(values),
            "per_run": values,
        }
    return out


def frontier_band(
    runs: Sequence[dict[str, Any]], points: int = 50, confidence: float = 0.95
) -> dict[str, list[float]]:
    """The seeds' mean reward and its band on a common √KL grid, for ``frontier.png``.

    The grid spans the √KL range every run covers (from the largest first point, ~0, to the
    smallest of the runs' largest √KLs), and each run's reward at a grid point is
    :func:`reward_at_kl`'s.

    Example:
        >>> runs = [{"eval_points": [{"kl": 0.0, "reward_model": 0.0},
        ...                          {"kl": 4.0, "reward_model": r}]} for r in (0.2, 0.4)]
        >>> band = frontier_band(runs, points=3)
        >>> band["sqrt_kl"], [round(m, 6) for m in band["mean"]]
        ([0.0, 1.0, 2.0], [0.0, 0.15, 0.3])
    """
    paths = [run_frontier(run) for run in runs]
    start = max(float(np.sqrt(max(kls[0], 0.0))) for kls, _ in paths)
    stop = min(float(np.sqrt(max(max(kls), 0.0))) for kls, _ in paths)
    grid = np.linspace(start, stop, points) if stop > start else np.array([stop])
    band: dict[str, list[float]] = {"sqrt_kl": [], "mean": [], "low": [], "high": []}
    for root in grid:
        values = [reward_at_kl(kls, rewards, float(root**2)) for kls, rewards in paths]
        if any(v is None for v in values):
            continue  # a run whose first points all lie above this √KL (k1 noise): skip
        mean, half = mean_ci([v for v in values if v is not None], confidence)
        band["sqrt_kl"].append(float(root))
        band["mean"].append(mean)
        band["low"].append(mean - (half or 0.0))
        band["high"].append(mean + (half or 0.0))
    return band
