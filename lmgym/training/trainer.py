"""The run of ``lmgym train``: build or resume, train with checkpoints, evaluate, write.

:func:`lmgym.training.train.run_train` calls :func:`train` here; this module holds what needs
torch and SB3 (the callbacks, the checkpointed run state), so that the command's config in
:mod:`lmgym.training.train` imports without them. The behaviour it implements (checkpoints,
resume, Ctrl-C, the output directory) is described there.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from lmgym.agents.callbacks import RewardHistory, RewardPartsCallback
from lmgym.plots import plot_learning_curve
from lmgym.seeding import set_seed
from lmgym.torch_threads import set_torch_threads
from lmgym.training import checkpoint as ckpt
from lmgym.training.algorithms import env_spec, eval_prompt_split
from lmgym.training.build import attach_policy, build_model, lm_rewarder, make_env
from lmgym.training.evaluation import (
    EpisodeStats,
    EvalPointsCallback,
    eval_point,
    evaluate_episodes,
)
from lmgym.training.report import eval_prompts_text
from lmgym.training.rundir import (
    OUTPUTS,
    RunDirError,
    claim,
    prepare_out_dir,
    read_json_file,
)
from lmgym.training.stats import trailing_curve
from lmgym.training.task_options import load_reward
from lmgym.training.train import (
    RunInterrupted,
    RunWriteError,
    TrainConfig,
    render_train,
    resume_seed,
)

__all__ = ["EVAL_SEED_OFFSET", "train"]

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003
"""The eval env's seed is ``seed + EVAL_SEED_OFFSET``: other episodes than the training envs'."""


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
        # One reward for the training and the evaluation env (a classifier loads once).
        self.reward_fn = load_reward(config.reward, config.device)
        self.env = make_env(config, config.n_envs or 1, reward_fn=self.reward_fn)
        self.recorder = RewardPartsCallback()
        self.stop = _StopRequest()
        self.steps_done = 0
        self.kl_coef: float | None = None
        self.eval_before: dict[str, Any] | None = None
        self.eval_points: list[dict[str, Any]] = []  # the evaluations during training
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
            "eval_points": self.eval_points,
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
        self.eval_points = list(state.get("eval_points", []))  # none in older checkpoints
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


def train(config: TrainConfig) -> dict[str, Any]:
    """Run ``config`` (see :func:`lmgym.training.train.run_train`); returns metrics.json's data."""
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
    eval_env = make_env(
        config, min(config.n_envs, config.eval_episodes), evaluation=True, reward_fn=run.reward_fn
    )
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
        callbacks: list[BaseCallback] = [run.recorder]
        if config.eval_every is not None:  # before the checkpoint: it then holds the point

            def evaluate() -> EpisodeStats:
                return evaluate_episodes(model, eval_env, config.eval_episodes, seed=eval_seed)

            callbacks.append(EvalPointsCallback(config.eval_every, evaluate, run.eval_points))
        with run.stop.installed():
            model.learn(
                remaining,
                callback=CallbackList([*callbacks, checkpoints]),
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
    lm = env_spec(config.env).lm
    split = config.prompt_split() if lm else None
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
        "eval_prompts": eval_prompt_split(config.env) if split is None else split.eval_text,
        "train_prompts": None if split is None else split.train_text,
        "eval_points": [
            eval_point(0, run.eval_before),
            *run.eval_points,
            eval_point(model.num_timesteps, after),
        ],
        "eval": {
            "method": (
                f"{config.eval_episodes} episodes of a separate {config.env} env reset with seed "
                f"{eval_seed} (the same episodes before and after), stochastic actions"
                + (
                    f"; {eval_prompts_text(split.eval_text)}; fixed beta = {config.kl_coef}"
                    if split is not None
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
        "config": config.as_json(),
    }
    ckpt.atomic_write_json(config.out / "metrics.json", metrics)
    run.env.close()
    eval_env.close()
    logger.info("%s", render_train(config, metrics))
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
