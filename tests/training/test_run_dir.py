"""``lmgym train`` and its run directory: lock, resume edge cases, full disks and Ctrl-C.

Every case goes through the command in-process (``lmgym.cli.main``) and checks what a person
sees: the exit status and a single line on stderr, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from lmgym.cli import main
from lmgym.error import ModelLoadError
from lmgym.training import checkpoint
from lmgym.training import trainer as trainer_module
from lmgym.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from lmgym.training.rundir import DirectoryLock, RunDirError
from lmgym.training.train import MAX_SEED, TrainConfig, run_train


def train_args(out: Path, *extra: str, steps: int = 2048, algo: str = "ppo") -> list[str]:
    return ["train", "--env", "CatGrid-v0", "--algo", algo, "--steps", str(steps), "--n-envs",
            "2", "--checkpoint-every", "512", "--eval-episodes", "2", "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """Exit status of ``lmgym ARGV`` in-process (None: it raised) and its stderr."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = int(exit_info.code or 0)
    except BaseException as err:  # a traceback (or a KeyboardInterrupt) is a failure here
        return None, f"raised {type(err).__name__}: {err}"
    return status, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def saves_calling(monkeypatch, action: Callable[[int], None]) -> list[int]:
    """Route checkpoint saves through the real one, then ``action(number of the save)``."""
    real_save, saved = checkpoint.save_checkpoint, []

    def save(path, model, state):
        result = real_save(path, model, state)
        saved.append(state["steps_done"])
        action(len(saved))
        return result

    monkeypatch.setattr(trainer_module.ckpt, "save_checkpoint", save)
    return saved


# --- one run per directory ---------------------------------------------------------------------


