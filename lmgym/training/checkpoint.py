"""Atomic, pickle-free checkpoints of a training run.

A checkpoint is one zip file (stored, not compressed) of plain data:

- ``state.json``: the run's state (steps done, the reward history so far, the env's adaptive
  β, the evaluation before training, wall time) and the algorithm's counters (``num_timesteps``
  and the like);
- ``<name>.safetensors`` for each module and optimizer that SB3 itself would save
  (``_get_torch_save_params``: ``policy`` and ``policy.optimizer`` for every algorithm
  lmgym trains), plus ``<name>.json`` with an optimizer's hyper-parameters and layout;
- ``replay_buffer.safetensors`` for off-policy algorithms (DQN): the filled rows of the buffer.

Nothing in it is unpickled. SB3's own ``model.zip`` keeps some entries as cloudpickle and its
replay buffer as a pickle, so loading one runs whatever code it names; a run directory is
something people share, so lmgym never writes or reads that format. To resume, the caller
rebuilds the algorithm from the run's config and :meth:`Checkpoint.restore` loads the tensors
into it; each member is checked against the rebuilt model (names, shapes, dtypes), and a damaged
one is a :class:`CheckpointError` naming the file and the member.

The file is written to a temporary sibling (``.checkpoint.zip.<pid>.tmp``), flushed and
``fsync``-ed, then moved over the old one with ``os.replace`` (atomic on POSIX and Windows), and
the directory is synced: a run killed at any moment leaves either the previous checkpoint or the
new one, never a torn file. A process killed mid-write leaves its temporary file behind;
:func:`remove_stale_temp_files` clears such files when the directory is next claimed.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from lmgym.error import Error

if TYPE_CHECKING:
    import torch
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.buffers import ReplayBuffer

# torch, safetensors and SB3 are imported by the functions that move tensors, not here: the
# run-directory rules (lmgym.training.rundir) use this module's atomic writes while the CLI
# validates options, before any torch is needed.

__all__ = [
    "CHECKPOINT_NAME",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_checkpoint",
    "remove_stale_temp_files",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.zip"
FORMAT = "lmgym-checkpoint"
VERSION = 2  # version 1 held SB3's pickled model.zip; it is refused, never loaded
STATE = "state.json"
REPLAY = "replay_buffer.safetensors"
# The arrays of SB3's ReplayBuffer that a resumed DQN needs (next_observations: the buffer is
# built with optimize_memory_usage=False).
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
# Counters of SB3's algorithms that a rebuilt one must get back (the rest is its config).
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")


class CheckpointError(Error, ValueError):
    """A checkpoint file is missing, damaged, or does not belong to the run being resumed."""


def _write(file: IO[bytes], data: bytes) -> None:
    """Write ``data`` (its own function so tests can simulate a crash in the middle)."""
    file.write(data)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically: the old content or the new, never a mix.

    Example:
        >>> import tempfile
        >>> p = atomic_write_bytes(Path(tempfile.mkdtemp()) / "x.bin", b"abc")
        >>> p.read_bytes()
        b'abc'
    """
    path = Path(path)
    tmp = _temp_path(path)
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


def remove_stale_temp_files(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left for ``names``.

    A process killed while writing ``NAME`` leaves ``.NAME.<pid>.tmp``. Call this only while
    holding the directory's lock (no other process can be writing there); returns what it
    deleted.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / ".checkpoint.zip.4242.tmp").write_bytes(b"torn")
        >>> [p.name for p in remove_stale_temp_files(d, (CHECKPOINT_NAME,))]
        ['.checkpoint.zip.4242.tmp']
    """
    patterns = [re.compile(rf"\.{re.escape(name)}\.\d+\.tmp") for name in names]
    removed = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.is_file() and any(p.fullmatch(path.name) for p in patterns):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------------- writing


def _cpu_copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Copies: safetensors refuses tensors that share memory (GPT-2 ties lm_head to wte).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _optimizer_members(optimizer: torch.optim.Optimizer) -> tuple[bytes, dict[str, Any]]:
    """The optimizer's tensors (safetensors bytes) and its JSON layout and hyper-parameters."""
    import safetensors.torch
    import torch

    saved = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for index, entries in saved["state"].items():
        values: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                values[key] = value
        state[str(index)] = {"tensors": sorted(k for k in entries if k not in values)}
        state[str(index)]["values"] = values
    layout = {"param_groups": saved["param_groups"], "state": state}
    json.dumps(layout, allow_nan=False)  # fail here, not at load, on a value JSON cannot hold
    return safetensors.torch.save(_cpu_copies(tensors)), layout


