"""``eval_every``: evaluations while training, recorded as metrics.json's ``eval_points``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmgym.training.train import TrainConfig, run_train


def config(out: Path, **kwargs) -> TrainConfig:
    base = dict(env="CatGrid-v0", algo="a2c", steps=512, n_envs=2, eval_episodes=4, out=out,
                progress=False)  # fmt: skip
    return TrainConfig(**{**base, **kwargs})


def test_eval_points_span_the_run_and_leave_training_unchanged(tmp_path: Path) -> None:
    plain = run_train(config(tmp_path / "plain"))
    points = run_train(config(tmp_path / "points", eval_every=100))
    # One evaluation at the first rollout boundary at or past each multiple of 100.
    rollout = points["hyperparameters"]["n_steps"] * 2
    assert 100 % rollout and points["steps"] == 512  # boundaries fall past the multiples
    boundaries = sorted({-(-k // rollout) * rollout for k in range(100, 512, 100)} - {512})
    steps = [p["steps"] for p in points["eval_points"]]
    assert steps == [0, *boundaries, 512] and len(steps) >= 5
    first, last = points["eval_points"][0], points["eval_points"][-1]
    assert first["reward"] == points["eval_reward_before"]
    assert last["reward"] == points["eval_reward_after"]
    assert first["kl"] is None and set(first) == {"steps", "reward", "reward_model", "kl"}
    assert all(p["eval_s"] > 0 for p in points["eval_points"][1:-1])  # timed during training
    # The evaluations restore every random state: the same training curve and final eval.
    assert points["curve"] == plain["curve"]
    assert points["eval_reward_after"] == plain["eval_reward_after"]
    assert [p["steps"] for p in plain["eval_points"]] == [0, plain["steps"]]


@pytest.mark.parametrize("every", [0, -5, 1.5, True])
def test_bad_eval_every_raises(every, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(f"eval_every={every!r} must be an int > 0")):
        config(tmp_path, eval_every=every)
