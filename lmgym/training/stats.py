"""Statistics of a benchmark: means with Student-t confidence intervals, curves, thresholds.

With 5 seeds the normal approximation (±1.96 standard errors) is too narrow: the 95% interval of
a mean of ``n`` values is ``mean ± t_{0.975, n-1} · s / √n`` (``t_{0.975, 4} = 2.776``). See
Henderson et al. 2018, "Deep Reinforcement Learning that Matters", on reporting seed variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lmgym.agents.callbacks import RewardHistory

__all__ = [
    "CURVE_POINTS",
    "CURVE_WINDOW",
    "aggregate_curves",
    "mean_ci",
    "steps_to_threshold",
    "trailing_curve",
]

CURVE_POINTS = 50
"""Points of a run's learning curve, evenly spaced over its steps."""
CURVE_WINDOW = 100
"""Episodes averaged at each point of a learning curve (SB3's ``ep_rew_mean`` uses 100)."""


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """``(mean, half-width)`` of the Student-t confidence interval of the mean of ``values``.

    The half-width is None for a single value (no spread to estimate).

    Example:
        >>> mean, half = mean_ci([1, 2, 3, 4, 5])
        >>> mean, round(half, 4)  # 2.7764 * 1.5811 / √5
        (3.0, 1.9632)
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values={values!r} must be a non-empty 1-D sequence of numbers.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
    mean = float(array.mean())
    if array.size == 1:
        return mean, None
    sem = float(array.std(ddof=1)) / np.sqrt(array.size)
    from scipy import stats  # not at module level: `lmgym bench --help` needs no SciPy

    return mean, float(stats.t.ppf((1 + confidence) / 2, array.size - 1) * sem)


def trailing_curve(
    history: RewardHistory,
    total_steps: int,
    *,
    points: int = CURVE_POINTS,
    window: int = CURVE_WINDOW,
    min_episodes: int = 10,
) -> dict[str, list[Any]]:
    """The learning curve at ``points`` evenly spaced steps: mean reward of the last episodes.

    At step ``s = k · total_steps / points`` the point is the mean reward (and KL) of the last
    ``window`` episodes that ended by ``s``, as SB3's ``rollout/ep_rew_mean`` (KL: None for
    envs without one). Steps before
    ``min_episodes`` episodes have ended get no point, so one lucky early episode cannot count
    as "reaching the threshold". The same grid for every run of a given length is what lets
    :func:`aggregate_curves` average seeds.

    Example:
        >>> from lmgym.agents.callbacks import RewardHistory
        >>> h = RewardHistory(timesteps=[1, 2, 3, 4], reward=[0.0, 1.0, 2.0, 3.0],
        ...                   reward_model=[0.0] * 4, kl=[0.0] * 4, kl_coef=[0.0] * 4)
        >>> trailing_curve(h, 4, points=2, window=2, min_episodes=1)["reward"]
        [0.5, 2.5]
    """
    steps = np.asarray(history.timesteps, dtype=float)
    rewards = np.asarray(history.reward, dtype=float)
    kls = np.asarray(history.kl, dtype=float)
    out: dict[str, list[Any]] = {"steps": [], "reward": [], "kl": []}
    for edge in np.linspace(0, total_steps, points + 1)[1:]:
        ended = int(np.searchsorted(steps, edge, side="right"))  # episodes ended by this step
        if ended < min_episodes:
            continue
        recent = slice(max(0, ended - window), ended)
        out["steps"].append(float(edge))
        out["reward"].append(float(rewards[recent].mean()))
        kl = kls[recent]
        out["kl"].append(float(kl.mean()) if np.isfinite(kl).all() else None)
    return out


def steps_to_threshold(
    steps: Sequence[float], values: Sequence[float], threshold: float
) -> float | None:
    """The first step at which ``values`` reaches ``threshold``, or None if it never does.

    Example:
        >>> steps_to_threshold([100, 200, 300], [0.1, 0.6, 0.4], 0.5)
        200.0
        >>> steps_to_threshold([100, 200], [0.1, 0.2], 0.5) is None
        True
    """
    for step, value in zip(steps, values, strict=True):
        if value >= threshold:
            return float(step)
    return None


def aggregate_curves(
    curves: Sequence[dict[str, list[float]]], points: int = 100, confidence: float = 0.95
) -> dict[str, list[float]]:
    """Mean and confidence band of several runs' curves on one common step grid.

    Each curve is linearly interpolated onto ``points`` steps spanning the range every curve
    covers; the band is the Student-t interval of the seeds' mean (:func:`mean_ci`) at each step.

    Example:
        >>> a = {"steps": [0, 10], "reward": [0.0, 1.0]}
        >>> b = {"steps": [0, 10], "reward": [0.0, 3.0]}
        >>> agg = aggregate_curves([a, b], points=3)
        >>> agg["steps"], agg["mean"]
        ([0.0, 5.0, 10.0], [0.0, 1.0, 2.0])
    """
    usable = [c for c in curves if len(c["steps"]) > 0]
    if not usable:
        return {"steps": [], "mean": [], "low": [], "high": []}
    start = max(c["steps"][0] for c in usable)
    stop = min(c["steps"][-1] for c in usable)
    grid = np.linspace(start, stop, points) if stop > start else np.array([stop])
    table = np.stack([np.interp(grid, c["steps"], c["reward"]) for c in usable])  # (runs, pts)
    means, lows, highs = [], [], []
    for column in table.T:
        mean, half = mean_ci(column, confidence)
        means.append(mean)
        lows.append(mean - (half or 0.0))
        highs.append(mean + (half or 0.0))
    return {"steps": grid.tolist(), "mean": means, "low": lows, "high": highs}
