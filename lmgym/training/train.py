"""``lmgym train``: train one SB3 / sb3-contrib agent on one lmgym env, with checkpoints.

Any of ``ppo a2c trpo maskable_ppo recurrent_ppo dqn`` that fits the env, with SB3's
``MlpPolicy`` or (on the LM envs) lmgym's LM policy, which fine-tunes the language model itself.
The agent is evaluated before and after training on the same episodes of a separate env seeded
from the run's seed (its β fixed at ``--kl-coef``); on the LM envs that env draws the held-out
``test`` prompts of the corpus, none of which is a training prompt, or those held out of
``--prompts`` (``--model``, ``--reward``, ``--prompts``, ``--device``: your own task, see
:mod:`lmgym.training.task_options`). ``--out DIR`` receives:

- ``metrics.json``: eval reward / KL before and after, the evaluation's prompt split
  (``eval_prompts``), steps, wall time, config, the learning curve as (steps, reward) points;
- ``curve.png``: the learning curve (reward and, on LM envs, its reward-model and KL parts);
- ``tb/``: SB3's TensorBoard logs (``tensorboard --logdir DIR/tb``);
- ``checkpoint.zip``: written atomically every ``--checkpoint-every`` steps and at the end, with
  no pickle in it (safetensors + JSON, :mod:`lmgym.training.checkpoint`);
  ``lmgym train --resume DIR [--steps N]`` continues the run from it, with the settings saved in
  ``DIR/run.json`` (an option given with another value is an error). The task's options are
  among those settings; a ``--reward`` module or file is imported again by the name saved
  there, never loaded from the run directory.

A resumed run rebuilds the algorithm from those settings and loads the checkpoint's weights,
optimizer, counters, curve and adaptive β into it, with the env and sampling reseeded from a
seed derived from ``(seed, steps done)``: it is reproducible, but not the same bits as a run that
was never interrupted (the envs' internal state is not saved).

While it runs, the process holds the lock of ``DIR`` (a second ``lmgym train`` on the same
``--out`` is refused). The first Ctrl-C stops at the next rollout boundary with a final
checkpoint (a second one stops at once; the last checkpoint is then the one named in the
message). A run that fails before its first checkpoint gives its claim on ``DIR`` back, so the
corrected command needs no ``--overwrite``; one that fails later keeps its last checkpoint, and
the error says how to resume it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lmgym.error import Error
from lmgym.training.algorithms import (
    ALGO_NAMES,
    ALGORITHMS,
    AlgoName,
    EnvId,
    PolicyName,
    check_choice,
    check_kl_horizon,
    default_policy,
    env_spec,
    eval_prompt_split,
)
from lmgym.training.rundir import MARKER, RunDirError, check_out_location, read_marker
from lmgym.training.task_options import TaskOptions

# This module is what `lmgym train` imports to build its options: the config and its checks
# load no torch or SB3 (`lmgym train --help` answers at once). The run itself is in
# lmgym.training.trainer, imported when a run starts.

__all__ = [
    "MAX_SEED",
    "RunInterrupted",
    "RunWriteError",
    "TrainConfig",
    "check_seed",
    "render_train",
    "resume_seed",
    "run_train",
]

MAX_SEED = 2**32 - 1
"""The largest seed: NumPy's global generator (which SB3 seeds) takes seeds below 2**32."""


class RunWriteError(Error, OSError):
    """The run could not write to its directory (say, a full disk); its checkpoint is intact."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the message names the last checkpoint and how to resume."""


