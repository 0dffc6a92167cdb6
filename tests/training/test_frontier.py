"""The reward at matched KL: interpolation linear in √KL, missing KLs, too few points."""

from __future__ import annotations

import math
import re

import pytest
from scipy import stats

from lmgym.training.frontier import frontier_band, matched_kl, reward_at_kl, run_frontier


def run(kls: list[float], rewards: list[float]) -> dict:
    pairs = enumerate(zip(kls, rewards, strict=True))
    return {"eval_points": [{"steps": 8 * i, "kl": k, "reward_model": r} for i, (k, r) in pairs]}


def test_interpolation_is_linear_in_sqrt_kl() -> None:
    kls, rewards = [0.0, 1.0, 9.0], [0.0, 0.2, 0.6]  # √KL = 0, 1, 3
    assert reward_at_kl(kls, rewards, 1.0) == pytest.approx(0.2)  # on a point
    # KL 4: √ = 2, halfway between √1 and √9: 0.2 + 0.5 * 0.4
    assert reward_at_kl(kls, rewards, 4.0) == pytest.approx(0.4)
    # KL 0.25: √ = 0.5, halfway to the first point; linear in KL would give 0.05
    assert reward_at_kl(kls, rewards, 0.25) == pytest.approx(0.1)
    # KL 2: √2 on the segment √1..√9
    share = (math.sqrt(2) - 1) / 2
    assert reward_at_kl(kls, rewards, 2.0) == pytest.approx(0.2 + share * 0.4)
    assert reward_at_kl(kls, rewards, 9.0) == pytest.approx(0.6)  # the last point


def test_the_first_crossing_counts_and_negative_kl_is_zero() -> None:
    # KL overshoots to 4 then falls back to 1: KL 1 is read on the way up (√: 0 -> 2).
    kls, rewards = [-0.01, 4.0, 1.0], [0.0, 0.4, 0.3]
    assert reward_at_kl(kls, rewards, 1.0) == pytest.approx(0.2)
    assert reward_at_kl(kls, rewards, 0.0) == pytest.approx(0.0)  # k1 noise below 0 is 0


def test_a_kl_beyond_the_last_measured_one_is_missing() -> None:
    assert reward_at_kl([0.0, 1.0, 2.0], [0.0, 0.1, 0.2], 4.0) is None
    at = matched_kl([run([0.0, 1.0, 4.0], [0.0, 0.3, 0.5]), run([0.0, 1.0, 3.0], [0.0, 0.1, 0.4]),
                     run([0.0, 0.5], [0.0, 0.1])])  # fmt: skip
    assert (at["1"]["reached"], at["2"]["reached"], at["4"]["reached"]) == (2, 2, 1)
    assert at["4"]["per_run"] == [pytest.approx(0.5), None, None]
    assert at["4"]["mean"] == pytest.approx(0.5) and at["4"]["ci95"] is None
    # KL 1: 0.3 and 0.1 -> mean 0.2, Student-t interval with 1 degree of freedom
    assert at["1"]["mean"] == pytest.approx(0.2)
    assert at["1"]["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * 0.1414213562 / math.sqrt(2))
    none = matched_kl([run([0.0, 0.5], [0.0, 0.1])], [4.0])["4"]
    assert (none["mean"], none["reached"], none["runs"]) == (None, 0, 1)


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_points_is_an_error_naming_the_count_and_the_fix(count) -> None:
    kls, rewards = [0.0] * count, [0.1] * count
    with pytest.raises(ValueError, match=re.escape(f"got {count} (KL, reward) point")) as info:
        reward_at_kl(kls, rewards, 1.0)
    assert "at least 2" in str(info.value) and "--eval-every" in str(info.value)
    with pytest.raises(ValueError, match="--eval-every"):
        matched_kl([{"eval_points": run(kls, rewards)["eval_points"]}])


@pytest.mark.parametrize(
    ("kls", "rewards", "kl", "fragment"),
    [([0.0, 1.0], [0.1], 1.0, "2 KLs but 1 rewards"),
     ([0.0, float("nan")], [0.1, 0.2], 1.0, "must all be finite"),
     ([0.0, 1.0], [0.1, 0.2], -1.0, "kl=-1.0 must be a finite number >= 0")],
    ids=["lengths", "nan", "negative_target"],
)  # fmt: skip
def test_bad_points_raise(kls, rewards, kl, fragment) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        reward_at_kl(kls, rewards, kl)


def test_band_covers_the_range_every_seed_reached() -> None:
    runs = [run([0.0, 4.0], [0.0, 0.4]), run([0.0, 1.0, 9.0], [0.0, 0.2, 0.8])]
    band = frontier_band(runs, points=3)
    assert band["sqrt_kl"] == pytest.approx([0.0, 1.0, 2.0])  # up to the smaller reach, √4
    # √KL 1: 0.2 (halfway along √0..√4) and 0.2; √KL 2: 0.4 and 0.2 + 0.5 * 0.6 = 0.5
    assert band["mean"] == pytest.approx([0.0, 0.2, 0.45])
    half = stats.t.ppf(0.975, 1) * 0.0707106781 / math.sqrt(2)
    assert band["high"][2] - band["mean"][2] == pytest.approx(half)
    assert band["low"][2] == pytest.approx(0.45 - half)
    assert band["low"][1] == pytest.approx(band["high"][1])  # equal values: no spread


def test_runs_without_eval_points_give_before_and_after() -> None:
    old = {"eval_kl_before": 0.0, "eval_kl_after": 2.0, "eval_reward_model_before": 0.1,
           "eval_reward_model_after": 0.3}  # fmt: skip
    assert run_frontier(old) == ([0.0, 2.0], [0.1, 0.3])
