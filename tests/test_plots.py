from __future__ import annotations

from pathlib import Path

from lmgym.agents.callbacks import RewardHistory
from lmgym.plots import plot_learning_curve


def test_empty_history_plots_empty_axes_instead_of_failing(tmp_path: Path) -> None:
    steps, values = RewardHistory().smoothed("reward", window=50)
    assert steps.size == 0 and values.size == 0
    path = plot_learning_curve(RewardHistory(), tmp_path / "empty.png", title="no episode yet")
    assert path.stat().st_size > 1000
