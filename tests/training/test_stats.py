"""Confidence intervals on known data, curves and thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmgym.agents.callbacks import RewardHistory
from lmgym.training.stats import aggregate_curves, mean_ci, steps_to_threshold, trailing_curve


def test_mean_ci_on_known_data() -> None:
    mean, half = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    # t_{0.975, 4} = 2.776 (tables); s = sqrt(2.5); half-width = t * s / sqrt(5)
    assert half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)
    assert half == pytest.approx(1.9632, abs=1e-4)
    _, half90 = mean_ci([1, 2, 3, 4, 5], confidence=0.90)
    assert half90 == pytest.approx(2.132 * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)
    assert mean_ci([7.0]) == (7.0, None)


def test_mean_ci_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence=1.5"):
        mean_ci([1, 2], confidence=1.5)


def history(steps, rewards) -> RewardHistory:
    n = len(steps)
    return RewardHistory(list(steps), list(rewards), [0.0] * n, [0.5] * n, [0.1] * n)


def test_trailing_curve_windows_and_minimum() -> None:
    h = history(range(1, 101), [0.0] * 50 + [1.0] * 50)
    curve = trailing_curve(h, 100, points=4, window=20, min_episodes=30)
    assert curve["steps"] == [50.0, 75.0, 100.0]  # 25 episodes by step 25: no point
    assert curve["reward"] == [0.0, 1.0, 1.0]
    assert curve["kl"] == [0.5, 0.5, 0.5]


def test_steps_to_threshold_and_aggregate() -> None:
    assert steps_to_threshold([1, 2, 3], [0.0, 0.9, 1.0], 0.9) == 2.0
    assert steps_to_threshold([1, 2], [0.0, 0.1], 0.9) is None
    a = {"steps": [10.0, 20.0], "reward": [1.0, 3.0]}
    b = {"steps": [10.0, 20.0, 30.0], "reward": [3.0, 5.0, 9.0]}
    agg = aggregate_curves([a, b], points=3)
    assert agg["steps"] == [10.0, 15.0, 20.0]  # the range both cover
    np.testing.assert_allclose(agg["mean"], [2.0, 3.0, 4.0])
    half = 12.706 * 1.0 * math.sqrt(2) / math.sqrt(2)  # t_{0.975,1} * s / sqrt(n), s = sqrt(2)
    np.testing.assert_allclose(np.subtract(agg["high"], agg["mean"]), [half] * 3, rtol=1e-3)
