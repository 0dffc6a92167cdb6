"""Checkpoints: plain data only (safetensors + JSON), atomic, and checked when restored."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import safetensors.torch
import torch
from stable_baselines3 import A2C, DQN, PPO

import lmgym  # noqa: F401
from lmgym.training import checkpoint
from lmgym.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)


def ppo(seed: int = 0, **kwargs) -> PPO:
    return PPO("MlpPolicy", gym.make("CatGrid-v0"), n_steps=32, batch_size=32, seed=seed, **kwargs)


def test_round_trip_restores_weights_optimizer_and_counters(tmp_path: Path) -> None:
    model = ppo().learn(64)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model, {"steps_done": 64})
    saved = load_checkpoint(path)
    assert saved.state == {"steps_done": 64} and saved.algorithm == "PPO"
    fresh = ppo(seed=1)  # other initial weights: everything must come from the file
    saved.restore(fresh)
    assert fresh.num_timesteps == model.num_timesteps == 64
    assert fresh._n_updates == model._n_updates > 0
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(fresh.policy.state_dict()[key], value, rtol=0, atol=0)
    want, got = model.policy.optimizer.state_dict(), fresh.policy.optimizer.state_dict()
    assert got["param_groups"] == want["param_groups"]
    for index, entries in want["state"].items():
        for key, value in entries.items():
            torch.testing.assert_close(got["state"][index][key], value, rtol=0, atol=0)
    obs = np.arange(25)
    np.testing.assert_array_equal(
        fresh.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_a_checkpoint_holds_only_json_and_safetensors(tmp_path: Path) -> None:
    model = DQN("MlpPolicy", gym.make("CatGrid-v0"), learning_starts=16, buffer_size=500, seed=0)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model.learn(64), {"steps_done": 64})
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        for name in names:
            data = archive.read(name)
            if name.endswith(".json"):
                json.loads(data)
            else:
                assert name.endswith(".safetensors"), name
                safetensors.torch.load(data)
    assert "replay_buffer.safetensors" in names and not any(n.endswith(".pkl") for n in names)


def test_off_policy_checkpoint_restores_the_replay_buffer(tmp_path: Path) -> None:
    env = gym.make("CatGrid-v0")
    model = DQN("MlpPolicy", env, learning_starts=16, buffer_size=500, seed=0).learn(64)
    saved = load_checkpoint(save_checkpoint(tmp_path / CHECKPOINT_NAME, model, {}))
    fresh = DQN("MlpPolicy", env, learning_starts=16, buffer_size=500, seed=1)
    saved.restore(fresh)
    buffer, original = fresh.replay_buffer, model.replay_buffer
    assert buffer is not None and original is not None
    assert buffer.size() == original.size() == 64 and buffer.pos == original.pos
    for name in checkpoint.REPLAY_ARRAYS:
        np.testing.assert_array_equal(getattr(buffer, name), getattr(original, name))
    assert fresh._n_calls == model._n_calls == 64  # DQN's target-network schedule


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = ppo()
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model, {"steps_done": 0})
    before = path.read_bytes()

    def crash(file, data) -> None:
        file.write(data[: len(data) // 2])  # half the bytes reach the disk, then the process dies
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(checkpoint, "_write", crash)
    model.learn(64)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, model, {"steps_done": 64})
    assert path.read_bytes() == before
    assert load_checkpoint(path).state == {"steps_done": 0}
    assert load_checkpoint(path).restore(ppo()).num_timesteps == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left


def test_the_pickle_based_format_of_older_versions_is_refused(tmp_path: Path) -> None:
    sb3_zip = io.BytesIO()
    ppo().save(sb3_zip)
    path = tmp_path / CHECKPOINT_NAME
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.zip", sb3_zip.getvalue())
        archive.writestr("state.json", json.dumps({"steps_done": 0}))
    with pytest.raises(CheckpointError, match="format of an older lmgym.*can run code"):
        load_checkpoint(path)


def test_restoring_into_another_model_names_the_member(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, ppo(), {})
    with pytest.raises(CheckpointError, match="written by 'PPO'.*build 'A2C'"):
        load_checkpoint(path).restore(A2C("MlpPolicy", gym.make("CatGrid-v0")))
    wider = ppo(policy_kwargs={"net_arch": [8]})
    with pytest.raises(CheckpointError, match=r"member 'policy.safetensors' does not fit"):
        load_checkpoint(path).restore(wider)


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    for name in (".checkpoint.zip.123.tmp", ".metrics.json.9.tmp", "notes.tmp",
                 ".checkpoint.zip.tmp", ".other.zip.5.tmp", CHECKPOINT_NAME):  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path, (CHECKPOINT_NAME, "metrics.json"))
    assert sorted(p.name for p in removed) == [".checkpoint.zip.123.tmp", ".metrics.json.9.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".checkpoint.zip.tmp", ".other.zip.5.tmp", CHECKPOINT_NAME, "notes.tmp"]  # fmt: skip
