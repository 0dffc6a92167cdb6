"""``lmgym bench``: every algorithm × every seed on one env, then a table and a plot.

Each (algo, seed) pair is one ``lmgym train`` run in ``--out/runs/<algo>/seed<k>``, executed by
a pool of worker processes (``--jobs``; started with "spawn", each with one torch thread:
parallel seeds are faster as processes than as threads on small models). Then ``--out``
receives:

- ``results.json``: every run's metrics and, per algorithm, the aggregates over seeds;
- ``results.md``: final eval reward mean ± 95% CI (Student t), steps to reach ``--threshold``,
  KL after training and wall time, per algorithm, and which prompts were evaluated (on the LM
  envs, the held-out ``test`` prompts);
- ``curves.png``: the mean training curve and its 95% band per algorithm against env steps;
- ``frontier.png`` (LM envs, when every algorithm's KL is a KL to the reference): r_φ against
  √KL per algorithm (seeds' mean and 95% band) and the best-of-n baseline.

Each run is also evaluated every ``--eval-every`` steps (the same held-out episodes each time),
and the table gives r_φ at matched KLs of 1, 2 and 4 nats read off those points
(:mod:`lmgym.training.frontier`): the fair comparison, since an algorithm that moved further
from the reference can buy more reward. On ``LMBandit-v0`` the best-of-n reward of the initial
policy for n = 1, 2, 4, …, 64 is the baseline (:mod:`lmgym.training.best_of_n`).

``--resume`` continues an interrupted benchmark: finished runs are reused, interrupted ones
continue from their checkpoints. ``--quick`` is a smoke run (few steps, 2 seeds).

``--backend ray`` runs the same runs as Ray tasks on a cluster (``--address``,
``--resources-per-run``; :mod:`lmgym.training.ray_backend`): only the dispatch differs.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from lmgym.error import Error
from lmgym.training.algorithms import (
    EnvId,
    PolicyName,
    check_choice,
    default_policy,
    env_spec,
    eval_prompt_split,
)
from lmgym.training.best_of_n import BEST_OF_N
from lmgym.training.checkpoint import CHECKPOINT_NAME, atomic_write_bytes, atomic_write_json
from lmgym.training.frontier import MATCHED_KLS, frontier_band, matched_kl
from lmgym.training.report import plot_curves, plot_frontier, results_markdown
from lmgym.training.rundir import MARKER, check_out_location, claim, prepare_out_dir
from lmgym.training.stats import (
    CURVE_POINTS,
    CURVE_WINDOW,
    aggregate_curves,
    mean_ci,
    steps_to_threshold,
)
from lmgym.training.task_options import TaskOptions
from lmgym.training.train import MAX_SEED, TrainConfig, check_seed, run_train

__all__ = [
    "DEFAULT_SEEDS",
    "FRONTIER_EVALS",
    "QUICK_BEST_OF_N",
    "QUICK_EVAL_EPISODES",
    "QUICK_SEEDS",
    "BenchConfig",
    "BenchRunsFailed",
    "aggregate",
    "has_frontier",
    "render_bench",
    "run_bench",
]

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = 5
QUICK_SEEDS = 2
QUICK_EVAL_EPISODES = 16
QUICK_BEST_OF_N = 8
FRONTIER_EVALS = 8
"""Evaluations per run after the one before training: the default ``eval_every`` is
``steps // FRONTIER_EVALS``."""


class BenchRunsFailed(Error, RuntimeError):
    """Some runs of a benchmark failed; the finished ones are kept for ``--resume``."""


