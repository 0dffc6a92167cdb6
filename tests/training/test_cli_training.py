"""``lmgym train`` and ``lmgym bench`` from the command line: help, smoke runs, bad input.

Parsing and failures run in-process; each command has one subprocess smoke run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmgym.cli import build_parser, main
from lmgym.config_cli import dataclass_from_args
from lmgym.training.bench import BenchConfig
from lmgym.training.train import TrainConfig
from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("train", ["--env", "--algo", "--policy", "--steps", "--seed", "--out", "--kl-coef",
                   "--n-envs", "--resume", "--overwrite", "--checkpoint-every", "--kl-horizon",
                   "--model", "--reward", "--prompts", "--eval-prompts", "--device", "--dtype"]),
        ("bench", ["--env", "--algos", "--seeds", "--steps", "--out", "--quick", "--jobs",
                   "--threshold", "--resume", "--overwrite", "--kl-horizon", "--model",
                   "--reward", "--prompts", "--eval-prompts", "--device", "--dtype"]),
    ],
)  # fmt: skip
def test_help_documents_the_options(capsys, command, options) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option
    assert "{LMBandit-v0,LMToken-v0,CatGrid-v0}" in out


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["train", "--env", "Pong-v5"], ["invalid choice: 'Pong-v5'", "CatGrid-v0"]),
        (["train", "--algo", "sac"], ["invalid choice: 'sac'", "maskable_ppo"]),
        (["bench", "--env", "Pong-v5"], ["invalid choice: 'Pong-v5'", "LMToken-v0"]),
    ],
    ids=["train_env", "train_algo", "bench_env"],
)
def test_unknown_choices_are_argparse_errors(capsys, argv, fragments) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(argv[0]).parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    ("argv", "cls", "fragments"),
    [
        (["bench", "--seeds", "0"], BenchConfig, ["seeds=0 must be an int >= 1"]),
        (["bench", "--algos", "ppo", "sac"], BenchConfig, ["algo='sac' is unknown", "'trpo'"]),
        (["bench", "--policy", "mlp", "--algos", "dqn"], BenchConfig,
         ["does not fit env='LMBandit-v0'", "['ppo', 'a2c', 'trpo', 'recurrent_ppo']"]),
        (["train", "--env", "LMBandit-v0", "--algo", "dqn"], TrainConfig,
         ["does not fit", "['ppo', 'ppo-token', 'a2c', 'trpo', 'grpo', 'rloo']"]),
        (["train", "--env", "CatGrid-v0", "--policy", "lm"], TrainConfig,
         ["policy='lm' does not fit", "policy='mlp'"]),
    ],
    ids=["seeds0", "bench_algo", "bench_dqn_bandit", "train_dqn_bandit", "train_lm_catgrid"],
)  # fmt: skip
def test_bad_input_lists_the_valid_choices(argv, cls, fragments) -> None:
    namespace = build_parser(argv[0]).parse_args(argv)
    with pytest.raises(ValueError) as info:
        dataclass_from_args(cls, namespace)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_train_then_refuse_a_second_run_in_the_same_out(tmp_path: Path, capsys) -> None:
    args = ["train", "--env", "CatGrid-v0", "--algo", "a2c", "--steps", "256", "--n-envs", "2",
            "--eval-episodes", "2", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["algo"] == "a2c" and metrics["steps"] >= 256
    assert first.stdout.strip() == (  # what the command shows: the run's one line
        f"a2c on CatGrid-v0 (seed 0): eval reward {metrics['eval_reward_before']:.3f} -> "
        f"{metrics['eval_reward_after']:.3f} in {metrics['steps']} steps, "
        f"{metrics['wall_s']:.0f} s; wrote {tmp_path}"
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*args, "--steps", "512"])  # in-process: a second interpreter start costs ~5 s
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "already holds a train run" in err and "--resume" in err and "--overwrite" in err


def test_bench_quick_catgrid(tmp_path: Path) -> None:
    result = run_cli("bench", "--env", "CatGrid-v0", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| algo | runs |" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["env"] == "CatGrid-v0" and results["jobs"] >= 1
    assert sorted((r["algo"], r["seed"]) for r in results["runs"]) == [
        ("a2c", 0), ("a2c", 1), ("ppo", 0), ("ppo", 1)]  # fmt: skip
    markdown = (tmp_path / "results.md").read_text()
    assert "| ppo | 2 |" in markdown and "| a2c | 2 |" in markdown
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for run in results["runs"]:
        assert run["eval_kl_after"] is None and run["kl_form"] == "none"
