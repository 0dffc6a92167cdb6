"""``lmgym export``: the fine-tuned language model of an ``lmgym train`` run, as a model directory.

``lmgym export RUN_DIR --out MODEL_DIR`` reads the run's ``checkpoint.zip`` (safetensors and
JSON: nothing in it is unpickled) and writes a Hugging Face model directory: ``config.json``,
``model.safetensors``, ``generation_config.json`` and the tokenizer's files. Load it like any
other model::

    from transformers import AutoModelForCausalLM, pipeline
    model = AutoModelForCausalLM.from_pretrained("MODEL_DIR")
    pipeline("text-generation", model="MODEL_DIR")("the pizza was", max_new_tokens=8)

or train it further: ``lmgym train --model MODEL_DIR``, ``gym.make("LMBandit-v0",
model="MODEL_DIR")``.

The run is rebuilt from the settings in its ``run.json`` and the checkpoint loaded into it, as
``lmgym train --resume`` does; the policy's LM (LoRA adapters merged, if it has any) is then
saved with ``save_pretrained``. The export is the last checkpoint's weights: the end of the run,
or, for a run that was stopped, the step its checkpoint names. SB3's ``PPO.load`` cannot read
``checkpoint.zip`` (it is not SB3's pickled format), which is why this command exists.

Only runs trained with the LM policy (``--policy lm``) hold a language model to export; a run
with SB3's MLP policy is refused. The directory is written to a temporary sibling and renamed
into place at the end, so ``MODEL_DIR`` holds a whole export or none. An existing non-empty
``MODEL_DIR`` is replaced only with ``--overwrite``, and only when it holds nothing but the files
of a model directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmgym.training.checkpoint import CHECKPOINT_NAME
from lmgym.training.rundir import MARKER, RunDirError, check_out_location, load_marker

# This module is what `lmgym export` imports to build its options: torch, transformers and SB3
# are imported by run_export, when the work starts (`lmgym export --help` answers at once).

__all__ = ["MODEL_FILES", "ExportConfig", "ExportResult", "render_export", "run_export"]

MODEL_FILES = re.compile(
    r"config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors"
    r"|model\.safetensors\.index\.json|tokenizer(_config)?\.json|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\.(json|txt)|merges\.txt|tokenizer\.model|chat_template\.(jinja|json)"
)
"""Names of the files a Hugging Face model directory holds: all that ``--overwrite`` replaces."""


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``lmgym export``.

    Attributes:
        run_dir: The --out directory of an ``lmgym train`` run with the LM policy.
        out: Directory to write the model to (config.json, model.safetensors,
            generation_config.json, the tokenizer's files); it must be new or empty.
        overwrite: Replace an existing non-empty --out that holds a model directory (and
            nothing else).
    """

    run_dir: Path = field(metadata={"positional": True})
    out: Path
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "out", Path(self.out))
        if not isinstance(self.overwrite, bool):
            raise TypeError(f"overwrite={self.overwrite!r} is not a bool; expected True or False.")
        self.run_settings()  # the run directory holds an LM-policy train run
        check_out_location(self.out)
        _check_out_contents(self.out, self.overwrite)

    def run_settings(self) -> dict[str, Any]:
        """The settings of the run in ``run_dir`` (its ``run.json`` identity), checked.

        Raises:
            RunDirError: ``run_dir`` is not the directory of an ``lmgym train`` run, its
                ``run.json`` is damaged, or the run has no checkpoint.
            ValueError: The run was trained with SB3's MLP policy (no language model).
        """
        run_dir = self.run_dir
        marker_path = run_dir / MARKER
        if not marker_path.is_file():
            what = "does not exist" if not run_dir.exists() else f"holds no {MARKER}"
            raise RunDirError(
                f"run_dir={str(run_dir)!r} {what}; expected the --out directory of an "
                "`lmgym train` run."
            )
        marker = load_marker(marker_path)  # a RunDirError naming the file if damaged
        if marker["kind"] != "train":
            raise RunDirError(
                f"run_dir={str(run_dir)!r} holds a {marker['kind']} run; expected the --out of "
                "one `lmgym train` run (a bench keeps one per algo and seed under its runs/)."
            )
        identity = marker["identity"]
        if identity.get("policy") != "lm":
            raise ValueError(
                f"run_dir={str(run_dir)!r} was trained with policy={identity.get('policy')!r}, "
                "which has no language model to export; only LM-policy runs (lmgym train "
                "--policy lm, the default on the LM envs) export a model."
            )
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise RunDirError(
                f"run_dir={str(run_dir)!r} has no {CHECKPOINT_NAME}: the run stopped before its "
                "first checkpoint, or the file was removed; expected a run that wrote one."
            )
        return identity