def _replay_members(buffer: ReplayBuffer) -> tuple[bytes, dict[str, Any]]:
    import safetensors.numpy
    from stable_baselines3.common.buffers import ReplayBuffer

    assert type(buffer) is ReplayBuffer and not buffer.optimize_memory_usage, type(buffer)
    rows = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: np.ascontiguousarray(getattr(buffer, name)[:rows]) for name in REPLAY_ARRAYS}
    return safetensors.numpy.save(arrays), {"pos": int(buffer.pos), "full": bool(buffer.full)}


def save_checkpoint(path: str | Path, model: BaseAlgorithm, state: dict[str, Any]) -> Path:
    """Write ``model`` and the run's ``state`` (JSON-ready) to the checkpoint ``path`` atomically.

    Example:
        >>> import gymnasium as gym, lmgym, tempfile
        >>> from stable_baselines3 import PPO
        >>> path = Path(tempfile.mkdtemp()) / CHECKPOINT_NAME
        >>> _ = save_checkpoint(path, PPO("MlpPolicy", gym.make("CatGrid-v0")), {"steps": 0})
        >>> load_checkpoint(path).state
        {'steps': 0}
    """
    import safetensors.torch
    import torch
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    modules, variables = model._get_torch_save_params()
    assert not variables, f"{type(model).__name__} keeps tensors outside modules: {variables}"
    members: dict[str, bytes] = {}
    layouts: dict[str, Any] = {}
    for name in modules:
        obj = _attribute(model, name)
        if isinstance(obj, torch.optim.Optimizer):
            members[f"{name}.safetensors"], layouts[name] = _optimizer_members(obj)
            members[f"{name}.json"] = json.dumps(layouts[name]).encode()
        else:
            assert isinstance(obj, torch.nn.Module), (name, type(obj))
            members[f"{name}.safetensors"] = safetensors.torch.save(_cpu_copies(obj.state_dict()))
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "algorithm": type(model).__name__,
        "modules": list(modules),
        "counters": {k: int(getattr(model, k)) for k in COUNTERS if hasattr(model, k)},
        "replay_buffer": None,
        "run": state,
    }
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        members[REPLAY], header["replay_buffer"] = _replay_members(model.replay_buffer)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(STATE, json.dumps(header))
        for name, data in members.items():
            archive.writestr(name, data)
    return atomic_write_bytes(path, buffer.getvalue())


def _attribute(model: BaseAlgorithm, dotted: str) -> Any:
    obj: Any = model
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------- reading