def check_seed(name: str, seed: Any) -> int:
    """``seed`` if it is an int in [0, MAX_SEED], else a ValueError naming ``name``.

    Example:
        >>> check_seed("seed", 7)
        7
        >>> check_seed("seed", 2**32)
        Traceback (most recent call last):
        ...
        ValueError: seed=4294967296 must be an int in [0, 4294967295] (2**32 - 1), e.g. 0.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name}={seed!r} must be an int in [0, {MAX_SEED}] (2**32 - 1), e.g. 0.")
    return seed


def resume_seed(seed: int, steps_done: int) -> int:
    """The seed of a run resumed after ``steps_done`` steps: in [0, MAX_SEED] for any input.

    Derived with NumPy's ``SeedSequence`` from both numbers, so it cannot overflow (``seed +
    steps`` did, for large seeds) and resumes of different runs do not share streams.

    Example:
        >>> 0 <= resume_seed(MAX_SEED, 10**12) <= MAX_SEED
        True
        >>> resume_seed(0, 512) == resume_seed(0, 512) != resume_seed(512, 0)
        True
    """
    return int(np.random.SeedSequence([seed, steps_done]).generate_state(1)[0])


# Settings that may differ when a run is resumed (the rest must match the run's).
# eval_every only adds evaluations, which restore every random state they use.
_NOT_IDENTITY = ("steps", "out", "resume", "overwrite", "progress", "threads", "checkpoint_every",
                 "eval_every")  # fmt: skip
# The field each identity key restores on resume ("eval_prompts" describes the evaluation's
# prompts, as it did before --eval-prompts existed: no field; its file is "eval_prompts_file").
_IDENTITY_FIELDS = {"eval_prompts": "", "eval_prompts_file": "eval_prompts"}
_TASK_FIELDS = {f.name for f in fields(TaskOptions)} - {"model"}  # see TaskOptions.task_identity


@dataclass
class TrainConfig(TaskOptions):
    """Settings of ``lmgym train``.

    The task's options (``model``, ``reward``, ``prompts``, ``eval_prompts``, ``device``,
    ``dtype``) come from :class:`~lmgym.training.task_options.TaskOptions`.

    Attributes:
        env: The env id.
        algo: The algorithm; it must fit the env's action space and the policy.
        policy: ``lm`` (the LM itself, LM envs only) or ``mlp`` (SB3's MLP); None: lm on LM
            envs, mlp on CatGrid-v0.
        steps: Env steps to train for in total; None: the env's default (4096 LMBandit-v0,
            8192 LMToken-v0, 30000 CatGrid-v0).
        seed: Seeds the envs, the agent, torch and the evaluation episodes.
        out: Directory for metrics.json, curve.png, tb/ and checkpoint.zip.
        n_envs: Envs stepped side by side; None: 16 on LM envs, 4 on CatGrid-v0.
        kl_coef: β of the KL penalty (LM envs; its initial value when kl_target is set).
        kl_target: Target summed KL per completion of Ziegler's adaptive β; None: fixed β.
        kl_horizon: Horizon of the adaptive β, in completions: β changes by at most 20% per
            this many (e^(0.2·N/H) over N completions), so it must be well below the run's
            completions for β to adapt; None: 1/16 of them (steps, or steps / 16 on
            LMToken-v0), filled in when kl_target is set.
        learning_rate: The optimizer's learning rate; None: the default of the (env, algo,
            policy) triple.
        eval_episodes: Episodes played before and after training to measure the agent.
        eval_every: Also evaluate every this many env steps while training (at the first
            rollout boundary past each multiple), the same episodes each time; metrics.json's
            ``eval_points`` lists (steps, reward, r_φ, KL) from before to after training (the
            reward–KL frontier of ``lmgym bench``). None: before and after only.
        checkpoint_every: Write checkpoint.zip every this many env steps (and at the end).
        resume: A run directory to continue from its checkpoint, with the settings in its
            run.json (options given with other values are an error); --steps may extend it.
        overwrite: Delete a previous run in --out and start afresh.
        progress: Show a progress bar while training.
        threads: torch intra-op threads (1 is fastest for small models on few cores).
    """

    env: EnvId = "LMBandit-v0"
    algo: AlgoName = "ppo"
    policy: PolicyName | None = None
    steps: int | None = None
    seed: int = 0
    out: Path = Path("train-output")
    n_envs: int | None = None
    kl_coef: float = 0.02
    kl_target: float | None = None
    kl_horizon: int | None = None
    learning_rate: float | None = None
    eval_episodes: int = 64
    eval_every: int | None = None
    checkpoint_every: int = 2048
    resume: Path | None = None
    overwrite: bool = False
    progress: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if self.resume is not None and self.overwrite:
            raise ValueError(
                f"resume={str(self.resume)!r} with overwrite=True: expected one of the two "
                "(--resume continues a run, --overwrite deletes it and starts afresh)."
            )
        if self.resume is None:
            self._validate()
            return
        self._take_settings_of(Path(self.resume))
        try:
            self._validate()
        except (ValueError, TypeError) as err:
            if isinstance(err, Error):
                raise
            raise RunDirError(
                f"resume={str(self.resume)!r}: the run's settings (from "
                f"{Path(self.resume) / MARKER}, with the options given) are not valid: {err}"
            ) from None

    def _validate(self) -> None:
        spec = env_spec(self.env)  # an unknown env id is a ValueError listing the valid ones
        if self.policy is None:
            self.policy = default_policy(self.env)  # type: ignore[assignment]
        assert self.policy is not None
        if self.algo not in ALGO_NAMES:
            raise ValueError(f"algo={self.algo!r} is unknown; expected one of {list(ALGO_NAMES)}.")
        check_choice(self.env, self.algo, self.policy)
        if self.steps is None:
            self.steps = spec.default_steps
        if self.n_envs is None:
            self.n_envs = spec.default_n_envs
        self.out = Path(self.out)
        for name in ("steps", "n_envs", "eval_episodes", "checkpoint_every", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be an int > 0.")
        every = self.eval_every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)
                                  or every <= 0):  # fmt: skip
            raise ValueError(
                f"eval_every={every!r} must be an int > 0 (env steps between evaluations) or "
                "None (evaluate before and after training only)."
            )
        group_size = ALGORITHMS[self.algo].group_size
        if self.n_envs % group_size:
            raise ValueError(
                f"n_envs={self.n_envs} with algo={self.algo!r}, which samples groups of "
                f"{group_size} completions per prompt; expected a multiple of {group_size}, "
                f"e.g. n_envs={group_size * max(1, self.n_envs // group_size)}."
            )
        check_seed("seed", self.seed)
        if (
            isinstance(self.kl_coef, bool)
            or not isinstance(self.kl_coef, int | float)
            or not np.isfinite(self.kl_coef)
            or self.kl_coef < 0
        ):
            raise ValueError(f"kl_coef={self.kl_coef} must be a finite float >= 0, e.g. 0.02.")
        if self.kl_target is not None and not self.kl_target > 0:
            raise ValueError(f"kl_target={self.kl_target} must be > 0 (nats), e.g. 4.0.")
        if self.kl_target is not None and not spec.lm:
            raise ValueError(
                f"kl_target={self.kl_target} with env={self.env!r}, which has no KL penalty; "
                "expected kl_target=None."
            )
        if self.kl_target is not None and not ALGORITHMS[self.algo].serves_logprobs:
            raise ValueError(
                f"kl_target={self.kl_target} with algo={self.algo!r}, whose policy cannot give "
                "log π_θ: the env then pays a cross-entropy, not a KL, and takes no adaptive "
                "β; expected kl_target=None (a fixed β), or an algo such as 'ppo'."
            )
        self.kl_horizon = check_kl_horizon(self.kl_horizon, self.kl_target, self.env, self.steps)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0, e.g. 1e-4.")
        check_out_location(self.out)
        self.check_task_options(self.env, spec.lm, self.out)

    def _take_settings_of(self, run_dir: Path) -> None:
        """Fill the settings of the run in ``run_dir``; refuse any given with another value."""
        marker = read_marker(run_dir, "train")
        defaults = {f.name: _jsonable(f.default) for f in fields(self)}
        conflicts = []
        for key, saved in marker["identity"].items():
            name = _IDENTITY_FIELDS.get(key, key)
            if name not in defaults or name in _NOT_IDENTITY:
                continue  # not a setting (the prompts' descriptions): prepare_out_dir compares it
            given = _jsonable(getattr(self, name))
            if given != defaults[name] and given != saved:
                conflicts.append(f"{name}: {saved!r} in the run, {given!r} given")
            setattr(self, name, saved)
        if _jsonable(self.out) not in (defaults["out"], str(run_dir)):
            conflicts.append(f"out: {str(run_dir)!r} (the run), {str(self.out)!r} given")
        if conflicts:
            raise ValueError(
                f"resume={str(run_dir)!r}: the run has other settings ("
                + "; ".join(conflicts)
                + "); expected them left out or equal (only --steps may change), or a new --out."
            )
        self.out = run_dir
        if self.steps is None:
            self.steps = marker["details"].get("steps")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (JSON-ready).

        Besides the fields, the evaluation's prompts: a run begun by a version of lmgym that
        evaluated on other prompts, or from a prompts file that has changed since, cannot be
        continued (its "before" would not compare). The task's options join it when they are
        not at their default (:meth:`TaskOptions.task_identity`).
        """
        identity = {
            f.name: _jsonable(getattr(self, f.name))
            for f in fields(self)
            if f.name not in _NOT_IDENTITY and f.name not in _TASK_FIELDS
        }
        identity.update(self.task_identity())
        if not env_spec(self.env).lm:
            identity["eval_prompts"] = eval_prompt_split(self.env)  # None: no prompts
        return identity

    def as_json(self) -> dict[str, Any]:
        """Every setting, JSON-ready (paths as strings): the ``config`` entry of metrics.json.

        Example:
            >>> TrainConfig(env="CatGrid-v0").as_json()["out"]
            'train-output'
        """
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def run_train(config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate, plot and checkpoint one run; returns what metrics.json holds.

    Raises:
        RunDirError: ``config.out`` is in use by another process, holds another run, or (on
            resume) its checkpoint is missing or damaged; nothing was changed.
        RunWriteError: Writing to ``config.out`` failed (e.g. a full disk); the last checkpoint
            is intact and the message says how to resume.
        RunInterrupted: Ctrl-C; the message names the last checkpoint.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> m = run_train(TrainConfig(env="CatGrid-v0", algo="ppo", steps=256, n_envs=2,
        ...                           eval_episodes=2, out=out, progress=False))
        >>> m["steps"] >= 256, sorted(p.name for p in out.iterdir())
        (True, ['.lmgym.lock', 'checkpoint.zip', 'curve.png', 'metrics.json', 'run.json', 'tb'])
    """
    from lmgym.training.trainer import train  # torch and SB3 load here, when a run starts

    return train(config)


def render_train(config: TrainConfig, metrics: dict[str, Any]) -> str:
    """The line ``lmgym train`` shows when a run ends: the eval reward before -> after.

    Example:
        >>> render_train(TrainConfig(env="CatGrid-v0", out=Path("run")), {
        ...     "algo": "ppo", "env": "CatGrid-v0", "seed": 0, "steps": 256, "wall_s": 3.2,
        ...     "eval_reward_before": -4.0, "eval_reward_after": 12.5})
        'ppo on CatGrid-v0 (seed 0): eval reward -4.000 -> 12.500 in 256 steps, 3 s; wrote run'
    """
    return (
        f"{metrics['algo']} on {metrics['env']} (seed {metrics['seed']}): eval reward "
        f"{metrics['eval_reward_before']:.3f} -> {metrics['eval_reward_after']:.3f} in "
        f"{metrics['steps']} steps, {metrics['wall_s']:.0f} s; wrote {config.out}"
    )
