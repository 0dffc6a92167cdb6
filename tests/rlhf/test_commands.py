"""The stage sub-commands: ``lmgym sft``, ``reward-model``, ``ppo-rm`` and ``dpo``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from lmgym.cli import build_parser, main
from lmgym.config_cli import dataclass_from_args
from lmgym.error import ModelLoadError
from lmgym.models.loading import DEFAULT_MODEL_DIR, load_model
from lmgym.rlhf.commands import (
    DPOCommandConfig,
    PPORMCommandConfig,
    RewardModelCommandConfig,
    SFTCommandConfig,
    run_reward_model_command,
    run_sft_command,
)
from lmgym.rlhf.reward_model import LearnedRewardModel
from tests.helpers import run_cli

COMMANDS = ["sft", "reward-model", "ppo-rm", "dpo"]


def parse(*args: str):
    namespace = build_parser(args[0]).parse_args(list(args))
    config_cls = {
        "sft": SFTCommandConfig,
        "reward-model": RewardModelCommandConfig,
        "ppo-rm": PPORMCommandConfig,
        "dpo": DPOCommandConfig,
    }[args[0]]
    return dataclass_from_args(config_cls, namespace)


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


# --- --help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "own", "inherited"),
    [
        ("sft", ["--model", "--n-candidates", "--demos-per-prompt"], "Passes over the demonstr"),
        ("reward-model", ["--policy", "--k", "--heldout-prompts"], "Fraction of the distinct"),
        ("ppo-rm", ["--policy", "--reward-model", "--norm-samples"], "β of the KL penalty"),
        ("dpo", ["--policy", "--reference", "--beta", "--k"], "β > 0 of the DPO loss"),
    ],
    ids=COMMANDS,
)
def test_help_documents_own_and_inherited_options(command, own, inherited, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(command).parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option in [*own, "--out", "--overwrite", "--threads", "--seed"]:
        assert option in text, option
    assert inherited in text  # the stage config's Attributes: doc, not repeated here
    assert "Replace a model already saved in --out." in text


def test_top_level_help_lists_the_stage_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


# --- the stages chained in-process (sft -> reward-model -> ppo-rm, dpo), as `lmgym` runs them --


def run_main(*args: str) -> str:
    """``lmgym ARGS`` in this process; what it printed."""
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert main(list(args)) == 0
    return shown.getvalue()


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("commands") / "sft"
    shown = run_main(
        "sft",
        *("--out", str(out), "--epochs", "1", "--demos-per-prompt", "1"),
        *("--n-candidates", "2", "--eval-samples", "1", "--no-progress"),
    )
    assert f"wrote {out}" in shown
    return out


@pytest.fixture(scope="module")
def rm_dir(sft_dir: Path) -> Path:
    out = sft_dir.parent / "rm"
    shown = run_main(
        "reward-model",
        *("--policy", str(sft_dir), "--out", str(out), "--k", "3"),
        *("--rankings-per-prompt", "1", "--epochs", "1", "--no-progress"),
    )
    assert "heldout_accuracy" in shown
    return out


def test_sft_smoke_run(sft_dir: Path) -> None:
    metrics = metrics_of(sft_dir)
    assert metrics["n_demonstrations"] == 45  # one per training prompt
    assert metrics["final_epoch_loss"] > 0 and metrics["wall_time_s"] > 0
    assert {"true_score_before", "true_score_after"} <= set(metrics)
    assert metrics["config"]["model"] is None  # the embedded default
    model, _ = load_model(sft_dir)
    assert model.config.model_type == "gpt2"


def test_reward_model_smoke_run(rm_dir: Path, sft_dir: Path) -> None:
    metrics = metrics_of(rm_dir)
    for key in ("heldout_accuracy", "heldout_true_accuracy", "oracle_accuracy"):
        assert 0 <= metrics[key] <= 1, key
    assert -1 <= metrics["true_score_correlation"] <= 1
    assert metrics["n_train_rankings"] == 45 and metrics["n_heldout_rankings"] == 36
    assert metrics["config"]["policy"] == str(sft_dir)
    reward = LearnedRewardModel(rm_dir)
    assert reward(["the soup was"], ["great ."]).shape == (1,)


def test_ppo_rm_smoke_run(sft_dir: Path, rm_dir: Path) -> None:
    out = sft_dir.parent / "ppo"
    run_main(
        "ppo-rm",
        *("--policy", str(sft_dir), "--reward-model", str(rm_dir), "--out", str(out)),
        *("--steps", "16", "--n-envs", "4", "--n-steps", "4", "--batch-size", "16"),
        *("--n-epochs", "1", "--norm-samples", "1", "--eval-samples", "1", "--no-progress"),
    )
    metrics = metrics_of(out)
    assert metrics["history"]["timesteps"] == [16]
    assert metrics["normalisation_std"] > 0
    assert {"rm_score_before", "rm_score_after", "true_score_after"} <= set(metrics)
    assert (out / "config.json").is_file()


def test_dpo_smoke_run(sft_dir: Path) -> None:
    out = sft_dir.parent / "dpo"
    run_main(
        "dpo",
        *("--policy", str(sft_dir), "--out", str(out), "--k", "3", "--beta", "0.5"),
        *("--rankings-per-prompt", "1", "--epochs", "1", "--eval-samples", "1", "--no-progress"),
    )
    metrics = metrics_of(out)
    assert metrics["n_rankings"] == 45 and metrics["n_pairs"] > 0
    assert {"true_score_before", "true_score_after"} <= set(metrics)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["config"]["beta"] == 0.5


@pytest.mark.parametrize("command", COMMANDS)
def test_command_runs_and_says_what_it_wrote(command: str, rm_dir: Path, tmp_path: Path) -> None:
    """Each command with its smallest options; ``ppo-rm`` as a person runs it, in a subprocess.

    The other three run in-process: they share ``python -m lmgym.cli``'s entry with ``ppo-rm``,
    and a second interpreter costs ~7 CPU-seconds of imports each.
    """
    out = tmp_path / command
    policy = ("--policy", str(DEFAULT_MODEL_DIR))
    args = {
        "sft": ("--epochs", "1", "--demos-per-prompt", "1", "--n-candidates", "1"),
        "reward-model": (*policy, "--k", "2", "--rankings-per-prompt", "1", "--epochs", "1"),
        "ppo-rm": (*policy, "--reward-model", str(rm_dir), "--steps", "16", "--n-envs", "4",
                   "--n-steps", "4", "--batch-size", "16", "--n-epochs", "1",
                   "--norm-samples", "1"),
        "dpo": (*policy, "--k", "2", "--rankings-per-prompt", "1", "--epochs", "1"),
    }[command]  # fmt: skip
    evaluation = () if command == "reward-model" else ("--eval-samples", "0")
    argv = (command, *args, *evaluation, "--out", str(out), "--no-progress")
    if command == "ppo-rm":
        result = run_cli(*argv)
        assert result.returncode == 0, result.stderr[-2000:]
        shown = result.stdout
    else:
        shown = run_main(*argv)
    assert f"wrote {out}: the model and metrics.json" in shown
    assert (out / "metrics.json").is_file() and (out / "config.json").is_file()


def test_reward_model_split_holds_out_training_prompts(tmp_path: Path) -> None:
    metrics = run_reward_model_command(
        parse(
            "reward-model",
            *("--policy", str(DEFAULT_MODEL_DIR), "--out", str(tmp_path / "rm"), "--k", "2"),
            *("--rankings-per-prompt", "1", "--epochs", "1", "--no-progress"),
            *("--heldout-prompts", "split", "--heldout-fraction", "0.2"),
        )
    )
    assert metrics["n_heldout_rankings"] == 9  # round(0.2 × 45) training prompts
    assert metrics["n_train_rankings"] == 36


# --- bad input ---------------------------------------------------------------------------------


def test_sft_refuses_an_out_that_holds_a_model_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    small = ("--epochs", "1", "--demos-per-prompt", "1", "--n-candidates", "1", "--no-progress")
    first = run_sft_command(parse("sft", "--out", str(out), "--eval-samples", "0", *small))
    with pytest.raises(ValueError, match="already holds a model; pass --overwrite"):
        parse("sft", "--out", str(out))
    # --overwrite replaces it; the same seed gives the same run.
    again = run_sft_command(
        parse("sft", "--out", str(out), "--eval-samples", "0", "--overwrite", *small)
    )
    assert again["final_epoch_loss"] == first["final_epoch_loss"]


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (["--model", "no/such/dir"], ModelLoadError, "model='no/such/dir' does not exist"),
        (["--n-candidates", "0"], ValueError, "n_candidates=0"),
        (["--eval-samples", "-1"], ValueError, "eval_samples=-1"),
        (["--threads", "0"], ValueError, "threads=0"),
    ],
    ids=["missing_model", "n_candidates0", "eval_samples_neg", "threads0"],
)
def test_sft_rejects_bad_input(args, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        parse("sft", *args)


def test_an_out_of_other_files_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no saved model"):
        parse("sft", "--out", str(tmp_path), "--overwrite")
    with pytest.raises(ValueError, match="is a file"):
        parse("sft", "--out", str(tmp_path / "notes.txt"))


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (["--policy", "no/such/dir"], ModelLoadError, "policy='no/such/dir' does not exist"),
        (["--k", "1"], ValueError, "k=1 is not an int >= 2"),
        (["--rankings-per-prompt", "0"], ValueError, "rankings_per_prompt=0"),
        (["--labeler-temperature", "-1"], ValueError, "labeler_temperature=-1"),
        (["--heldout-fraction", "1.5"], ValueError, "heldout_fraction=1.5"),
    ],
    ids=["missing_policy", "k1", "rankings0", "temperature_neg", "fraction"],
)
def test_reward_model_rejects_bad_input(args, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        parse("reward-model", "--policy", str(DEFAULT_MODEL_DIR), *args)


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (["--reward-model", "no/such/rm"], ModelLoadError, "reward_model='no/such/rm'"),
        (["--steps", "8"], ValueError, "less than one rollout"),
        (["--norm-samples", "0"], ValueError, "norm_samples=0"),
    ],
    ids=["missing_rm", "steps_lt_rollout", "norm_samples0"],
)
def test_ppo_rm_rejects_bad_input(args, error, fragment) -> None:
    base = ["--policy", str(DEFAULT_MODEL_DIR), "--reward-model", str(DEFAULT_MODEL_DIR)]
    with pytest.raises(error, match=fragment):
        parse("ppo-rm", *base, *args)


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (["--reference", "no/such/ref"], ModelLoadError, "reference='no/such/ref'"),
        (["--beta", "0"], ValueError, "beta=0"),
        (["--k", "0"], ValueError, "k=0 is not an int >= 2"),
    ],
    ids=["missing_reference", "beta0", "k0"],
)
def test_dpo_rejects_bad_input(args, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        parse("dpo", "--policy", str(DEFAULT_MODEL_DIR), *args)


@pytest.mark.parametrize("command", ["reward-model", "ppo-rm", "dpo"])
def test_policy_is_required(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(command).parse_args([command])
    assert exit_info.value.code == 2
    assert "--policy" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_out_is_refused_by_the_config_before_the_stage_runs(command) -> None:
    """The check sits in the config, so a library caller is stopped before the work too (it
    used to fail only when the trained model was saved)."""
    inputs = {"sft": [], "dpo": ["--policy", str(DEFAULT_MODEL_DIR)],
              "reward-model": ["--policy", str(DEFAULT_MODEL_DIR)],
              "ppo-rm": ["--policy", str(DEFAULT_MODEL_DIR),
                         "--reward-model", str(DEFAULT_MODEL_DIR)]}[command]  # fmt: skip
    with pytest.raises(ValueError, match=r"out='/proc/lmgym-stage' is not writable"):
        parse(command, *inputs, "--out", "/proc/lmgym-stage")  # builds the config dataclass
