"""The report's checks: judged at the default run's sizes, "not judged" below them, never FAIL."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lmgym.rlhf import pipeline
from lmgym.rlhf.checks import (
    accuracy_check,
    gain_check,
    identical_policies,
    lower_loss_check,
    shortfall,
)
from lmgym.rlhf.pipeline import RLHFConfig


def _state(accuracy: float, gain: float) -> dict:
    """A run whose RM is at ``accuracy`` and whose PPO/DPO gain ``gain`` over SFT (SE 0.05)."""
    row = {"true_score": 1.0, "true_score_se": 0.05, "rm_score": 0.0, "rm_score_se": 0.05,
           "corpus_loss": 2.0}  # fmt: skip
    better = {**row, "true_score": 1.0 + gain, "rm_score": gain, "corpus_loss": 2.5}
    metrics = {"heldout_accuracy": accuracy, "oracle_accuracy": 0.74}
    return {
        "rm": SimpleNamespace(metrics=metrics),
        "policies": {"SFT": row, "PPO": better, "DPO": better, "PPO-ptx": {**better,
                     "corpus_loss": 3.0}},
    }  # fmt: skip


def test_a_quick_run_reports_its_checks_as_not_judged_never_fail() -> None:
    checks = pipeline._checks(RLHFConfig(quick=True), _state(accuracy=0.48, gain=-0.02))
    assert [c.verdict for c in checks] == ["not judged"] * 5
    for check in checks:
        assert "FAIL" not in check.line() and "--quick size" in check.line()
    assert "ppo_steps 128 < 2048" in checks[1].line()


def test_a_full_size_run_still_fails_a_failing_check() -> None:
    checks = pipeline._checks(RLHFConfig(), _state(accuracy=0.48, gain=-0.02))
    assert [c.verdict for c in checks] == ["FAIL"] * 5
    assert checks[0].line().startswith("FAIL: RM held-out pairwise accuracy 48.0%")
    good = pipeline._checks(RLHFConfig(), _state(accuracy=0.66, gain=0.3))
    assert [c.verdict for c in good] == ["PASS"] * 4 + ["FAIL"]  # ptx loss 3.0 > 2.5


def test_a_quick_run_with_full_ppo_steps_judges_the_ppo_checks() -> None:
    config = RLHFConfig(quick=True, ppo_steps=2048, eval_samples=4)
    checks = pipeline._checks(config, _state(accuracy=0.48, gain=0.3))
    assert checks[2].verdict == "PASS" and checks[4].verdict == "FAIL"
    assert checks[0].verdict == "not judged"


@pytest.mark.parametrize(
    ("check", "verdict"),
    [
        (accuracy_check(0.59, 0.7), "FAIL"),
        (accuracy_check(0.6, 0.7), "PASS"),
        (gain_check("PPO", "SFT", "true score", diff=0.1, se=0.05), "FAIL"),
        (gain_check("PPO", "SFT", "true score", diff=0.11, se=0.05), "PASS"),
        (lower_loss_check(2.0, 2.0), "FAIL"),
        (lower_loss_check(2.0, 2.0, not_judged="--quick size: ppo_steps 128 < 2048"), "not judged"),
    ],  # fmt: skip
    ids=["acc_fail", "acc_pass", "gain_fail", "gain_pass", "loss_fail", "loss_not_judged"],
)
def test_check_functions_judge_the_numbers(check, verdict) -> None:
    assert check.verdict == verdict
    assert check.line().startswith(f"{verdict}: ")


def test_shortfall_names_only_the_sizes_that_fall_short() -> None:
    text = shortfall({"a": 1, "b": 9}, {"a": 4, "b": 8})
    assert text is not None and "a 1 < 4" in text and "b " not in text
    assert shortfall({"a": 4}, {"a": 4}) is None


def test_identical_policies_and_the_note_that_explains_them() -> None:
    groups = identical_policies({"SFT": ["x"], "PPO": ["y"], "PPO β=0.5": ["y"], "DPO": ["z"]})
    assert groups == [["PPO", "PPO β=0.5"]]
    (quick_note, ppo_note) = pipeline._notes(RLHFConfig(quick=True), groups)
    assert "smoke run" in quick_note and "not judged" in quick_note
    assert "one rollout of 128 completions" in ppo_note and "whatever β is" in ppo_note
    assert pipeline._notes(RLHFConfig(), []) == []


def test_report_prints_verdicts_and_notes(tmp_path: Path) -> None:
    from lmgym.rlhf.report import format_summary, write_md

    check = lower_loss_check(2.0, 2.1, not_judged="--quick size: ppo_steps 128 < 2048")
    row = {"true_score": 1.0, "rm_score": 0.0, "sentiment": 0.0, "fluency": 1.0, "kl": 0.0,
           "corpus_loss": 2.0, "examples": [("the soup was", "great .")]}  # fmt: skip
    rm = {k: 0.5 for k in ("heldout_accuracy", "oracle_accuracy", "heldout_true_accuracy",
                          "true_score_correlation")}  # fmt: skip
    counts = ("rankings", "pairs", "identical_pairs")
    rm |= {f"n_{part}_{count}": 1 for part in ("train", "heldout") for count in counts}
    results = {
        "command": "lmgym rlhf --quick", "config": {"seed": 0, "threads": 1, "eval_samples": 1,
        "rm_k": 4, "labeler_temperature": 0.25, "out": str(tmp_path)},
        "wall_time_s": {"total": 1.0}, "notes": ["a note"], "reward_model": rm,
        "eval_prompts": 1, "policies": {"SFT": row, "PPO": row},
        "elo": [{"player": "SFT", "rating": 1000.0, "low": 990.0, "high": 1010.0, "games": 1,
                 "score": 0.5}], "elo_games": 1, "checks": [check.as_dict()],
    }  # fmt: skip
    text = format_summary(results)
    assert "Note: a note" in text and "not judged: PPO-ptx keeps" in text and "FAIL" not in text
    md = write_md(results, tmp_path / "results.md").read_text()
    assert "> a note" in md and "- not judged: PPO-ptx keeps" in md
