"""``lmgym train``: train one SB3 / sb3-contrib agent on one lmgym env, with checkpoints.

Any of ``ppo a2c trpo maskable_ppo recurrent_ppo dqn`` that fits the env, with SB3's
``MlpPolicy`` or (on the LM envs) lmgym's LM policy, which fine-tunes the language model itself.
The agent is evaluated before and after training on the same episodes of a separate env seeded
from the run's seed (its β fixed at ``--kl-coef``); on the LM envs that env draws the held-out
``test`` prompts of the corpus, none of which is a training prompt. ``--out DIR`` receives:

- ``metrics.json``: eval reward / KL before and after, the evaluation's prompt split
  (``eval_prompts``), steps, wall time, config, the learning curve as (steps, reward) points;
- ``curve.png``: the learning curve (reward and, on LM envs, its reward-model and KL parts);
- ``tb/``: SB3's TensorBoard logs (``tensorboard --logdir DIR/tb``);
- ``checkpoint.zip``: written atomically every ``--checkpoint-every`` steps and at the end, with
  no pickle in it (safetensors + JSON, :mod:`lmgym.training.checkpoint`);
  ``lmgym train --resume DIR [--steps N]`` continues the run from it, with the settings saved in
  ``DIR/run.json`` (an option given with another value is an error).

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

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from lmgym.agents.callbacks import RewardHistory, RewardPartsCallback
from lmgym.error import Error
from lmgym.models.loading import require_model_dir
from lmgym.plots import plot_learning_curve
from lmgym.seeding import set_seed
from lmgym.torch_threads import set_torch_threads
from lmgym.training import checkpoint as ckpt
from lmgym.training.algorithms import (
    ALGO_NAMES,
    ALGORITHMS,
    AlgoName,
    EnvId,
    PolicyName,
    check_choice,
    default_policy,
    env_spec,
)
from lmgym.training.build import (
    attach_policy,
    build_model,
    check_kl_horizon,
    eval_prompt_split,
    lm_rewarder,
    make_env,
)
from lmgym.training.evaluation import evaluate_episodes
from lmgym.training.rundir import (
    MARKER,
    OUTPUTS,
    RunDirError,
    check_out_location,
    claim,
    prepare_out_dir,
    read_json_file,
    read_marker,
)
from lmgym.training.stats import trailing_curve

__all__ = [
    "MAX_SEED",
    "RunInterrupted",
    "RunWriteError",
    "TrainConfig",
    "check_seed",
    "resume_seed",
    "run_train",
]

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003
"""The eval env's seed is ``seed + EVAL_SEED_OFFSET``: other episodes than the training envs'."""
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
_NOT_IDENTITY = ("steps", "out", "resume", "overwrite", "progress", "threads", "checkpoint_every")


@dataclass
class TrainConfig:
    """Settings of ``lmgym train``.

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
        model: Local Hugging Face model directory for the LM envs and the LM policy; None: the
            embedded default model.
        eval_episodes: Episodes played before and after training to measure the agent.
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
    model: Path | None = None
    eval_episodes: int = 64
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
        self.model = None if self.model is None else Path(self.model)
        for name in ("steps", "n_envs", "eval_episodes", "checkpoint_every", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be an int > 0.")
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
        if self.model is not None and not spec.lm:
            raise ValueError(
                f"model={str(self.model)!r} with env={self.env!r}, which has no language model; "
                "expected model=None."
            )
        if self.model is not None:
            require_model_dir(self.model, "model")
        check_out_location(self.out)

    def _take_settings_of(self, run_dir: Path) -> None:
        """Fill the settings of the run in ``run_dir``; refuse any given with another value."""
        marker = read_marker(run_dir, "train")
        defaults = {f.name: _jsonable(f.default) for f in fields(self)}
        conflicts = []
        for name, saved in marker["identity"].items():
            if name not in defaults or name in _NOT_IDENTITY:
                continue  # not a setting (eval_prompts): prepare_out_dir compares it
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

        Besides the fields, the evaluation's prompt split: a run begun by a version of lmgym
        that evaluated on other prompts cannot be continued (its "before" would not compare).
        """
        identity = {
            f.name: _jsonable(getattr(self, f.name))
            for f in fields(self)
            if f.name not in _NOT_IDENTITY
        }
        identity["eval_prompts"] = eval_prompt_split(self.env)
        return identity


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


class _StopRequest:
    """Ctrl-C during training: stop at the next rollout boundary, with a final checkpoint.

    A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: stopping at the next checkpoint (press Ctrl-C again to stop now)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT here while the block runs (only the main thread can take signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _CheckpointCallback(BaseCallback):
    """Record the curve, restore β on resume, checkpoint at rollout boundaries, stop on request.

    A checkpoint is taken when a rollout starts, after the previous update finished: the weights
    and ``num_timesteps`` then agree, and no half-collected rollout is lost. A requested stop
    (Ctrl-C) is honoured there too: a final checkpoint, then ``learn`` ends.
    """

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run
        self.stopping = False
        self.next_save = (run.steps_done // run.config.checkpoint_every + 1) * (
            run.config.checkpoint_every
        )

    def _on_training_start(self) -> None:
        # SB3 resets (and reseeds) the env when learn() starts, which restores β's initial
        # value: put a resumed run's adaptive β back.
        rewarder = lm_rewarder(self.run.env)
        if rewarder is not None and self.run.kl_coef is not None:
            rewarder.controller.value = self.run.kl_coef

    def _on_rollout_start(self) -> None:
        if self.run.stop.requested:
            self.run.save(self.model)
            self.stopping = True
        elif self.num_timesteps >= self.next_save:
            self.run.save(self.model)
            every = self.run.config.checkpoint_every
            self.next_save = (self.num_timesteps // every + 1) * every

    def _on_step(self) -> bool:
        return not self.stopping  # False ends learn() before this rollout is trained on


class _Run:
    """The state of one training run that outlives a process: what a checkpoint holds."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.env = make_env(config, config.n_envs or 1)
        self.recorder = RewardPartsCallback()
        self.stop = _StopRequest()
        self.steps_done = 0
        self.kl_coef: float | None = None
        self.eval_before: dict[str, Any] | None = None
        self.wall_before = 0.0  # wall time of earlier segments of a resumed run
        self.resumed_at: list[int] = []
        self.started = time.perf_counter()
        self.checkpoint_steps: int | None = None  # steps of the last checkpoint on disk

    def state(self, model: BaseAlgorithm) -> dict[str, Any]:
        rewarder = lm_rewarder(self.env)
        return {
            "steps_done": int(model.num_timesteps),
            "history": asdict(self.recorder.history),
            "kl_coef": None if rewarder is None else float(rewarder.controller.value),
            "eval_before": self.eval_before,
            "wall_s": self.wall_before + time.perf_counter() - self.started,
            "resumed_at": self.resumed_at,
        }

    def save(self, model: BaseAlgorithm) -> None:
        ckpt.save_checkpoint(self.config.out / ckpt.CHECKPOINT_NAME, model, self.state(model))
        self.checkpoint_steps = int(model.num_timesteps)

    def restore(self, checkpoint: ckpt.Checkpoint) -> None:
        """Take the run's state from ``checkpoint``; a CheckpointError names a damaged one."""
        state = checkpoint.state
        try:
            steps_done = _count(state["steps_done"])
            history = RewardHistory(**state["history"])
            lengths = {len(getattr(history, f.name)) for f in fields(history)}
            kl_coef = state["kl_coef"]
            eval_before = state["eval_before"]
            wall_s = float(state["wall_s"])
            resumed_at = [_count(step) for step in state["resumed_at"]]
            valid = (
                len(lengths) == 1
                and (kl_coef is None or (isinstance(kl_coef, float) and np.isfinite(kl_coef)))
                and isinstance(eval_before, dict)
                and {"reward", "kl", "reward_model"} <= set(eval_before)
                and steps_done == checkpoint.counters.get("num_timesteps")
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise checkpoint.damaged(
                ckpt.STATE,
                "does not hold a run's state (steps, curve, β, evaluation) as lmgym writes it",
            )
        self.steps_done = steps_done
        self.checkpoint_steps = steps_done
        self.recorder.history = history
        self.kl_coef = kl_coef
        self.eval_before = eval_before
        self.wall_before = wall_s
        self.resumed_at = [*resumed_at, self.steps_done]


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _build_or_resume(
    config: TrainConfig, run: _Run, checkpoint: ckpt.Checkpoint | None
) -> BaseAlgorithm:
    """The algorithm built from ``config``; with ``checkpoint``, its state loaded into it.

    SB3's ``Algo.load`` is never used: it unpickles entries of its zip, and a run directory may
    come from anyone.
    """
    set_seed(config.seed)
    model = build_model(config, run.env)
    if checkpoint is None:
        return model
    run.restore(checkpoint)
    checkpoint.restore(model)
    # Fresh, reproducible streams for the rest of the run (see the module docstring).
    seed = resume_seed(config.seed, run.steps_done)
    set_seed(seed)
    model.set_random_seed(seed)
    return model


def _finished_metrics(config: TrainConfig) -> dict[str, Any] | None:
    """The metrics of the run in ``config.out`` if it already trained for ``config.steps``."""
    assert config.steps is not None
    path = config.out / "metrics.json"
    if not path.exists():
        return None
    metrics = read_json_file(path, "the metrics.json that lmgym train writes at the end of a run")
    steps = metrics.get("steps") if isinstance(metrics, dict) else None
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise RunDirError(
            f"{path} is damaged: it has no int 'steps'. Delete it to resume the run from its "
            "checkpoint, or start afresh with --overwrite."
        )
    return metrics if steps >= config.steps else None


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
    assert config.steps is not None and config.n_envs is not None and config.policy is not None
    set_torch_threads(config.threads)
    with claim(config.out, "train"):
        resuming = prepare_out_dir(
            config.out,
            "train",
            config.identity(),
            resume=config.resume is not None,
            overwrite=config.overwrite,
            details={"steps": config.steps},
        )
        checkpoint = None
        if resuming:
            finished = _finished_metrics(config)
            if finished is not None:
                return finished  # a finished run: nothing to do
            path = config.out / ckpt.CHECKPOINT_NAME
            if not path.exists():
                raise RunDirError(
                    f"resume={str(config.out)!r}: {path} does not exist, so there is no step to "
                    "continue from (the run stopped before its first checkpoint, or the file "
                    "was removed). Start afresh with --overwrite."
                )
            checkpoint = ckpt.load_checkpoint(path)  # parsed and checked before any work
        try:
            return _train(config, _Run(config), checkpoint)
        except BaseException as err:
            released = not resuming and _release_claim(config.out)
            steps = None if released else _checkpoint_steps(config.out)
            if isinstance(err, RunInterrupted):
                raise
            if isinstance(err, KeyboardInterrupt):
                raise RunInterrupted(_stopped(config, steps)) from None
            if isinstance(err, OSError) and not isinstance(err, RunWriteError):
                raise RunWriteError(
                    f"the run in {config.out} stopped on an OS error ({err}). "
                    + _stopped(config, steps)
                ) from err
            raise


def _checkpoint_steps(out: Path) -> int | None:
    """Steps of the checkpoint on disk in ``out`` (read back: a save may have been cut short)."""
    try:
        steps = ckpt.load_checkpoint(out / ckpt.CHECKPOINT_NAME).state["steps_done"]
    except (ckpt.CheckpointError, OSError, KeyError):
        return None
    return int(steps)


def _release_claim(out: Path) -> bool:
    """Give back a fresh run's claim on ``out`` if it never wrote a checkpoint; True if it did.

    The corrected command then starts without ``--overwrite``; a run with a checkpoint is kept
    for ``--resume``.
    """
    if (out / ckpt.CHECKPOINT_NAME).exists():
        return False
    for name in OUTPUTS["train"]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    return True


def _stopped(config: TrainConfig, steps: int | None) -> str:
    """What is left of a stopped run (its last checkpoint's steps) and how to go on."""
    if steps is None:
        return (
            f"No checkpoint was written, and {config.out} holds no run: run the same command "
            "again to start it."
        )
    return (
        f"The last good checkpoint, {config.out / ckpt.CHECKPOINT_NAME} (step {steps}), is "
        f"intact: continue with `lmgym train --resume {config.out}`."
    )


def _train(config: TrainConfig, run: _Run, checkpoint: ckpt.Checkpoint | None) -> dict[str, Any]:
    """The run itself, in a claimed and locked ``config.out``."""
    assert config.steps is not None and config.n_envs is not None
    model = _build_or_resume(config, run, checkpoint)
    kl_form = attach_policy(model, run.env, config)
    eval_env = make_env(config, min(config.n_envs, config.eval_episodes), evaluation=True)
    attach_policy(model, eval_env, config)
    eval_seed = config.seed + EVAL_SEED_OFFSET
    if run.eval_before is None:
        run.eval_before = evaluate_episodes(
            model, eval_env, config.eval_episodes, seed=eval_seed
        ).as_dict()
        run.save(model)  # step 0: a run killed from here on can be resumed

    train_started = time.perf_counter()
    remaining = config.steps - run.steps_done
    if remaining > 0:
        checkpoints = _CheckpointCallback(run)
        with run.stop.installed():
            model.learn(
                remaining,
                callback=CallbackList([run.recorder, checkpoints]),
                progress_bar=config.progress,
                reset_num_timesteps=run.steps_done == 0,
                tb_log_name="run",
            )
        if not checkpoints.stopping:  # a stop saved at its rollout boundary, before this step
            run.save(model)
        if run.stop.requested:
            raise RunInterrupted(
                f"stopped at step {run.checkpoint_steps} with a final checkpoint, "
                f"{config.out / ckpt.CHECKPOINT_NAME}: continue with `lmgym train --resume "
                f"{config.out}`."
            )
    train_wall = time.perf_counter() - train_started

    after = evaluate_episodes(model, eval_env, config.eval_episodes, seed=eval_seed)
    history = run.recorder.history
    title = f"{config.algo} ({config.policy} policy) on {config.env}, seed {config.seed}"
    curve_png = None
    if history.timesteps:  # a run too short for any episode to end has no curve to draw
        curve_png = str(plot_learning_curve(history, config.out / "curve.png", title=title))
    rewarder = lm_rewarder(run.env)
    metrics: dict[str, Any] = {
        "env": config.env,
        "algo": config.algo,
        "policy": config.policy,
        "seed": config.seed,
        "steps": int(model.num_timesteps),
        "eval_reward_before": run.eval_before["reward"],
        "eval_reward_after": after.reward,
        "eval_kl_before": run.eval_before["kl"],
        "eval_kl_after": after.kl,
        "eval_reward_model_before": run.eval_before["reward_model"],
        "eval_reward_model_after": after.reward_model,
        "eval_prompts": eval_prompt_split(config.env),
        "eval": {
            "method": (
                f"{config.eval_episodes} episodes of a separate {config.env} env reset with seed "
                f"{eval_seed} (the same episodes before and after), stochastic actions"
                + (
                    f"; the held-out test prompts (none of them a training prompt); fixed beta "
                    f"= {config.kl_coef}"
                    if env_spec(config.env).lm
                    else ""
                )
            ),
            "before": run.eval_before,
            "after": after.as_dict(),
        },
        "kl_form": kl_form,
        "final_kl_coef": None if rewarder is None else float(rewarder.controller.value),
        "wall_s": run.wall_before + time.perf_counter() - run.started,
        "train_wall_s_last_segment": train_wall,
        "resumed_at": run.resumed_at,
        "curve": trailing_curve(history, config.steps),
        "curve_png": curve_png,
        "hyperparameters": _hyper_summary(model),
        "config": {k: _jsonable(v) for k, v in asdict(config).items()},
    }
    ckpt.atomic_write_json(config.out / "metrics.json", metrics)
    run.env.close()
    eval_env.close()
    if config.progress:
        print(
            f"{config.algo} on {config.env} (seed {config.seed}): eval reward "
            f"{metrics['eval_reward_before']:.3f} -> {metrics['eval_reward_after']:.3f} in "
            f"{metrics['steps']} steps, {metrics['wall_s']:.0f} s; wrote {config.out}"
        )
    return metrics


def _hyper_summary(model: BaseAlgorithm) -> dict[str, Any]:
    names = ("n_steps", "batch_size", "n_epochs", "gamma", "ent_coef", "target_kl")
    summary: dict[str, Any] = {"class": type(model).__name__, "policy": type(model.policy).__name__}
    for name in names:
        value = getattr(model, name, None)
        if isinstance(value, int | float):
            summary[name] = value
    summary["learning_rate"] = float(model.lr_schedule(1.0))
    summary["n_envs"] = model.n_envs
    return summary