@dataclass
class BenchConfig(TaskOptions):
    """Settings of ``lmgym bench``.

    The task's options (``model``, ``reward``, ``prompts``, ``eval_prompts``, ``device``,
    ``dtype``) come from :class:`~lmgym.training.task_options.TaskOptions`; every run shares
    them, and with ``--prompts`` every run is evaluated on the same held-out prompts.

    Attributes:
        env: The env id.
        algos: Algorithms to compare; each must fit the env and the policy.
        seeds: Seeds per algorithm (seed_start, seed_start + 1, ...); None: 5 (2 with --quick).
        seed_start: The first seed.
        steps: Env steps per run; None: the env's default (its quick budget with --quick).
        policy: ``lm`` or ``mlp``; None: lm on LM envs, mlp on CatGrid-v0.
        out: Directory for results.json, results.md, curves.png and runs/.
        jobs: Runs trained at the same time, one process each; None: min(CPU count, runs).
        quick: A smoke run: the env's quick step budget, 2 seeds, 16 eval episodes (unless
            given).
        threshold: Training reward that counts as reached for "steps to threshold"; None: the
            env's default (0.2 on the LM envs, 90 on CatGrid-v0).
        n_envs: Envs per run stepped side by side; None: the env's default.
        kl_coef: β of the KL penalty (LM envs).
        kl_target: Target summed KL of the adaptive β; None: fixed β.
        kl_horizon: Horizon of the adaptive β in completions (β moves at most 20% per this
            many); None: 1/16 of each run's completions.
        learning_rate: Learning rate of every algorithm; None: each one's default.
        eval_episodes: Evaluation episodes per run; None: 64 (16 with --quick).
        eval_every: Env steps between evaluations during each run (the points of the
            reward–KL frontier, besides those before and after training); None: an eighth of
            --steps, so 9 points per run.
        best_of_n: Largest n of the best-of-n baseline of the initial policy (n = 1, 2, 4,
            … up to it, a power of 2; LMBandit-v0 only): that many completions per held-out
            prompt are sampled once and scored. None: 64 on LMBandit-v0 (8 with --quick);
            0: no baseline.
        matched_kls: KLs (nats, summed over the completion) at which the table reads each
            run's r_φ off its evaluation points.
        resume: Continue the benchmark in --out (reuse finished runs, resume interrupted ones).
        overwrite: Delete a previous benchmark in --out and start afresh.
        progress: Show a progress bar over the runs.
        backend: Where the runs execute: ``local`` (a process pool on this machine) or ``ray``
            (Ray tasks on a cluster; needs ``pip install 'lmgym[ray]'``).
        address: With backend ray, the cluster: None starts one on this machine, ``auto``
            joins the one ``ray start`` started here, ``HOST:PORT`` or ``ray://HOST:PORT`` a
            remote one.
        resources_per_run: With backend ray, what one run needs, as JSON or a dict, e.g.
            '{"CPU": 1, "GPU": 0.5}'; None: one CPU.
    """

    env: EnvId = "LMBandit-v0"
    algos: list[str] = field(default_factory=lambda: ["ppo", "a2c"])
    seeds: int | None = None
    seed_start: int = 0
    steps: int | None = None
    policy: PolicyName | None = None
    out: Path = Path("bench-output")
    jobs: int | None = None
    quick: bool = False
    threshold: float | None = None
    n_envs: int | None = None
    kl_coef: float = 0.02
    kl_target: float | None = None
    kl_horizon: int | None = None
    learning_rate: float | None = None
    eval_episodes: int | None = None
    eval_every: int | None = None
    best_of_n: int | None = None
    matched_kls: list[float] = field(default_factory=lambda: list(MATCHED_KLS))
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    resources_per_run: str | dict[str, float] | None = None

    def __post_init__(self) -> None:
        spec = env_spec(self.env)  # an unknown env id is a ValueError listing the valid ones
        if self.policy is None:
            self.policy = default_policy(self.env)  # type: ignore[assignment]
        assert self.policy is not None
        if isinstance(self.algos, str) or not self.algos:
            raise ValueError(f"algos={self.algos!r} must be a non-empty list, e.g. ['ppo', 'a2c'].")
        self.algos = list(dict.fromkeys(self.algos))  # drop repeats, keep the order
        for algo in self.algos:
            check_choice(self.env, algo, self.policy)
        if self.seeds is None:
            self.seeds = QUICK_SEEDS if self.quick else DEFAULT_SEEDS
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(
                f"seeds={self.seeds!r} must be an int >= 1 (the number of seeds per algorithm; "
                "5 gives a usable 95% interval)."
            )
        if self.steps is None:
            self.steps = spec.quick_steps if self.quick else spec.default_steps
        if self.eval_episodes is None:
            self.eval_episodes = QUICK_EVAL_EPISODES if self.quick else 64
        if self.threshold is None:
            self.threshold = spec.threshold
        if self.eval_every is None:
            self.eval_every = max(self.steps // FRONTIER_EVALS, 1)
        bandit = self.env == "LMBandit-v0" and self.policy == "lm"
        if self.best_of_n is None:
            self.best_of_n = (QUICK_BEST_OF_N if self.quick else max(BEST_OF_N)) if bandit else 0
        n = self.best_of_n
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or (n & (n - 1)):
            raise ValueError(
                f"best_of_n={n!r} must be 0 (no baseline) or a power of 2 (the largest n of "
                "best-of-n: 1, 2, 4, ... up to it), e.g. 64."
            )
        kls = self.matched_kls
        if isinstance(kls, str) or not kls or not all(_positive_number(k) for k in kls):
            raise ValueError(
                f"matched_kls={kls!r} must be a non-empty list of KLs > 0 (nats), e.g. "
                "[1.0, 2.0, 4.0]."
            )
        self.matched_kls = sorted({float(k) for k in kls})
        if n and not bandit:
            raise ValueError(
                f"best_of_n={n} with env={self.env!r}, policy={self.policy!r}: the best-of-n "
                "baseline samples whole completions of the initial LM, so it needs "
                "env='LMBandit-v0' with the lm policy; expected best_of_n=0."
            )
        if self.jobs is not None and (isinstance(self.jobs, bool) or self.jobs < 1):
            raise ValueError(f"jobs={self.jobs!r} must be an int >= 1 or None (one per core).")
        if self.resume and self.overwrite:
            raise ValueError("resume=True with overwrite=True: expected one of the two.")
        self._check_backend()
        check_seed("seed_start", self.seed_start)
        if self.seed_start + self.seeds - 1 > MAX_SEED:
            raise ValueError(
                f"seed_start={self.seed_start} with seeds={self.seeds} runs seeds up to "
                f"{self.seed_start + self.seeds - 1}; expected the last at most {MAX_SEED}."
            )
        self.out = check_out_location(self.out)
        self.check_task_options(self.env, spec.lm, self.out)
        self.run_configs(existing=False)  # TrainConfig validates the rest (steps, kl_coef, ...)

    def _check_backend(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend={self.backend!r} is unknown; expected 'local' or 'ray'.")
        if self.backend == "local":
            for name in ("address", "resources_per_run"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} with backend='local': it only applies "
                        "to Ray; add --backend ray, or drop it."
                    )
            return
        from lmgym.training.ray_backend import import_ray, parse_resources

        self.resources_per_run = parse_resources(self.resources_per_run)
        import_ray()  # a missing extra is one line naming it, before anything runs

    @property
    def seed_list(self) -> list[int]:
        """The seeds every algorithm runs with."""
        assert self.seeds is not None
        return list(range(self.seed_start, self.seed_start + self.seeds))

    def run_configs(self, existing: bool = True) -> list[TrainConfig]:
        """One :class:`TrainConfig` per (algo, seed), in ``runs/<algo>/seed<k>``.

        With ``existing``, a run directory that already holds a run is resumed (a finished run
        is then reused as it is); one that was claimed but never checkpointed (its process was
        killed early) has nothing to continue and is started afresh.
        """
        assert self.steps is not None and self.eval_episodes is not None
        return [
            TrainConfig(
                env=self.env,
                algo=algo,  # type: ignore[arg-type]
                policy=self.policy,
                steps=self.steps,
                seed=seed,
                out=out,
                n_envs=self.n_envs,
                kl_coef=self.kl_coef,
                kl_target=self.kl_target,
                kl_horizon=self.kl_horizon,
                learning_rate=self.learning_rate,
                **self.task_options(),
                eval_episodes=self.eval_episodes,
                eval_every=self.eval_every,
                checkpoint_every=max(self.steps // 4, 1),
                **resumable(out, existing),
                progress=False,
                threads=1,
            )
            for algo in self.algos
            for seed in self.seed_list
            for out in [self.out / "runs" / algo / f"seed{seed}"]
        ]

    def identity(self) -> dict[str, Any]:
        """What a resumed benchmark must share with the one it continues."""
        keys = ("env", "policy", "steps", "n_envs", "kl_coef", "kl_target", "kl_horizon",
                "learning_rate")  # fmt: skip
        identity = {k: getattr(self, k) for k in keys}
        identity["model"] = self.model
        identity["eval_episodes"] = self.eval_episodes
        identity.update(self.task_identity())
        if not env_spec(self.env).lm:
            identity["eval_prompts"] = eval_prompt_split(self.env)  # None: no prompts
        return identity


def resumable(out: Path, existing: bool) -> dict[str, Any]:
    """The ``resume`` and ``overwrite`` options of the run in ``out``.

    With ``existing``, a run directory that already holds a run is resumed (a finished run is
    then reused as it is); one that was claimed but never checkpointed (its process was killed
    early) has nothing to continue and is started afresh. Both backends decide it here: the
    local one once per benchmark, the Ray one at every attempt of a run.
    """
    started = existing and (out / MARKER).exists()
    kept = (out / CHECKPOINT_NAME).exists() or (out / "metrics.json").exists()
    resume = out if started and kept else None
    return {"resume": resume, "overwrite": started and resume is None}


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


def _train_worker(config: TrainConfig) -> dict[str, Any]:
    """One run in a worker process (module level, so "spawn" can import it)."""
    return run_train(config)


def aggregate(
    runs: list[dict[str, Any]], threshold: float, matched_kls: Sequence[float] = MATCHED_KLS
) -> dict[str, Any]:
    """Per-algorithm aggregates over seeds of a list of runs' metrics.

    Runs whose KL is a KL to the reference (``kl_form`` ``"policy"``) also get the reward–KL
    frontier (:mod:`lmgym.training.frontier`): ``matched_kl``, the reward-model score at
    matched KLs, and ``frontier``, the seeds' mean path and band against √KL; others get None.

    Example:
        >>> curve = {"steps": [50.0, 100.0], "reward": [0.2, 0.6], "kl": [0.0, 0.0]}
        >>> runs = [dict(eval_reward_before=0.1, eval_reward_after=r, eval_kl_after=None,
        ...              eval_reward_model_after=None, wall_s=10.0, curve=curve,
        ...              kl_form="none") for r in (0.4, 0.6)]
        >>> agg = aggregate(runs, threshold=0.5)
        >>> agg["eval_reward_after"]["mean"], agg["steps_to_threshold"]["reached"]
        (0.5, 2)
        >>> agg["matched_kl"] is None
        True
    """

    def stat(name: str) -> dict[str, float | None] | None:
        values = [r[name] for r in runs]
        if any(v is None for v in values):
            return None
        mean, half = mean_ci(values)
        return {"mean": mean, "ci95": half}

    reached = [
        s
        for s in (
            steps_to_threshold(r["curve"]["steps"], r["curve"]["reward"], threshold) for r in runs
        )
        if s is not None
    ]
    has_frontier = all(r["kl_form"] == "policy" for r in runs)
    return {
        "runs": len(runs),
        "eval_reward_before": stat("eval_reward_before"),
        "eval_reward_after": stat("eval_reward_after"),
        "eval_kl_after": stat("eval_kl_after"),
        "eval_reward_model_after": stat("eval_reward_model_after"),
        "matched_kl": matched_kl(runs, matched_kls) if has_frontier else None,
        "frontier": frontier_band(runs) if has_frontier else None,
        "wall_s": stat("wall_s"),
        "steps_to_threshold": {
            "mean": float(sum(reached) / len(reached)) if reached else None,
            "reached": len(reached),
            "runs": len(runs),
            "per_run": [
                steps_to_threshold(r["curve"]["steps"], r["curve"]["reward"], threshold)
                for r in runs
            ],
        },
        "curve": aggregate_curves([r["curve"] for r in runs]),
    }


def _worker_init(progress_bars: bool, verbosity: int) -> None:
    """Give a spawned worker the parent's transformers logging settings (spawn resets them)."""
    from transformers.utils import logging as hf_logging

    if not progress_bars:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity(verbosity)


def _execute(
    config: BenchConfig, configs: list[TrainConfig], jobs: int
) -> tuple[list[dict[str, Any]], int]:
    """Run ``configs`` on the chosen backend: (their results in order, retried attempts)."""
    if config.backend == "ray":
        from lmgym.training.ray_backend import execute_on_ray

        assert isinstance(config.resources_per_run, dict)
        runs, failures, retries = execute_on_ray(configs, config.resources_per_run, config.progress)
    else:
        runs, failures = _execute_locally(configs, jobs, config.progress)
        retries = 0
    if failures:
        raise BenchRunsFailed(
            f"{len(failures)} of {len(configs)} runs failed (finished runs are kept; rerun "
            "with --resume to retry only the others):\n" + "\n".join(failures)
        )
    return runs, retries


def _execute_locally(
    configs: list[TrainConfig], jobs: int, progress: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    bar = tqdm(total=len(configs), desc="runs", unit="run", disable=not progress)
    if jobs == 1:
        for i, config in enumerate(configs):
            results[i] = run_train(config)
            bar.update()
    else:
        from transformers.utils import logging as hf_logging

        context = multiprocessing.get_context("spawn")  # torch + fork is fragile
        quiet = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity())
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=quiet
        ) as pool:
            futures: dict[Future[dict[str, Any]], int] = {
                pool.submit(_train_worker, config): i for i, config in enumerate(configs)
            }
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as error:  # report every failed run, not only the first
                    failures.append(f"{configs[i].out}: {type(error).__name__}: {error}")
                bar.update()
    bar.close()
    return [results[i] for i in sorted(results)], failures


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run every (algo, seed), then write results.json, results.md, curves.png (frontier.png).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "bench"
        >>> r = run_bench(BenchConfig(env="CatGrid-v0", algos=["a2c"], seeds=1, steps=128,
        ...                           n_envs=2, eval_episodes=2, out=out, progress=False))
        >>> sorted(p.name for p in out.iterdir())
        ['.lmgym.lock', 'curves.png', 'results.json', 'results.md', 'run.json', 'runs']
    """
    started = time.perf_counter()
    with _backend(config), claim(config.out, "bench"):
        prepare_out_dir(
            config.out, "bench", config.identity(), resume=config.resume, overwrite=config.overwrite
        )
        configs = config.run_configs()
        jobs = config.jobs or min(os.cpu_count() or 1, len(configs))
        runs, retries = _execute(config, configs, jobs)
        return _report(config, runs, jobs, retries, started, _best_of_n(config))


def _backend(config: BenchConfig) -> AbstractContextManager[None]:
    """The connection to the cluster with backend ray (checked before --out is touched)."""
    if config.backend != "ray":
        return nullcontext()
    from lmgym.training.ray_backend import ray_cluster

    assert isinstance(config.resources_per_run, dict)
    return ray_cluster(config.address, config.resources_per_run)


def _best_of_n(config: BenchConfig) -> dict[str, Any] | None:
    """The best-of-n curve of the initial policy on the runs' held-out prompts, or None.

    The prompts, the reward and the model are those of the runs' evaluation env (built as
    theirs is), so best-of-n and the algorithms are scored alike.
    """
    if not config.best_of_n:
        return None
    import gymnasium as gym

    from lmgym.training.best_of_n import best_of_n, sample_rewards
    from lmgym.training.build import env_kwargs

    started = time.perf_counter()
    run = config.run_configs(existing=False)[0]
    env = gym.make(config.env, **env_kwargs(run, evaluation=True)).unwrapped
    rewards = sample_rewards(env, run.prompt_split().eval, config.best_of_n, seed=config.seed_start)
    env.close()
    ns = [n for n in (2**k for k in range(config.best_of_n.bit_length())) if n <= config.best_of_n]
    curve = best_of_n(rewards, ns)
    curve["seed"] = config.seed_start
    curve["wall_s"] = time.perf_counter() - started
    logger.info("best-of-n up to %d: %.1f s", config.best_of_n, curve["wall_s"])
    return curve


def _report(
    config: BenchConfig,
    runs: list[dict[str, Any]],
    jobs: int,
    retries: int,
    started: float,
    best_of_n: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write results.json, results.md, curves.png (and frontier.png); return the results."""
    assert config.threshold is not None
    results: dict[str, Any] = {
        "env": config.env,
        "policy": config.policy,
        "steps": config.steps,
        "seeds": config.seed_list,
        "threshold": config.threshold,
        "eval_episodes": config.eval_episodes,
        "eval_every": config.eval_every,
        "eval_prompts": (
            config.prompt_split().eval_text
            if env_spec(config.env).lm
            else eval_prompt_split(config.env)
        ),
        "curve": {"points": CURVE_POINTS, "window_episodes": CURVE_WINDOW},
        "jobs": jobs,
        "backend": config.backend,
        "retries": retries,
        "cpu_count": os.cpu_count(),
        "wall_s": time.perf_counter() - started,
        "algos": {
            algo: aggregate(
                [r for r in runs if r["algo"] == algo], config.threshold, config.matched_kls
            )
            for algo in config.algos
        },
        "best_of_n": best_of_n,
        "runs": runs,
    }
    atomic_write_json(config.out / "results.json", results)
    markdown = results_markdown(results)
    atomic_write_bytes(config.out / "results.md", markdown.encode())
    plot_curves(results, config.out / "curves.png")
    if has_frontier(results):
        plot_frontier(results, config.out / "frontier.png")
    logger.info("wrote %s", _written(config, results))
    return results


def has_frontier(results: dict[str, Any]) -> bool:
    """Whether the benchmark has a reward–KL frontier (every algorithm's KL is a KL)."""
    return all(agg["frontier"] is not None for agg in results["algos"].values())


def _written(config: BenchConfig, results: dict[str, Any]) -> str:
    plots = "curves.png and frontier.png" if has_frontier(results) else "curves.png"
    return f"{config.out / 'results.md'}, results.json, {plots}"


def render_bench(config: BenchConfig, results: dict[str, Any]) -> str:
    """What ``lmgym bench`` shows when it ends: the results.md table and where it was written."""
    return f"{results_markdown(results)}\nwrote {_written(config, results)}"
