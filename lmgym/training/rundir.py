"""An output directory holds at most one run: claim it, resume it, or overwrite it on request.

``lmgym train`` and ``lmgym bench`` write ``run.json`` into their ``--out`` directory: the kind
of run (``train`` or ``bench``) and the settings that define it. A second command pointed at the
same directory is refused unless it says ``--resume`` (and its settings match) or
``--overwrite`` (which deletes the files runs write there, and nothing else).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from lmgym.training.checkpoint import atomic_write_json

MARKER = "run.json"
# What each kind of run writes into its directory: all that --overwrite removes.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "train": (MARKER, "metrics.json", "checkpoint.zip", "curve.png", "tb"),
    "bench": (MARKER, "results.json", "results.md", "curves.png", "runs"),
}


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
        marker = json.loads(marker_path.read_text())
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
            raise ValueError(
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
    """The ``run.json`` of the ``kind`` run in ``out``; a ValueError if there is none.

    Example:
        >>> read_marker(Path("no-such-dir"), "train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: resume='no-such-dir' holds no train run ...
    """
    path = out / MARKER
    marker = json.loads(path.read_text()) if path.exists() else None
    if marker is None or marker.get("kind") != kind:
        raise ValueError(
            f"resume={str(out)!r} holds no {kind} run (no {MARKER} written by lmgym {kind}); "
            f"expected the --out directory of an earlier `lmgym {kind}` run."
        )
    return marker


def _check_same_run(out: Path, marker: dict[str, Any], kind: str, identity: dict[str, Any]) -> None:
    if marker.get("kind") != kind:
        raise ValueError(
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
        raise ValueError(
            f"resume=True but the run in out={str(out)!r} has other settings ("
            + "; ".join(mismatches)
            + "); expected the same settings as the run, or --overwrite to start afresh."
        )
