"""Checkpoints are atomic: a crash while writing leaves the previous one loadable."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN, PPO

import lmgym  # noqa: F401
from lmgym.training import checkpoint
from lmgym.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_and_state(tmp_path: Path) -> None:
    env = gym.make("CatGrid-v0")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0).learn(64)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model, {"steps_done": 64})
    saved = load_checkpoint(path)
    assert saved.state == {"steps_done": 64} and saved.replay_buffer is None
    loaded = saved.load_model(PPO, env)
    assert loaded.num_timesteps == model.num_timesteps
    obs = np.arange(25)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_off_policy_checkpoint_keeps_the_replay_buffer(tmp_path: Path) -> None:
    env = gym.make("CatGrid-v0")
    model = DQN("MlpPolicy", env, learning_starts=16, buffer_size=500, seed=0).learn(64)
    saved = load_checkpoint(save_checkpoint(tmp_path / CHECKPOINT_NAME, model, {}))
    loaded = saved.load_model(DQN, env)
    assert loaded.replay_buffer is not None and loaded.replay_buffer.size() == 64


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    env = gym.make("CatGrid-v0")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0)
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
    assert load_checkpoint(path).load_model(PPO, env).num_timesteps == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left
