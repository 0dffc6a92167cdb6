"""A run directory is data, never code; a run killed while saving resumes cleanly.

Run directories are shared ("here is my run, resume it"), so ``lmgym train --resume DIR`` must
not run anything a stranger put in DIR: every zip member, ``.pkl``, ``.pt`` and ``.bin`` below
is replaced by a pickle whose unpickling writes a marker file. The resume either works (the
stray files are never read) or is refused with one line naming the file; the marker must never
appear.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from stable_baselines3 import DQN

from lmgym.cli import main
from lmgym.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from lmgym.training.train import TrainConfig, run_train
from tests.helpers import ROOT

STEPS = 256


class _Payload:
    """Unpickling this runs ``exec(code)``: what a hostile file in a run directory would do."""

    def __init__(self, marker: Path) -> None:
        self.code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')"

    def __reduce__(self):
        return (exec, (self.code,))


def payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(payload(marker))  # the check below is only meaningful if this writes it
    assert marker.read_text() == "ran"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished DQN run (so its checkpoint holds a replay buffer) to resume for more steps."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    run_train(TrainConfig(env="CatGrid-v0", algo="dqn", steps=STEPS, n_envs=2, eval_episodes=2,
                          checkpoint_every=128, out=out, progress=False, seed=0))  # fmt: skip
    return out


def copy_run(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "run"))


def rewrite_checkpoint(run: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(run / CHECKPOINT_NAME, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def checkpoint_members(run: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(run / CHECKPOINT_NAME) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def resume(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """``lmgym train --resume RUN --steps 2*STEPS``: its exit status (None: it raised) and stderr.

    An exception is returned, not raised, so the marker is checked first.
    """
    capsys.readouterr()
    try:
        status = main(["train", "--resume", str(run), "--steps", str(2 * STEPS), "--no-progress"])
    except SystemExit as exit_info:
        status = int(exit_info.code or 0)
    except Exception as err:
        return None, f"raised {type(err).__name__}: {err}"
    return status, capsys.readouterr().err


def assert_refused(status: int | None, err: str, *fragments: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_each_checkpoint_member_replaced_by_a_pickle_is_refused(pristine, tmp_path, capsys):
    names = sorted(checkpoint_members(pristine))
    assert len(names) >= 3  # state, weights and the replay buffer at least
    ran, outcomes = [], {}
    for name in names:  # every member is tried before anything is asserted
        case = tmp_path / name
        case.mkdir()
        run = copy_run(pristine, case)
        marker = case / "PWNED"
        members = checkpoint_members(run)
        members[name] = payload(marker)
        rewrite_checkpoint(run, members)
        outcomes[name] = (run, *resume(run, capsys))
        if marker.exists():
            ran.append(name)
    assert ran == [], f"unpickled {ran}"
    for name, (run, status, err) in outcomes.items():
        assert_refused(status, err, str(run / CHECKPOINT_NAME), name)


def test_every_member_and_stray_pickle_replaced_is_refused(pristine, tmp_path, capsys) -> None:
    run = copy_run(pristine, tmp_path)
    marker = tmp_path / "PWNED"
    members = {name: payload(marker) for name in checkpoint_members(run)}
    for name in ("replay_buffer.pkl", "model.pt", "pytorch_model.bin", "model.zip"):
        members[name] = payload(marker)
    rewrite_checkpoint(run, members)
    status, err = resume(run, capsys)
    assert not marker.exists()
    assert_refused(status, err, str(run / CHECKPOINT_NAME))


def test_an_sb3_model_zip_with_serialized_code_is_never_loaded(pristine, tmp_path, capsys):
    """The format older lmgym versions wrote: SB3's model.zip, whose ':serialized:' entries
    SB3 un-cloudpickles on load, and a pickled replay buffer."""
    run = copy_run(pristine, tmp_path)
    marker = tmp_path / "PWNED"
    sb3_zip = io.BytesIO()
    DQN("MlpPolicy", "CartPole-v1", learning_starts=16, buffer_size=100).save(sb3_zip)
    with zipfile.ZipFile(io.BytesIO(sb3_zip.getvalue())) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(parts["data"])
    data["policy_class"] = {":type:": "<class 'abc.ABCMeta'>",
                            ":serialized:": base64.b64encode(payload(marker)).decode()}  # fmt: skip
    parts["data"] = json.dumps(data).encode()
    for name in parts:
        if name.endswith((".pth", ".pt")):
            parts[name] = payload(marker)
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    state = load_checkpoint(run / CHECKPOINT_NAME).state  # a valid state of the old layout
    rewrite_checkpoint(run, {"model.zip": crafted.getvalue(),
                             "state.json": json.dumps(state).encode(),
                             "replay_buffer.pkl": payload(marker)})  # fmt: skip
    status, err = resume(run, capsys)
    assert not marker.exists()
    assert_refused(status, err, str(run / CHECKPOINT_NAME), "older lmgym")


def test_stray_pickles_beside_an_intact_checkpoint_are_never_read(pristine, tmp_path, capsys):
    run = copy_run(pristine, tmp_path)
    marker = tmp_path / "PWNED"
    members = checkpoint_members(run)
    for name in ("replay_buffer.pkl", "model.pt", "pytorch_model.bin", "model.zip"):
        members[name] = payload(marker)
        (run / name).write_bytes(payload(marker))
    (run / "tb" / "events.pkl").write_bytes(payload(marker))
    rewrite_checkpoint(run, members)
    status, err = resume(run, capsys)
    assert status == 0, err
    assert not marker.exists()
    assert json.loads((run / "metrics.json").read_text())["steps"] >= 2 * STEPS


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    from lmgym.training import checkpoint
    from lmgym.cli import main

    real_write, saves = checkpoint._write, []

    def write(file, data):
        if ".checkpoint.zip." in file.name:
            saves.append(len(data))
            if len(saves) == 3:  # steps 0 and 512 are on disk; die half-way through the next
                file.write(data[: len(data) // 2])
                file.flush()
                os.fsync(file.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        real_write(file, data)

    checkpoint._write = write
    main(sys.argv[1:])
""")


def test_a_kill_during_a_checkpoint_write_resumes_and_leaves_no_temp_file(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "CatGrid-v0", "--algo", "ppo", "--steps", "2048", "--n-envs", "2",
            "--checkpoint-every", "512", "--eval-episodes", "2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    torn = [p for p in out.iterdir() if p.name.startswith(".checkpoint.zip.")]
    assert len(torn) == 1 and torn[0].name.endswith(".tmp")  # what a killed writer leaves
    assert load_checkpoint(out / CHECKPOINT_NAME).state["steps_done"] == 512  # intact

    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # not refused: the
    # killed process's lock died with it
    assert not torn[0].exists()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] >= 2048 and metrics["resumed_at"] == [512]
    assert os.path.getsize(out / CHECKPOINT_NAME) > 0