def _check_out_contents(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` without ``overwrite``, and one holding other files with it."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    names = sorted(p.name for p in out.iterdir())
    if not overwrite:
        raise RunDirError(
            f"out={str(out)!r} is not empty ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}); expected a new or empty directory. Pass "
            "--overwrite to replace a model directory there, or choose another --out."
        )
    foreign = [n for n in names if not (MODEL_FILES.fullmatch(n) and (out / n).is_file())]
    if foreign:
        raise RunDirError(
            f"out={str(out)!r} holds files that are not a model directory's "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}), which --overwrite "
            "would delete; expected "
            "a model directory (or an empty one). Choose another --out."
        )


@dataclass(frozen=True)
class ExportResult:
    """What :func:`run_export` wrote.

    Attributes:
        out: The model directory.
        files: The names of the files in it.
        algo: The run's algorithm.
        env: The run's env id.
        seed: The run's seed.
        steps_done: The env steps of the exported checkpoint.
        parameters: The exported model's number of parameters.
    """

    out: Path
    files: tuple[str, ...]
    algo: str
    env: str
    seed: int
    steps_done: int
    parameters: int


def run_export(config: ExportConfig) -> ExportResult:
    """Write the LM of the run in ``config.run_dir`` to ``config.out`` as a model directory.

    Raises:
        RunDirError: The run directory is not a train run's, or is damaged.
        CheckpointError: Its checkpoint is missing or damaged, or does not fit the run's
            settings (the message names the file and the member).
        ValueError: The run was trained without the LM policy.

    Example:
        >>> import tempfile
        >>> from lmgym.training.train import TrainConfig, run_train
        >>> tmp = Path(tempfile.mkdtemp())
        >>> _ = run_train(TrainConfig(steps=16, n_envs=2, eval_episodes=2, out=tmp / "run",
        ...                           progress=False))
        >>> result = run_export(ExportConfig(run_dir=tmp / "run", out=tmp / "model"))
        >>> "model.safetensors" in result.files, result.steps_done  # 16 steps of 2 envs each
        (True, 32)
    """
    from lmgym.agents.lm_policy import LMPolicyMixin
    from lmgym.agents.lora import causal_lm
    from lmgym.models.tokenizer import make_tokenizer_config_portable
    from lmgym.training import checkpoint as ckpt
    from lmgym.training.build import build_model, make_env  # torch and SB3 load here
    from lmgym.training.train import TrainConfig

    identity = config.run_settings()
    checkpoint = ckpt.load_checkpoint(config.run_dir / CHECKPOINT_NAME)
    # The run rebuilt from its run.json, exactly as `lmgym train --resume` rebuilds it: the
    # same policy class, model, adapters and spaces, so the checkpoint's tensors fit it.
    train_config = TrainConfig(resume=config.run_dir, progress=False)
    env = make_env(train_config, train_config.n_envs or 1)
    try:
        model = build_model(train_config, env)
        checkpoint.restore(model)
        policy = model.policy
        assert isinstance(policy, LMPolicyMixin), type(policy)  # run_settings: policy == "lm"
        out = config.out
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
        try:
            policy.save_pretrained(staging)
            if not (staging / "generation_config.json").exists():
                causal_lm(policy.lm).generation_config.save_pretrained(staging)
            if (staging / "tokenizer_config.json").exists():
                make_tokenizer_config_portable(staging)  # loads in transformers 4 and 5
            files = tuple(sorted(p.name for p in staging.iterdir()))
            _sync_files(staging)
            _publish(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        parameters = sum(p.numel() for p in causal_lm(policy.lm).parameters())
    finally:
        env.close()
    return ExportResult(
        out=out,
        files=files,
        algo=str(identity.get("algo")),
        env=str(identity.get("env")),
        seed=int(identity.get("seed", 0)),
        steps_done=int(checkpoint.counters.get("num_timesteps", 0)),
        parameters=int(parameters),
    )


def _sync_files(directory: Path) -> None:
    """``fsync`` every file in ``directory``: the rename that publishes it must not outrun them."""
    for path in directory.iterdir():
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def _publish(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` directory to ``out``; an earlier ``out`` goes only after.

    ``os.replace`` of a directory is one rename: ``out`` is the old directory or the new one,
    never a mix. An old non-empty ``out`` (``--overwrite``, checked) is renamed aside first and
    deleted once the new one is in place; put back if the second rename fails.
    """
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(staging, out)
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, aside)
    try:
        os.replace(staging, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def render_export(config: ExportConfig, result: ExportResult) -> str:
    """The lines ``lmgym export`` shows: what was written, and how to load it.

    Example:
        >>> result = ExportResult(Path("model"), ("config.json", "model.safetensors"), "ppo",
        ...                       "LMBandit-v0", 0, 4096, 1_852_416)
        >>> print(render_export(ExportConfig.__new__(ExportConfig), result))
        exported the LM of ppo on LMBandit-v0 (seed 0, step 4096; 1,852,416 parameters) to model
        load it with AutoModelForCausalLM.from_pretrained('model') or pipeline(..., model='model')
    """
    return (
        f"exported the LM of {result.algo} on {result.env} (seed {result.seed}, step "
        f"{result.steps_done}; {result.parameters:,} parameters) to {result.out}\n"
        f"load it with AutoModelForCausalLM.from_pretrained({str(result.out)!r}) or "
        f"pipeline(..., model={str(result.out)!r})"
    )
