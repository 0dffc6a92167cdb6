"""Subprocess smoke runs of the ``lmgym`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmgym.cli import build_parser
from lmgym.demo import DemoConfig
from tests.helpers import run_cli


def test_help_lists_demo() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_demo_help_documents_every_option() -> None:
    result = run_cli("demo", "--help")
    assert result.returncode == 0
    for option in ("--steps", "--n-envs", "--kl-coef", "--seed", "--out"):
        assert option in result.stdout
    assert "Env steps (completions) PPO trains for." in result.stdout


def test_demo_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--steps", "512", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PPO agent, trained" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert {"base_lm", "before", "after", "wall_s"} <= set(results)
    assert results["base_lm"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert (out / "curve.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--steps", "0"], "steps=0"),
        (["--learning-rate", "-1"], "learning_rate=-1"),
        (["--kl-target", "6", "--kl-horizon", "0"], "kl_horizon=0 must be an int >= 1"),
        (["--kl-horizon", "100"], "kl_horizon=100 without kl_target"),
    ],
    ids=["steps0", "lr_neg", "kl_horizon0", "kl_horizon_fixed_beta"],
)
def test_demo_rejects_bad_config(args, fragment) -> None:
    from lmgym.config_cli import dataclass_from_args

    namespace = build_parser().parse_args(["demo", *args])
    with pytest.raises(ValueError, match=fragment):
        dataclass_from_args(DemoConfig, namespace)


def test_demo_adaptive_beta_horizon_is_a_sixteenth_of_the_run() -> None:
    namespace = build_parser().parse_args(["demo", "--steps", "2048", "--kl-target", "6"])
    from lmgym.config_cli import dataclass_from_args

    assert dataclass_from_args(DemoConfig, namespace).kl_horizon == 128  # not 2048: β can adapt
    assert DemoConfig(kl_target=6.0, kl_horizon=500).kl_horizon == 500
    assert DemoConfig().kl_horizon is None  # a fixed β


def test_bad_config_value_is_a_usage_error_not_a_traceback() -> None:
    result = run_cli("demo", "--steps", "0")
    assert result.returncode == 2
    assert "demo: steps=0 must be an int > 0" in result.stderr
    assert "Traceback" not in result.stderr