@dataclass
class Checkpoint:
    """A checkpoint read back from disk: plain data, checked against a model on restore.

    Attributes:
        path: The checkpoint file (named in every error).
        state: The run's state, as given to :func:`save_checkpoint`.
        algorithm: The class name of the algorithm that wrote it.
        counters: The algorithm's counters (``num_timesteps``, ...).
        members: The other members of the zip, by name (safetensors and JSON bytes).
        replay_buffer: ``pos`` and ``full`` of an off-policy replay buffer, else None.
    """

    path: Path
    state: dict[str, Any]
    algorithm: str
    counters: dict[str, int]
    members: dict[str, bytes]
    replay_buffer: dict[str, Any] | None

    def damaged(self, member: str, problem: str) -> CheckpointError:
        """The error for a damaged ``member`` of this checkpoint (``problem`` says how)."""
        return CheckpointError(
            f"{self.path} is damaged: its member {member!r} {problem}. The checkpoint cannot "
            "be resumed; start the run afresh (lmgym train --overwrite)."
        )

    def _member(self, name: str) -> bytes:
        if name not in self.members:
            raise self.damaged(name, "is missing")
        return self.members[name]

    def _tensors(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_safetensors_bytes

        try:
            return load_safetensors_bytes(self._member(name))  # tensors only, no pickle
        except Exception as err:  # safetensors raises its own error type on a bad header
            raise self.damaged(name, f"is not a safetensors file ({err})") from None

    def restore(self, model: BaseAlgorithm) -> BaseAlgorithm:
        """Load the checkpoint into ``model``, built from the run's config; returns ``model``.

        Raises:
            CheckpointError: A member is missing or damaged, or does not fit ``model`` (another
                algorithm, other shapes): the message names the file and the member.
        """
        import torch
        from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

        if self.algorithm != type(model).__name__:
            raise CheckpointError(
                f"{self.path} was written by {self.algorithm!r}, but the run's settings build "
                f"{type(model).__name__!r}; expected the checkpoint of this run."
            )
        modules, _ = model._get_torch_save_params()
        for name in modules:
            obj = _attribute(model, name)
            if isinstance(obj, torch.optim.Optimizer):
                self._restore_optimizer(name, obj)
            else:
                self._restore_module(name, obj)
        for key, value in self.counters.items():
            if hasattr(model, key):
                setattr(model, key, value)
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            self._restore_replay(model.replay_buffer)
        return model

    def _restore_module(self, name: str, module: torch.nn.Module) -> None:
        member = f"{name}.safetensors"
        tensors = self._tensors(member)
        expected = module.state_dict()
        _check_tensors(self, member, tensors, {k: (v.shape, v.dtype) for k, v in expected.items()})
        module.load_state_dict(tensors, strict=True)

    def _restore_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        member = f"{name}.json"
        try:
            layout = json.loads(self._member(member))
            groups, state = layout["param_groups"], layout["state"]
        except (ValueError, KeyError, TypeError) as err:
            raise self.damaged(member, f"is not the JSON lmgym writes ({err!r})") from None
        fresh = optimizer.state_dict()
        if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
            raise self.damaged(member, "has other parameter groups than the run's optimizer")
        restored_groups = []
        for group, fresh_group in zip(groups, fresh["param_groups"], strict=True):
            if not isinstance(group, dict) or group.get("params") != fresh_group["params"]:
                raise self.damaged(member, "has other parameters than the run's optimizer")
            group = dict(group)
            for key, value in fresh_group.items():  # JSON turned tuples (Adam's betas) into lists
                if isinstance(value, tuple) and isinstance(group.get(key), list):
                    group[key] = tuple(group[key])
            restored_groups.append(group)
        shapes = {
            index: param.shape
            for index, param in enumerate(p for g in optimizer.param_groups for p in g["params"])
        }
        tensors = self._tensors(f"{name}.safetensors")
        restored_state: dict[int, dict[str, Any]] = {}
        if not isinstance(state, dict):
            raise self.damaged(member, "has no per-parameter state")
        for key, entry in state.items():
            if not (key.isdigit() and int(key) in shapes and isinstance(entry, dict)):
                raise self.damaged(member, f"has state for an unknown parameter {key!r}")
            values = entry.get("values", {})
            names = entry.get("tensors", [])
            if not isinstance(values, dict) or not isinstance(names, list):
                raise self.damaged(member, f"has a malformed entry for parameter {key}")
            restored = dict(values)
            for tensor_name in names:
                tensor = tensors.get(f"{key}.{tensor_name}")
                if tensor is None:
                    raise self.damaged(f"{name}.safetensors", f"lacks {key}.{tensor_name}")
                if tensor.shape not in ((), shapes[int(key)]):  # (): a scalar, e.g. Adam's step
                    raise self.damaged(
                        f"{name}.safetensors",
                        f"holds {key}.{tensor_name} of shape {tuple(tensor.shape)} for a "
                        f"parameter of shape {tuple(shapes[int(key)])}",
                    )
                restored[tensor_name] = tensor
            restored_state[int(key)] = restored
        try:
            optimizer.load_state_dict({"state": restored_state, "param_groups": restored_groups})
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise self.damaged(member, f"does not fit the run's optimizer ({err})") from None

    def _restore_replay(self, buffer: ReplayBuffer) -> None:
        import safetensors.numpy
        from stable_baselines3.common.buffers import ReplayBuffer

        assert type(buffer) is ReplayBuffer and not buffer.optimize_memory_usage, type(buffer)
        info = self.replay_buffer
        if info is None:
            raise self.damaged(STATE, "has no replay buffer entry for an off-policy algorithm")
        pos, full = info.get("pos"), info.get("full")
        if not (isinstance(pos, int) and isinstance(full, bool) and 0 <= pos < buffer.buffer_size):
            raise self.damaged(STATE, f"has a replay buffer position outside the buffer: {info}")
        rows = buffer.buffer_size if full else pos
        try:
            arrays = safetensors.numpy.load(self._member(REPLAY))
        except CheckpointError:
            raise
        except Exception as err:
            raise self.damaged(REPLAY, f"is not a safetensors file ({err})") from None
        expected = {
            name: ((rows, *getattr(buffer, name).shape[1:]), getattr(buffer, name).dtype)
            for name in REPLAY_ARRAYS
        }
        for name, (shape, dtype) in expected.items():
            array = arrays.get(name)
            if array is None or array.shape != shape or array.dtype != dtype:
                got = None if array is None else (array.shape, str(array.dtype))
                raise self.damaged(REPLAY, f"holds {name} as {got}, expected {(shape, str(dtype))}")
        for name in REPLAY_ARRAYS:
            getattr(buffer, name)[:rows] = arrays[name]
        buffer.pos, buffer.full = pos, full


def _check_tensors(
    checkpoint: Checkpoint,
    member: str,
    tensors: dict[str, torch.Tensor],
    expected: dict[str, tuple[torch.Size, torch.dtype]],
) -> None:
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise checkpoint.damaged(
            member, f"does not fit the run's model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, (shape, dtype) in expected.items():
        if tensors[key].shape != shape or tensors[key].dtype != dtype:
            raise checkpoint.damaged(
                member,
                f"holds {key} as {tuple(tensors[key].shape)} {tensors[key].dtype}, expected "
                f"{tuple(shape)} {dtype}",
            )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; nothing in it is unpickled.

    Raises:
        CheckpointError: ``path`` is missing, not a zip, an older lmgym's pickle-based format,
            or its ``state.json`` is damaged (the message names the file and the member).

    Example:
        >>> load_checkpoint("missing.zip")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.checkpoint.CheckpointError: missing.zip does not exist; ...
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; expected the {CHECKPOINT_NAME} that lmgym train writes "
            "into its --out directory."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"{path} is damaged: it is not a readable zip file ({err}). The checkpoint cannot "
            "be resumed; start the run afresh (lmgym train --overwrite)."
        ) from None
    checkpoint = Checkpoint(path, {}, "", {}, members, None)
    header: Any = None
    problem = "is missing"
    if STATE in members:
        try:
            header = json.loads(members[STATE])
            problem = f"is not an lmgym checkpoint header (no format {FORMAT!r})"
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            problem = f"is not JSON ({err})"
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        if "model.zip" in members:
            raise CheckpointError(
                f"{path} is in the format of an older lmgym, which kept SB3's pickled model.zip; "
                "lmgym no longer loads it, because unpickling a file from elsewhere can run "
                "code. Start the run afresh (lmgym train --overwrite), or, if you trust the "
                "file, resume it with the lmgym version that wrote it."
            )
        raise checkpoint.damaged(STATE, problem)
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {header.get('version')!r}; this lmgym reads "
            f"version {VERSION}. Resume it with the lmgym that wrote it, or start afresh."
        )
    counters = header.get("counters")
    if not (
        isinstance(header.get("run"), dict)
        and isinstance(header.get("algorithm"), str)
        and isinstance(counters, dict)
        and all(k in COUNTERS and _is_count(v) for k, v in counters.items())
        and (header.get("replay_buffer") is None or isinstance(header["replay_buffer"], dict))
    ):
        raise checkpoint.damaged(STATE, "lacks or mangles the run, algorithm or counters entries")
    checkpoint.state = header["run"]
    checkpoint.algorithm = header["algorithm"]
    checkpoint.counters = counters
    checkpoint.replay_buffer = header["replay_buffer"]
    return checkpoint


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
