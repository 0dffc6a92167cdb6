"""An output directory holds at most one run: claim it, lock it, resume it, or overwrite it.

``lmgym train`` and ``lmgym bench`` write ``run.json`` into their ``--out`` directory: the kind
of run (``train`` or ``bench``) and the settings that define it. A second command pointed at the
same directory is refused unless it says ``--resume`` (and its settings match) or
``--overwrite`` (which deletes the files runs write there, and nothing else).

While a run works in a directory it holds an exclusive lock on ``DIR/.lmgym.lock``
(:class:`DirectoryLock`, an OS file lock that the kernel releases when the process ends, even
when it is killed): a second process pointed at the same directory is refused at once instead
of mixing its files with the first's. Holding the lock, the run deletes the temporary files a
killed process left behind (``.checkpoint.zip.<pid>.tmp``).

:func:`check_out_location` refuses, before any work, an output location that cannot be written
(a file, a read-only place, ``/proc``): every ``lmgym`` command checks its ``--out`` with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from lmgym.error import Error
from lmgym.training.checkpoint import atomic_write_json, remove_stale_temp_files

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

__all__ = [
    "LOCK_NAME",
    "MARKER",
    "OUTPUTS",
    "DirectoryLock",
    "RunDirError",
    "check_out_location",
    "prepare_out_dir",
    "claim",
    "load_marker",
    "read_json_file",
    "read_marker",
]

MARKER = "run.json"
LOCK_NAME = ".lmgym.lock"
# What each kind of run writes into its directory: all that --overwrite removes.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "train": (MARKER, "metrics.json", "checkpoint.zip", "curve.png", "tb"),
    "bench": (MARKER, "results.json", "results.md", "curves.png", "frontier.png", "runs"),
}


class RunDirError(Error, ValueError):
    """An output directory cannot be used: unwritable, in use, holding another run, or damaged."""


def check_out_location(out: str | Path, argument: str = "out") -> Path:
    """``out`` as a Path, once it is known that lmgym can create it and write files in it.

    Nothing is left behind: a directory that does not exist yet is not created, and the probe
    file is removed.

    Raises:
        RunDirError: ``out`` is a file, lies under a file, or its nearest existing directory
            refuses a new file (read-only, ``/proc``), naming ``argument``.

    Example:
        >>> import tempfile
        >>> check_out_location(Path(tempfile.mkdtemp()) / "new" / "run").name
        'run'
        >>> check_out_location("/proc/lmgym-run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.rundir.RunDirError: out='/proc/lmgym-run' is not writable: ...
    """
    out = Path(out)
    option = "--" + argument.replace("_", "-")
    try:
        existing = out.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            where = "is a file" if existing == out.absolute() else f"lies under the file {existing}"
            raise RunDirError(
                f"{argument}={str(out)!r} {where}; expected a directory (new or existing) to "
                f"write the results to. Choose another {option}."
            )
        probe = tempfile.mkdtemp(prefix=".lmgym-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as err:
        raise RunDirError(
            f"{argument}={str(out)!r} is not writable: creating a file in {existing} failed "
            f"({err.strerror or err}); expected a directory lmgym may write to. Choose another "
            f"{option}."
        ) from None
    return out


class DirectoryLock:
    """An exclusive lock on ``directory`` (created if needed) for one process at a time.

    The lock is an OS lock on ``directory/.lmgym.lock`` (``flock`` on POSIX, ``msvcrt.locking``
    on Windows): the kernel drops it when the process exits or is killed, so a crashed run never
    blocks the next one. The file stays; it records who holds the lock, for the message the
    next process gets.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with DirectoryLock(d, "lmgym train"):
        ...     DirectoryLock(d, "lmgym train").acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.rundir.RunDirError: out=... is in use by another process ...
    """

    def __init__(self, directory: Path, command: str) -> None:
        self.directory = Path(directory)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock; a :class:`RunDirError` if another process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            except OSError:  # Windows keeps a locked byte unreadable to others
                holder = "unknown"
            os.close(fd)
            raise RunDirError(
                f"out={str(self.directory)!r} is in use by another process ({holder}); two "
                "runs in one directory would mix their files. Wait for it to finish (or stop "
                "it), or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.command}, pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _lock(fd: int) -> None:
    """Lock ``fd`` without waiting; an OSError when another process holds it."""
    if sys.platform == "win32":
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def claim(out: Path, kind: Literal["train", "bench"]) -> Iterator[DirectoryLock]:
    """Hold the lock of ``out`` for a ``kind`` run; first delete killed writers' temp files.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / ".checkpoint.zip.4242.tmp").write_bytes(b"torn")
        >>> with claim(d, "train"):
        ...     sorted(p.name for p in d.iterdir())
        ['.lmgym.lock']
    """
    with DirectoryLock(out, f"lmgym {kind}") as lock:
        remove_stale_temp_files(out, OUTPUTS[kind])
        yield lock


def read_json_file(path: Path, what: str) -> Any:
    """The JSON in ``path`` (``what`` it should hold, for the message), or a RunDirError.

    Example:
        >>> read_json_file(Path("no-such.json"), "a run's metrics")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.rundir.RunDirError: no-such.json is damaged or unreadable ...
    """
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise RunDirError(
            f"{path} is damaged or unreadable ({type(err).__name__}: {err}); expected {what}. "
            "Restore the file, or start afresh with --overwrite."
        ) from None


def load_marker(path: Path) -> dict[str, Any]:
    """The ``run.json`` at ``path``, checked: a :class:`RunDirError` names it if damaged."""
    marker = read_json_file(path, f"the {MARKER} that lmgym train or lmgym bench writes")
    if not (
        isinstance(marker, dict)
        and isinstance(marker.get("kind"), str)
        and isinstance(marker.get("identity"), dict)
        and isinstance(marker.get("details", {}), dict)
    ):
        raise RunDirError(
            f"{path} is damaged: expected a JSON object with 'kind', 'identity' and 'details' "
            "(as lmgym writes it). Restore the file, or start afresh with --overwrite."
        )
    marker.setdefault("details", {})
    return marker


def _describe(marker: dict[str, Any]) -> str:
    identity = marker.get("identity", {})
    keys = [k for k in ("env", "algo", "policy", "seed", "steps") if k in identity]
    shown = ", ".join(f"{k}={identity[k]!r}" for k in keys)
    return f"a {marker.get('kind', '?')} run ({shown})"


def prepare_out_dir(
    out: Path,
    kind: Literal["train", "bench"],
    identity: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    details: dict[str, Any] | None = None,
) -> bool:
    """Make ``out`` ready for a run; returns True when it continues an existing run.

    Args:
        out: The ``--out`` directory.
        kind: ``train`` or ``bench``.
        identity: The settings that must match for ``--resume`` (JSON-ready).
        resume: Continue the run in ``out`` if there is one (a fresh run otherwise).
        overwrite: Delete a previous run's outputs in ``out`` and start afresh.
        details: Settings that may change when the run is resumed (e.g. its steps), stored
            with the identity in ``run.json``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> prepare_out_dir(out, "train", {"seed": 0}, resume=False, overwrite=False)
        False
        >>> prepare_out_dir(out, "train", {"seed": 0}, resume=True, overwrite=False)
        True
    """
    if resume and overwrite:
        raise ValueError(
            "resume=True with overwrite=True: expected one of the two (--resume continues the "
            "run in --out, --overwrite deletes it and starts afresh)."
        )
    marker_path = out / MARKER
    leftovers = [name for name in OUTPUTS[kind] if (out / name).exists()]
    if marker_path.exists():
        marker = load_marker(marker_path)
    elif leftovers:
        marker = {"kind": "unknown", "identity": {}}
    else:
        marker = None
    if marker is not None:
        if overwrite:
            for name in OUTPUTS["train"] + OUTPUTS["bench"]:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif not resume:
            how = f"--resume {out}" if kind == "train" else "--resume"
            raise RunDirError(
                f"out={str(out)!r} already holds {_describe(marker)}; expected a new directory. "
                f"Pass {how} to continue that run, --overwrite to delete it and start afresh, "
                "or choose another --out."
            )
        else:
            _check_same_run(out, marker, kind, identity)
            atomic_write_json(marker_path, {**marker, "details": details or {}})
            return True
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker_path, {"kind": kind, "identity": identity, "details": details or {}})
    return False


def read_marker(out: Path, kind: Literal["train", "bench"]) -> dict[str, Any]:
    """The ``run.json`` of the ``kind`` run in ``out``; a RunDirError if there is none.

    Example:
        >>> read_marker(Path("no-such-dir"), "train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.training.rundir.RunDirError: resume='no-such-dir' holds no train run ...
    """
    path = out / MARKER
    marker = load_marker(path) if path.exists() else None
    if marker is None or marker.get("kind") != kind:
        raise RunDirError(
            f"resume={str(out)!r} holds no {kind} run (no {MARKER} written by lmgym {kind}); "
            f"expected the --out directory of an earlier `lmgym {kind}` run."
        )
    return marker


def _check_same_run(out: Path, marker: dict[str, Any], kind: str, identity: dict[str, Any]) -> None:
    if marker.get("kind") != kind:
        raise RunDirError(
            f"resume=True but out={str(out)!r} holds {_describe(marker)}, not a {kind} run; "
            "expected the --out of the run to continue, or --overwrite to start afresh."
        )
    saved = marker.get("identity", {})
    mismatches = [
        f"{key}: {saved.get(key)!r} in the run, {identity.get(key)!r} now"
        for key in sorted(set(saved) | set(identity))
        if saved.get(key) != identity.get(key)
    ]
    if mismatches:
        raise RunDirError(
            f"resume=True but the run in out={str(out)!r} has other settings ("
            + "; ".join(mismatches)
            + "); expected the same settings as the run, or --overwrite to start afresh."
        )