def test_a_second_train_on_the_same_out_is_refused_while_the_first_runs(
    tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    second: list[tuple[int | None, str]] = []

    def start_another(number: int) -> None:
        if number == 2:  # the first run is training: a second one, even with --overwrite
            second.append(run_cli(train_args(out, "--seed", "1", "--overwrite"), capsys))

    saves_calling(monkeypatch, start_another)
    assert main(train_args(out, "--seed", "0")) == 0
    status, err = second[0]
    assert status == 2, err
    line = one_line(err)
    assert "is in use by another process" in line and f"pid {os.getpid()}" in line
    assert json.loads((out / "run.json").read_text())["identity"]["seed"] == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0
    assert load_checkpoint(out / CHECKPOINT_NAME).state["steps_done"] >= 2048


def test_the_lock_is_released_when_the_run_ends(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path, "test"):
        with pytest.raises(RunDirError, match="in use by another process \\(test, pid"):
            DirectoryLock(tmp_path, "other").acquire()
    with DirectoryLock(tmp_path, "other"):  # free again
        pass


def test_resume_deletes_the_temp_files_of_killed_writers(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(train_args(out, steps=256)) == 0
    stale = [out / ".checkpoint.zip.99999.tmp", out / ".metrics.json.4242.tmp"]
    for path in [*stale, out / "notes.tmp"]:
        path.write_bytes(b"torn")
    status, err = run_cli(["train", "--resume", str(out), "--steps", "512", "--no-progress"],
                          capsys)  # fmt: skip
    assert status == 0, err
    assert not any(path.exists() for path in stale)
    assert (out / "notes.tmp").exists()  # not a file lmgym writes: left alone


# --- resume edge cases -------------------------------------------------------------------------


def test_resume_without_a_checkpoint_is_refused_naming_the_file(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(train_args(out, steps=256)) == 0
    (out / CHECKPOINT_NAME).unlink()
    for steps in ("512", "256"):  # more steps, and the finished run's own without metrics
        if steps == "256":
            (out / "metrics.json").unlink()
        status, err = run_cli(["train", "--resume", str(out), "--steps", steps], capsys)
        assert status == 2, err
        line = one_line(err)
        assert f"{out / CHECKPOINT_NAME} does not exist" in line and "--overwrite" in line
    assert not (out / "metrics.json").exists()  # nothing trained from step 0


@pytest.fixture(scope="module")
def finished_dqn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DQN run past learning_starts: its checkpoint has optimizer state and a replay buffer."""
    out = tmp_path_factory.mktemp("dqn") / "run"
    run_train(TrainConfig(env="CatGrid-v0", algo="dqn", steps=1100, n_envs=2, eval_episodes=2,
                          checkpoint_every=512, out=out, progress=False))  # fmt: skip
    return out


def edit_members(edit: Callable[[dict[str, bytes]], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        with zipfile.ZipFile(run / CHECKPOINT_NAME) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        edit(members)
        with zipfile.ZipFile(run / CHECKPOINT_NAME, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)

    return apply


def edit_header(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(members: dict[str, bytes]) -> None:
        header = json.loads(members["state.json"])
        edit(header)
        members["state.json"] = json.dumps(header).encode()

    return edit_members(apply)


def edit_tensors(member: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(members: dict[str, bytes]) -> None:
        tensors = safetensors.torch.load(members[member])
        edit(tensors)
        members[member] = safetensors.torch.save(tensors)

    return edit_members(apply)


def edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        data = json.loads((run / name).read_text())
        edit(data)
        (run / name).write_text(json.dumps(data))

    return apply


def write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(data)


def first_key(tensors: dict) -> str:
    return sorted(tensors)[0]


def set_replay(members: dict[str, bytes]) -> None:
    arrays = safetensors.numpy.load(members["replay_buffer.safetensors"])
    arrays["rewards"] = np.zeros((3, 7), dtype=np.float32)
    members["replay_buffer.safetensors"] = safetensors.numpy.save(arrays)


DAMAGE = {
    "run.json-truncated": (lambda run: write("run.json", (run / "run.json").read_bytes()[:20])(run),
                           ["run.json"]),
    "run.json-a-list": (write("run.json", b"[]"), ["run.json"]),
    "run.json-no-identity": (write("run.json", b'{"kind": "train"}'), ["run.json"]),
    "run.json-bad-setting": (edit_json("run.json", lambda m: m["identity"].update(n_envs="two")),
                             ["run.json", "n_envs='two'"]),
    "metrics.json-binary": (write("metrics.json", b"\x80\x00\xff"), ["metrics.json"]),
    "metrics.json-no-steps": (write("metrics.json", b'{"steps": "many"}'), ["metrics.json"]),
    "checkpoint-empty": (write(CHECKPOINT_NAME, b""), [CHECKPOINT_NAME, "not a readable zip"]),
    "checkpoint-truncated": (
        lambda run: write(CHECKPOINT_NAME, (run / CHECKPOINT_NAME).read_bytes()[:5000])(run),
        [CHECKPOINT_NAME]),
    "member-removed": (edit_members(lambda m: m.pop("policy.safetensors")),
                       ["'policy.safetensors' is missing"]),
    "state.json-not-json": (edit_members(lambda m: m.update({"state.json": b"{"})),
                            ["'state.json' is not JSON"]),
    "state.json-no-run": (edit_header(lambda h: h.pop("run")), ["'state.json'"]),
    "state.json-negative-steps": (edit_header(lambda h: h["run"].update(steps_done=-5)),
                                  ["'state.json'"]),
    "state.json-ragged-curve": (edit_header(lambda h: h["run"]["history"]["reward"].append(1.0)),
                                ["'state.json'"]),
    "state.json-other-algorithm": (edit_header(lambda h: h.update(algorithm="PPO")),
                                   ["written by 'PPO'"]),
    "state.json-replay-position": (edit_header(lambda h: h["replay_buffer"].update(pos=10**9)),
                                   ["'state.json'", "replay buffer"]),
    "policy-wrong-shape": (
        edit_tensors("policy.safetensors", lambda t: t.update({first_key(t): torch.zeros(3)})),
        ["'policy.safetensors'", "expected"]),
    "policy-extra-tensor": (
        edit_tensors("policy.safetensors", lambda t: t.update(evil=torch.zeros(1))),
        ["'policy.safetensors' does not fit"]),
    "optimizer-json-garbage": (edit_members(lambda m: m.update({"policy.optimizer.json": b"]"})),
                               ["'policy.optimizer.json'"]),
    "optimizer-wrong-shape": (
        edit_tensors("policy.optimizer.safetensors",
                     lambda t: t.update({first_key(t): torch.zeros(2, 2, 2)})),
        ["'policy.optimizer.safetensors'"]),
    "replay-wrong-shape": (edit_members(set_replay), ["'replay_buffer.safetensors'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_file_is_named_not_a_traceback(finished_dqn_run, tmp_path, capsys, case):
    run = Path(shutil.copytree(finished_dqn_run, tmp_path / "run"))
    damage, fragments = DAMAGE[case]
    damage(run)
    status, err = run_cli(["train", "--resume", str(run), "--steps", "2200", "--no-progress"],
                          capsys)  # fmt: skip
    assert status == 2, err
    line = one_line(err)
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_an_intact_copy_of_the_damaged_runs_resumes(finished_dqn_run, tmp_path, capsys) -> None:
    run = Path(shutil.copytree(finished_dqn_run, tmp_path / "run"))
    done = load_checkpoint(run / CHECKPOINT_NAME).state["steps_done"]
    status, err = run_cli(["train", "--resume", str(run), "--steps", "1200", "--no-progress"],
                          capsys)  # fmt: skip
    assert status == 0, err
    assert json.loads((run / "metrics.json").read_text())["resumed_at"] == [done] != [0]


def test_seeds_are_bounded(capsys) -> None:
    with pytest.raises(ValueError, match=r"seed=4294967296 must be an int in \[0, 4294967295\]"):
        TrainConfig(env="CatGrid-v0", seed=MAX_SEED + 1)
    status, err = run_cli(["train", "--env", "CatGrid-v0", "--seed", "4294967296"], capsys)
    assert status == 2 and "seed=4294967296" in one_line(err)
    with pytest.raises(ValueError, match="seeds up to 4294967296"):
        from lmgym.training.bench import BenchConfig

        BenchConfig(env="CatGrid-v0", seed_start=MAX_SEED, seeds=2)


@pytest.mark.parametrize("env", ["CatGrid-v0", "LMBandit-v0"])
def test_the_largest_seed_trains_and_resumes(tmp_path, tiny_lm_dir, capsys, env) -> None:
    out = tmp_path / "run"
    model = [] if env == "CatGrid-v0" else ["--model", str(tiny_lm_dir), "--n-envs", "4"]
    args = ["train", "--env", env, "--seed", str(MAX_SEED), "--steps", "64", "--eval-episodes",
            "2", "--out", str(out), "--no-progress", *model]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    steps = json.loads((out / "metrics.json").read_text())["steps"]
    status, err = run_cli(
        ["train", "--resume", str(out), "--steps", str(2 * steps), "--no-progress"], capsys
    )
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == MAX_SEED and metrics["resumed_at"] == [steps]


# --- failures after validation -----------------------------------------------------------------


def test_a_model_dir_that_does_not_exist_is_refused_before_claiming(tmp_path, tiny_lm_dir, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "LMBandit-v0", "--steps", "16", "--n-envs", "2",
            "--eval-episodes", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    status, err = run_cli([*args, "--model", str(tmp_path / "nonexistent")], capsys)
    assert status == 2 and "model=" in one_line(err) and "does not exist" in err
    assert not (out / "run.json").exists()
    status, err = run_cli([*args, "--model", str(tiny_lm_dir)], capsys)  # no --overwrite
    assert status == 0, err


def test_a_run_failing_before_its_first_checkpoint_gives_its_claim_back(
    tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"

    def broken(config, env):
        raise ModelLoadError("model='m' could not be loaded (simulated)")

    monkeypatch.setattr(trainer_module, "build_model", broken)
    status, err = run_cli(train_args(out, steps=256), capsys)
    assert status == 2 and "could not be loaded (simulated)" in one_line(err)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []
    monkeypatch.undo()
    status, err = run_cli(train_args(out, steps=256), capsys)  # the same command, no --overwrite
    assert status == 0, err


def test_a_full_disk_says_the_last_checkpoint_is_intact(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    real_write, writes = checkpoint._write, []

    def full_disk(file, data) -> None:
        if ".checkpoint.zip." in file.name:
            writes.append(len(data))
            if len(writes) >= 3:  # steps 0 and 512 were written; then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", file.name)
        real_write(file, data)

    monkeypatch.setattr(checkpoint, "_write", full_disk)
    status, err = run_cli(train_args(out), capsys)
    assert status == 1, err
    line = one_line(err)
    for fragment in (str(out), "No space left on device",
                     f"{out / CHECKPOINT_NAME} (step 512), is intact",
                     f"lmgym train --resume {out}"):  # fmt: skip
        assert fragment in line, (fragment, line)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert run_cli(["train", "--resume", str(out), "--no-progress"], capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_at"] == [512]


def test_ctrl_c_stops_at_the_next_rollout_with_a_final_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"

    def ctrl_c(number: int) -> None:
        if number == 2:  # just after the checkpoint at step 512
            os.kill(os.getpid(), signal.SIGINT)

    saved = saves_calling(monkeypatch, ctrl_c)
    status, err = run_cli(train_args(out), capsys)
    assert status == 130, err
    assert saved[:2] == [0, 512] and len(saved) == 3 and saved[2] > 512  # the final one
    final = saved[2]
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert f"interrupted. stopped at step {final} with a final checkpoint" in line
    assert f"lmgym train --resume {out}" in line
    assert load_checkpoint(out / CHECKPOINT_NAME).state["steps_done"] == final
    assert not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert run_cli(["train", "--resume", str(out), "--no-progress"], capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_at"] == [final]


def test_a_second_ctrl_c_stops_at_once_and_names_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    # Whatever this process had (pytest-xdist workers ignore SIGINT), it must get it back.
    handler_before = signal.getsignal(signal.SIGINT)

    def ctrl_c_twice(number: int) -> None:
        if number == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the first is handled (a stop is requested), then
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    saves_calling(monkeypatch, ctrl_c_twice)
    status, err = run_cli(train_args(out), capsys)
    assert status == 130, err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert f"The last good checkpoint, {out / CHECKPOINT_NAME} (step 512), is intact" in line
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored


def test_a_config_built_in_python_still_raises_plain_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_train(TrainConfig(env="CatGrid-v0", steps=64, n_envs=2, eval_episodes=2, out=out,
                          progress=False))  # fmt: skip
    with pytest.raises(ValueError, match="already holds a train run"):
        run_train(TrainConfig(env="CatGrid-v0", steps=64, n_envs=2, eval_episodes=2, out=out,
                              progress=False, seed=1))  # fmt: skip
    (out / "run.json").write_text("{")
    with pytest.raises(RunDirError, match="run.json is damaged"):
        TrainConfig(resume=out)
