"""Atomic checkpoints of a training run: the SB3 model plus the run's own state, in one file.

A checkpoint is one zip file holding ``model.zip`` (SB3's ``model.save``: weights, optimizer,
hyper-parameters), ``state.json`` (steps done, the reward history so far, the env's adaptive β,
the evaluation before training, wall time) and, for off-policy algorithms, ``replay_buffer.pkl``.
It is written to a temporary file in the same directory, flushed and ``fsync``-ed, then moved
over the old one with ``os.replace`` (atomic on POSIX and Windows), and the directory is synced:
a run killed at any moment leaves either the previous checkpoint or the new one, never a torn
file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

CHECKPOINT_NAME = "checkpoint.zip"


class _KeepOpen(io.BytesIO):
    """A BytesIO that SB3's savers may ``close()`` without losing what they wrote."""

    def close(self) -> None:  # noqa: D102
        pass


def _write(file: IO[bytes], data: bytes) -> None:
    """Write ``data`` (its own function so tests can simulate a crash in the middle)."""
    file.write(data)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically: the old content or the new, never a mix.

    Example:
        >>> import tempfile
        >>> p = atomic_write_bytes(Path(tempfile.mkdtemp()) / "x.bin", b"abc")
        >>> p.read_bytes()
        b'abc'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            _write(file, data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write_bytes` of ``obj`` as indented JSON.

    Example:
        >>> import tempfile
        >>> p = atomic_write_json(Path(tempfile.mkdtemp()) / "m.json", {"a": 1})
        >>> json.loads(p.read_text())
        {'a': 1}
    """
    text = json.dumps(obj, indent=2, allow_nan=False)  # NaN is not JSON: write None instead
    return atomic_write_bytes(path, (text + "\n").encode())


@dataclass
class Checkpoint:
    """A checkpoint read back from disk.

    Attributes:
        model: The bytes of SB3's model zip (load with ``Algo.load(io.BytesIO(model))``).
        state: The run's state (JSON object).
        replay_buffer: The pickled replay buffer of an off-policy algorithm, else None.
    """

    model: bytes
    state: dict[str, Any]
    replay_buffer: bytes | None

    def load_model(self, cls: type[BaseAlgorithm], env: Any, **kwargs: Any) -> BaseAlgorithm:
        """Rebuild the model on ``env`` (SB3 resets the env on the next ``learn``)."""
        model = cls.load(io.BytesIO(self.model), env=env, force_reset=True, **kwargs)
        if self.replay_buffer is not None and isinstance(model, OffPolicyAlgorithm):
            model.load_replay_buffer(io.BytesIO(self.replay_buffer))
        return model


def save_checkpoint(path: str | Path, model: BaseAlgorithm, state: dict[str, Any]) -> Path:
    """Write ``model`` and ``state`` to the checkpoint file ``path`` atomically.

    Example:
        >>> import gymnasium as gym, lmgym, tempfile
        >>> from stable_baselines3 import PPO
        >>> path = Path(tempfile.mkdtemp()) / CHECKPOINT_NAME
        >>> _ = save_checkpoint(path, PPO("MlpPolicy", gym.make("CatGrid-v0")), {"steps": 0})
        >>> load_checkpoint(path).state
        {'steps': 0}
    """
    model_bytes = _KeepOpen()
    model.save(model_bytes)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("model.zip", model_bytes.getvalue())
        archive.writestr("state.json", json.dumps(state))
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            replay = _KeepOpen()
            model.save_replay_buffer(replay)
            archive.writestr("replay_buffer.pkl", replay.getvalue())
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Example:
        >>> load_checkpoint("missing.zip")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...
    """
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        replay = archive.read("replay_buffer.pkl") if "replay_buffer.pkl" in names else None
        return Checkpoint(
            model=archive.read("model.zip"),
            state=json.loads(archive.read("state.json")),
            replay_buffer=replay,
        )
