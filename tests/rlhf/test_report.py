"""The report's plots at a --quick run's size: no one-dot lines, no labels on top of each other."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from lmgym.rlhf import report


@pytest.fixture
def figures(monkeypatch) -> list[Figure]:
    """The figures the plot functions draw, kept instead of written."""
    drawn: list[Figure] = []
    monkeypatch.setattr(report, "_save", lambda fig, path: drawn.append(fig) or path)
    return drawn


def _history(points: int) -> dict[str, list[float]]:
    return {"timesteps": [128.0 * (i + 1) for i in range(points)],
            "reward_model": [0.1] * points, "true_score": [1.0] * points,
            "kl": [0.5 * i for i in range(points)]}  # fmt: skip


def test_one_rollout_per_run_draws_bars_not_dots(figures) -> None:
    report.plot_rm_vs_true({"β=0.1": _history(1), "β=0.5": _history(1)}, "unused.png")
    axes = figures[0].axes
    assert all("one rollout per run: bars" in ax.get_title() for ax in axes)
    assert all(len(ax.patches) == 2 and not ax.lines for ax in axes)
    report.plot_rm_vs_true({"β=0.1": _history(3)}, "unused.png")
    assert all(len(ax.lines) == 1 and not ax.patches for ax in figures[1].axes)


def test_points_on_one_spot_share_one_label(figures) -> None:
    points = {"SFT": {"kl": 0.0, "rm_score": 0.0, "true_score": 1.0}}
    same = {"kl": 0.057, "rm_score": -0.086, "true_score": 0.917}
    points |= {"PPO": same, "PPO β=0.01": same, "PPO β=0.5": same}
    report.plot_reward_vs_kl(points, {"β=0.1": _history(1)}, "unused.png")
    for ax in figures[0].axes:
        labels = sorted(text.get_text() for text in ax.texts)
        assert labels == ["PPO, PPO β=0.01, PPO β=0.5", "SFT"]
        assert "no training paths" in ax.get_title() and not ax.lines
