"""``lmgym ilql``: offline RL on logged episodes, against the policies it is meant to beat.

    lmgym ilql --collect 2000 --out runs/ilql     # record 2,000 episodes of the base model
    lmgym ilql --data episodes.jsonl --out runs/ilql   # or episodes.parquet (needs pyarrow)
    lmgym ilql --quick --out runs/ilql-quick      # a smoke run of every step

With --collect N the base model writes N completions of the training prompts of the default
task (LMBandit-v0: lexicon sentiment, "write a positive review") and the env scores them: the
only N reward-model calls of the run, saved as DIR/episodes.jsonl. ILQL then trains on them
(DIR/model, which `lmgym.load_model` loads as its LM and `lmgym.offline.load_ilql_model` as
the ILQL policy), and so does filtered BC on the best --top-fraction of them (DIR/filtered_bc).
Every policy is measured on the held-out test prompts with the env's reward,
r_φ − kl_coef · KL to the base model (the exact KL along each sample): the behaviour policy
(the base model), filtered BC, ILQL decoded at each --betas, and online PPO given as many
reward-model calls as the data cost (``lmgym.offline.online_ppo``: the LM policy trained on the
default task's training prompts for that many completions, rounded up to whole rollouts). The
headline is reward per reward-model call: each policy's gain over the behaviour policy per
1,000 reward-model calls made for its training (evaluation calls are measurement, not
training, and are not counted).

DIR gets metrics.json, results.md (the table), curve.png (the training losses), the models
and the episodes. A DIR that holds files is refused unless --overwrite.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgym.offline.config import ILQLConfig
from lmgym.rlhf.config import checked, fraction, integer, model_dir, number, path

__all__ = ["ILQLCommandConfig", "render_ilql", "run_ilql_command"]

logger = logging.getLogger(__name__)

QUICK: dict[str, Any] = {"collect": 64, "epochs": 1, "eval_samples": 1, "betas": (0.0, 4.0)}
"""What --quick changes: a smoke run of every step in seconds."""


def _data_file(name: str, value: Any) -> Any:
    """Read and check the episodes file when the config is built, before any model loads."""
    if value is None:
        return None
    from lmgym.offline.dataset import EpisodeDataset

    EpisodeDataset.load(value)  # .jsonl or .parquet, by the suffix
    return Path(value)


def _optional_count(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not an int >= 1; pass e.g. {name}=2000.")
    return value


def _betas(name: str, value: Any) -> Any:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    bad = [
        b
        for b in values
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < math.inf
    ]
    if not values or bad:
        raise ValueError(
            f"{name}={value!r} must be one or more finite numbers >= 0 (β of ILQL decoding; 0 "
            f"decodes as ILQL's LM does), e.g. --{name} 0 1 4 16."
        )
    return tuple(float(b) for b in values)


@dataclass(frozen=True, kw_only=True)
class ILQLCommandConfig(ILQLConfig):
    """Settings of ``lmgym ilql``: :class:`~lmgym.offline.config.ILQLConfig` plus its inputs.

    Attributes:
        data: JSONL or Parquet file of logged episodes to train on, read by its suffix
            (.jsonl or .parquet; see docs/offline-rl.md); checked row by row before anything
            loads. Give --data or --collect.
        collect: Record this many episodes of the base model on the training prompts first
            (the run's only reward-model calls). Give --data or --collect.
        out: Directory for the models, episodes.jsonl, metrics.json, results.md and
            curve.png.
        overwrite: Replace what --out already holds.
        quick: A smoke run: 64 episodes (with --collect), 1 epoch, 1 sample per held-out
            prompt, β in {0, 4}.
        model: Base model directory: the behaviour policy, the start of ILQL and filtered BC,
            and the KL reference; default: the embedded model.
        top_fraction: Share of the best episodes filtered BC imitates.
        betas: β values ILQL is decoded and evaluated at.
        eval_samples: Completions per held-out test prompt for every policy.
        kl_coef: β of the env's KL penalty, in the logged rewards and in the evaluation.
        num_envs: Episodes recorded per env step (one generate call each).
        threads: torch intra-op threads (1 is fastest for the tiny default model on 2 cores).
    """

    data: Path | None = checked(None, _data_file)
    collect: int | None = checked(None, _optional_count)
    out: Path | None = path()
    overwrite: bool = False
    quick: bool = False
    model: Path | None = model_dir(None)
    top_fraction: float = fraction(0.1)
    betas: tuple[float, ...] = checked((0.0, 1.0, 4.0, 16.0), _betas)
    eval_samples: int = integer(4)
    kl_coef: float = number(0.05, allow_zero=True)
    num_envs: int = integer(256)
    threads: int = integer(1)

    def _validate(self) -> None:
        if (self.data is None) == (self.collect is None) and not (self.quick and not self.data):
            raise ValueError(
                f"data={None if self.data is None else str(self.data)!r} and "
                f"collect={self.collect!r}: give exactly one, --data FILE (logged episodes) or "
                "--collect N (record N episodes of the base model)."
            )
        if self.top_fraction == 0:
            raise ValueError("top_fraction=0 keeps no episode; pass e.g. top_fraction=0.1.")
        if self.out is None:
            raise ValueError("out=None: lmgym ilql writes a directory; pass --out DIR.")
        if self.out.exists() and any(self.out.iterdir()) and not self.overwrite:
            raise ValueError(
                f"out={str(self.out)!r} already holds files; pass --overwrite to replace "
                "them, or choose a new --out."
            )
        if self.quick:
            for name, value in QUICK.items():
                if name != "collect" or self.data is None:
                    self._set(name, value)


def run_ilql_command(config: ILQLCommandConfig) -> dict[str, Any]:
    """``lmgym ilql``: collect or read episodes, train ILQL and filtered BC, evaluate all.

    Returns what metrics.json holds.
    """
    import gymnasium as gym

    import lmgym  # noqa: F401 - registers the envs
    from lmgym.envs.bandit import LMBanditEnv
    from lmgym.envs.bandit_vector import LMBanditVectorEnv
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.models.loading import DEFAULT_MODEL_DIR, load_model
    from lmgym.offline.dataset import EpisodeDataset
    from lmgym.offline.evaluate import evaluate_policy
    from lmgym.offline.ilql import train_filtered_bc, train_ilql
    from lmgym.offline.model import load_ilql_model
    from lmgym.offline.online_ppo import train_online_ppo
    from lmgym.offline.record import record_episodes
    from lmgym.torch_threads import set_torch_threads

    started = time.perf_counter()
    set_torch_threads(config.threads)
    assert config.out is not None
    out = config.out
    if out.exists() and config.overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    base = config.model or DEFAULT_MODEL_DIR
    env_kwargs: dict[str, Any] = {"model": base, "kl_coef": config.kl_coef}
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        logger.info("%s: %.1f s", name, timings[name])
        return time.perf_counter()

    now = time.perf_counter()
    if config.data is not None:
        data = EpisodeDataset.load(config.data)
        rm_calls = len(data)  # what the logged rewards cost when they were recorded
    else:
        n = config.collect or QUICK["collect"]
        envs = gym.make_vec("LMBandit-v0", num_envs=min(config.num_envs, n),
                            prompts=corpus_prompts("train"), **env_kwargs)  # fmt: skip
        assert isinstance(envs, LMBanditVectorEnv)
        data = record_episodes(envs, int(n), seed=config.seed)
        data.save_jsonl(out / "episodes.jsonl")
        rm_calls = len(data)
        envs.close()
    now = lap("collect", now)

    ilql = train_ilql(config, data, out / "model", model=base)
    now = lap("ilql", now)
    steps = len(ilql.history["loss"])
    bc = train_filtered_bc(
        config, data, config.top_fraction, out / "filtered_bc", model=base, steps=steps
    )
    now = lap("filtered_bc", now)

    scorer = gym.make(
        "LMBandit-v0", prompts=corpus_prompts("test"), kl_estimator="full", **env_kwargs
    ).unwrapped
    assert isinstance(scorer, LMBanditEnv)
    test_prompts = corpus_prompts("test")

    def measure(policy: Any) -> dict[str, Any]:
        result = evaluate_policy(
            scorer, policy, test_prompts, samples=config.eval_samples, seed=config.seed + 1
        )
        return {k: v for k, v in result.as_dict().items() if k != "examples"} | {
            "example": " / ".join(c for _, c in result.examples[:2])
        }

    rows: dict[str, dict[str, Any]] = {}
    rows["behaviour (base model)"] = {"rm_calls": 0, **measure(load_model(base)[0])}
    bc_name = f"filtered BC (top {config.top_fraction:.0%})"
    rows[bc_name] = {"rm_calls": rm_calls, **measure(load_model(bc.path)[0])}
    for beta in config.betas:
        policy, _ = load_ilql_model(ilql.path, beta=beta)
        rows[f"ILQL β={beta:g}"] = {"rm_calls": rm_calls, **measure(policy)}
    now = lap("evaluation", now)
    ppo_lm, ppo_calls = train_online_ppo(base, rm_calls, kl_coef=config.kl_coef, seed=config.seed)
    rows["online PPO (same RM budget)"] = {"rm_calls": ppo_calls, **measure(ppo_lm)}
    lap("online_ppo", now)
    behaviour = rows["behaviour (base model)"]["reward"]
    for row in rows.values():
        calls = row["rm_calls"]
        row["gain_per_1k_rm_calls"] = (row["reward"] - behaviour) / calls * 1000 if calls else None

    metrics: dict[str, Any] = {
        "n_episodes": len(data),
        "data_mean_return": data.mean_return(),
        "rm_calls": rm_calls,
        "ilql": ilql.metrics,
        "filtered_bc": bc.metrics,
        "heldout": rows,
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "config": config.as_dict() | {"betas": list(config.betas)},
        "path": str(out),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    (out / "results.md").write_text(results_table(metrics) + "\n")
    _plot_losses(ilql.history, bc.history["loss"], out / "curve.png")
    return metrics


def results_table(metrics: dict[str, Any]) -> str:
    """The held-out table of a ``lmgym ilql`` run, as Markdown.

    Example:
        >>> row = {"rm_calls": 0, "reward": 0.1, "reward_model": 0.1, "kl": 0.0,
        ...        "fluency": 1.0, "n": 36, "gain_per_1k_rm_calls": None, "example": "ok ."}
        >>> print(results_table({"heldout": {"base": row}, "n_episodes": 10,
        ...                      "data_mean_return": 0.0}).splitlines()[-1])
        | base | 0 | +0.100 | +0.100 | 0.00 | 100% | — | ok . |
    """
    lines = [
        f"Held-out test prompts ({next(iter(metrics['heldout'].values()))['n']} completions "
        f"a policy); {metrics['n_episodes']} logged episodes, mean return "
        f"{metrics['data_mean_return']:+.3f}.",
        "",
        "| policy | RM calls | reward | r_φ | KL to base | fluency | gain / 1k RM calls | "
        "example |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in metrics["heldout"].items():
        gain = row["gain_per_1k_rm_calls"]
        lines.append(
            f"| {name} | {row['rm_calls']} | {row['reward']:+.3f} | {row['reward_model']:+.3f} "
            f"| {max(row['kl'], 0.0):.2f} | {row['fluency']:.0%} | "
            f"{'—' if gain is None else f'{gain:+.3f}'} | {row['example']} |"
        )
    return "\n".join(lines)


def _plot_losses(history: dict[str, list[float]], bc_loss: list[float], path: Path) -> None:
    """ILQL's loss parts and filtered BC's loss against optimizer steps."""
    from lmgym.plots import new_figure, save_figure

    figure = new_figure(6, 4)
    axes = figure.subplots()
    for name in ("loss_q", "loss_v", "loss_cql", "loss_bc"):
        axes.plot(history[name], label=f"ILQL {name[5:]}")
    axes.plot(bc_loss, label="filtered BC", linestyle="--")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def render_ilql(config: ILQLCommandConfig, metrics: dict[str, Any]) -> str:
    """What ``lmgym ilql`` prints: the table, and where everything was written."""
    return f"{results_table(metrics)}\n\nwrote {metrics['path']}: model/, filtered_bc/, " + (
        "metrics.json, results.md, curve.png"
    )
