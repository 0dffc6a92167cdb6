"""The ``lmgym`` command: parsing, help and every failure path run in-process (a fresh
interpreter costs seconds of imports); one subprocess smoke run of ``lmgym demo``, and one fresh
interpreter to see what building a command's parser imports."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmgym.cli import COMMANDS, build_parser, main
from lmgym.demo import DemoConfig
from lmgym.models.loading import DEFAULT_MODEL_DIR
from tests.helpers import run_cli


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command(capsys) -> None:
    out = help_of(["--help"], capsys)
    for name, command in COMMANDS.items():
        assert f"    {name} " in out and command.help.split()[0] in out, name


def test_demo_help_documents_every_option(capsys) -> None:
    out = " ".join(help_of(["demo", "--help"], capsys).split())
    options = ["--steps", "--n-envs", "--kl-coef", "--seed", "--out", "--model", "--reward",
               "--prompts", "--eval-prompts", "--device", "--dtype"]  # fmt: skip
    for option in options:
        assert option in out
    assert "Env steps (completions) PPO trains for." in out


LIGHT_PARSERS = """
import sys
from lmgym.cli import COMMANDS, build_parser
for command in (None, *COMMANDS):
    build_parser(command)
print(sorted(m for m in ("torch", "transformers", "stable_baselines3", "sb3_contrib", "scipy",
                         "matplotlib") if m in sys.modules))
"""


def test_help_and_every_commands_options_load_no_torch() -> None:
    # `lmgym --help` and `lmgym COMMAND --help` answer at once: building the parsers (every
    # command's module and config) must not import torch, transformers, SB3, SciPy or matplotlib.
    result = subprocess.run([sys.executable, "-c", LIGHT_PARSERS], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_demo_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # One rollout of 4 envs x 32 steps and its update: the smoke run, not the learning check.
    result = run_cli("demo", "--steps", "128", "--n-envs", "4", "--eval-samples", "1",
                     "--out", str(out), "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PPO agent, trained" in result.stdout
    # A few completions before and after, side by side: what a person wants to see.
    assert "| prompt | untrained agent | trained agent |" in result.stdout
    rows = result.stdout.split("| prompt | untrained agent | trained agent |")[1].splitlines()
    assert sum(line.startswith("| ") and line.count(" | ") == 2 for line in rows) >= 3
    assert f"wrote {out / 'curve.png'} and {out / 'results.json'} in " in result.stdout
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

    namespace = build_parser("demo").parse_args(["demo", *args])
    with pytest.raises(ValueError, match=fragment):
        dataclass_from_args(DemoConfig, namespace)


def test_demo_adaptive_beta_horizon_is_a_sixteenth_of_the_run() -> None:
    namespace = build_parser("demo").parse_args(["demo", "--steps", "2048", "--kl-target", "6"])
    from lmgym.config_cli import dataclass_from_args

    assert dataclass_from_args(DemoConfig, namespace).kl_horizon == 128  # not 2048: β can adapt
    assert DemoConfig(kl_target=6.0, kl_horizon=500).kl_horizon == 500
    assert DemoConfig().kl_horizon is None  # a fixed β


def test_bad_config_value_is_a_usage_error_not_a_traceback(capsys) -> None:
    status, err = exit_of(["demo", "--steps", "0"], capsys)
    assert status == 2
    assert err.strip() == "lmgym: error: demo: steps=0 must be an int > 0."


# --- one line and a status, never a traceback ---------------------------------------------------

STAGE_INPUTS = {
    "train": ["--env", "CatGrid-v0"],
    "bench": ["--env", "CatGrid-v0"],
    "demo": [],
    "rlhf": ["--quick"],
    "sft": [],
    "reward-model": ["--policy", str(DEFAULT_MODEL_DIR)],
    "ppo-rm": ["--policy", str(DEFAULT_MODEL_DIR), "--reward-model", str(DEFAULT_MODEL_DIR)],
    "dpo": ["--policy", str(DEFAULT_MODEL_DIR)],
}


def no_work(monkeypatch) -> list[str]:
    """Make every command's run function record that the work started instead of doing it."""
    started: list[str] = []
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)

        def run(config, name=name):
            started.append(name)
            raise AssertionError(f"{name} started its work")

        monkeypatch.setattr(module, command.run, run)
    return started


def exit_of(argv: list[str], capsys) -> tuple[int | None, str]:
    capsys.readouterr()
    try:
        main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0), capsys.readouterr().err
    except BaseException as err:  # a traceback (or Ctrl-C) escaping main is the failure
        return None, f"raised {type(err).__name__}: {err}"
    return 0, capsys.readouterr().err


def unwritable(kind: str, tmp_path: Path) -> Path:
    if kind == "a file":
        (tmp_path / "file").write_text("keep me")
        return tmp_path / "file"
    if kind == "under a file":
        (tmp_path / "file").write_text("keep me")
        return tmp_path / "file" / "out"
    if kind == "read-only":
        if os.geteuid() != 0:
            (tmp_path / "ro").mkdir(mode=0o555)
            return tmp_path / "ro" / "out"
        if not Path("/sys").is_dir():  # root writes through file modes: use a read-only fs
            pytest.skip("no read-only place for root (no /sys)")
        return Path("/sys/lmgym-out")
    return Path("/proc/lmgym-out")


@pytest.mark.parametrize("kind", ["a file", "under a file", "read-only", "/proc"])
@pytest.mark.parametrize("command", list(STAGE_INPUTS))
def test_an_out_that_cannot_be_written_is_one_line_before_any_work(
    tmp_path, monkeypatch, capsys, command, kind
) -> None:
    started = no_work(monkeypatch)
    out = unwritable(kind, tmp_path)
    status, err = exit_of([command, *STAGE_INPUTS[command], "--out", str(out)], capsys)
    assert started == []
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"lmgym: error: {command}: ") and f"out={str(out)!r}" in lines[0]
    if kind in ("a file", "under a file"):
        assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--kl-coef", "-1"], "kl_coef=-1.0 must be a finite float >= 0"),
        (["--kl-coef", "nan"], "kl_coef=nan"),
        (["--kl-coef", "inf"], "kl_coef=inf"),
        (["--seed", "-1"], "seed=-1 must be an int in [0, 4294967295]"),
        (["--seed", "4294967296"], "seed=4294967296 must be an int in [0, 4294967295]"),
        (["--kl-target", "0"], "kl_target=0.0 must be a finite float > 0"),
        (["--kl-target", "nan"], "kl_target=nan"),
    ],
    ids=["kl_coef_neg", "kl_coef_nan", "kl_coef_inf", "seed_neg", "seed_2_32", "kl_target_0",
         "kl_target_nan"],
)  # fmt: skip
def test_demo_validates_kl_coef_seed_and_kl_target(tmp_path, monkeypatch, capsys, args, fragment):
    started = no_work(monkeypatch)
    status, err = exit_of(["demo", *args, "--out", str(tmp_path / "demo")], capsys)
    assert started == [] and status == 2, err
    assert err.strip() == f"lmgym: error: demo: {err.strip().split('demo: ', 1)[1]}"
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", list(STAGE_INPUTS))
def test_ctrl_c_is_one_line_and_status_130(tmp_path, monkeypatch, capsys, command) -> None:
    module = importlib.import_module(COMMANDS[command].module)

    def interrupted(config) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, COMMANDS[command].run, interrupted)
    status, err = exit_of([command, *STAGE_INPUTS[command], "--out", str(tmp_path / "o")], capsys)
    assert status == 130, err
    assert err.strip() == f"lmgym: {command}: interrupted"
