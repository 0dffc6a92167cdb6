"""Reward over-optimisation, measured: gold and proxy score against √KL per reward-model size.

A reward model (the proxy) is trained on a growing number of rankings of the SFT model's
samples, e.g. 100, 400 and 1,600. Against each proxy:

* best-of-n: the SFT model's samples of the held-out prompts are picked by the proxy for
  n = 1, 2, 4, …, averaged over every n-subset of each prompt's samples
  (:func:`~lmgym.rlhf.scaling_laws.best_of_n_picks`); the KL of best-of-n to the SFT model is
  taken at its analytic bound ``log n − (n−1)/n`` (an upper bound, reached when no two samples
  tie: see :func:`~lmgym.training.best_of_n.kl_bound`), as Gao et al. do;
* RL: PPO trains the SFT model on the proxy with β = 0 (no KL penalty: nothing holds the policy
  back, so over-optimisation shows sooner), and every rollout's mean proxy score, gold score and
  KL (k1, summed over the completion) is recorded on the completions PPO wrote.

The gold score is the hidden true score the simulated labelers rank by
(:func:`lmgym.rlhf.labelers.true_score`); neither the proxy nor the policy sees it. The gold
gain over the SFT model is fitted with Gao et al.'s forms (:mod:`lmgym.rlhf.scaling_laws`), and
the report says where each fit peaks, or that it does not peak within the KL that was reached.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmgym.rlhf.config import StageConfig, integer, number
from lmgym.rlhf.scaling_laws import ScalingFit, best_of_n_picks, fit_scaling_law
from lmgym.training.best_of_n import kl_bound

__all__ = [
    "OveroptimisationConfig",
    "format_overoptimisation",
    "plot_overoptimisation",
    "run_overoptimisation",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OveroptimisationConfig(StageConfig):
    """The sweep's sizes.

    Attributes:
        rm_sizes: Rankings each reward model trains on, ascending (nested: the smaller sets are
            the first rankings of the largest).
        rm_k: Completions per ranking.
        rm_epochs: Epochs of every reward model over its rankings.
        ppo_steps: Completions PPO trains on against each proxy (β = 0).
        learning_rate: PPO's Adam learning rate.
        bon_samples: Samples per held-out prompt for best-of-n; n runs over powers of 2 up to it.
        seed: Seeds the rankings, the reward models, PPO and the best-of-n samples.
        progress: Show progress bars.
    """

    rm_sizes: list[int]
    rm_k: int = integer(4, minimum=2)
    rm_epochs: int = integer(2)
    ppo_steps: int = integer(4096)
    learning_rate: float = number(3e-4)
    bon_samples: int = integer(64, minimum=2)
    seed: int = integer(0, minimum=0)
    progress: bool = True

    def _validate(self) -> None:
        sizes = list(self.rm_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in sizes):
            raise ValueError(
                f"rm_sizes={self.rm_sizes!r}: expected ints >= 2 (rankings per reward model), "
                "e.g. rm_sizes=[100, 400, 1600]."
            )
        if sizes != sorted(set(sizes)):
            raise ValueError(
                f"rm_sizes={self.rm_sizes!r} must be ascending without repeats, e.g. "
                "[100, 400, 1600]: the smaller sets are the first rankings of the largest."
            )
        self._set("rm_sizes", sizes)

    @property
    def bon_ns(self) -> list[int]:
        """The best-of-n sizes: 1, 2, 4, … up to ``bon_samples``."""
        return [2**i for i in range(int(math.log2(self.bon_samples)) + 1)]


def run_overoptimisation(
    config: OveroptimisationConfig, sft: str | Path, labeler: Any, out: str | Path
) -> dict[str, Any]:
    """Train one proxy RM per size, run best-of-n and PPO (β = 0) on each, fit the gold gain.

    Args:
        config: The sweep's sizes.
        sft: The SFT model's directory: the policy that is sampled, ranked and trained.
        labeler: The simulated labeler that ranks (e.g. a
            :class:`~lmgym.rlhf.labelers.BradleyTerryLabeler`).
        out: Directory for the reward models and policies (``rm_<size>``, ``ppo_<size>``).

    Returns:
        A JSON-ready dict: ``{"config": ..., "runs": [per size: RM metrics, best-of-n points,
        PPO history, both fits]}``.
    """
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.rlhf.config import PPOStageConfig, RewardModelConfig
    from lmgym.rlhf.labelers import true_score
    from lmgym.rlhf.learned_reward import LearnedRewardModel
    from lmgym.rlhf.ppo_stage import NormalizedReward, run_ppo_stage
    from lmgym.rlhf.rankings import collect_rankings
    from lmgym.rlhf.reward_model import train_reward_model

    out = Path(out)
    train_prompts = corpus_prompts("train")
    largest = config.rm_sizes[-1]
    repeats = -(-largest // len(train_prompts))
    prompts = (train_prompts * repeats)[:largest]
    rankings = collect_rankings(sft, prompts, config.rm_k, labeler, config.seed)
    heldout = collect_rankings(sft, corpus_prompts("test"), config.rm_k, labeler, config.seed + 1)
    bon_prompts, bon_texts = _bon_samples(sft, corpus_prompts("test"), config)
    gold = true_score(bon_prompts, bon_texts).reshape(-1, config.bon_samples)
    runs = []
    for size in config.rm_sizes:
        subset = rankings[:size]
        rm = train_reward_model(
            RewardModelConfig(epochs=config.rm_epochs, seed=config.seed, progress=config.progress),
            subset,
            out / f"rm_{size}",
            model=sft,
            heldout=heldout,
        )
        proxy = NormalizedReward.fit(
            LearnedRewardModel(rm.path, policy_tokenizer=sft),
            [r.prompt for r in subset for _ in r.completions],
            [c for r in subset for c in r.completions],
        )
        proxy_scores = proxy(bon_prompts, bon_texts).reshape(-1, config.bon_samples)
        picks = best_of_n_picks(proxy_scores, gold, config.bon_ns)
        with warnings.catch_warnings():  # β = 0 is the point here, not a slip
            warnings.filterwarnings("ignore", message="kl_coef=0", category=UserWarning)
            ppo_config = PPOStageConfig(
                steps=config.ppo_steps,
                kl_coef=0.0,
                learning_rate=config.learning_rate,
                seed=config.seed,
                progress=config.progress,
            )
        ppo = run_ppo_stage(
            ppo_config,
            proxy,
            out / f"ppo_{size}",
            model=sft,
            desc=f"PPO β=0 on the {size}-ranking RM",
        )
        runs.append(_run_summary(size, rm.metrics, picks, ppo.history))
        logger.info("over-optimisation: RM of %d rankings done", size)
    return {"config": config.as_dict(), "runs": runs}


def _bon_samples(
    sft: str | Path, prompts: Sequence[str], config: OveroptimisationConfig
) -> tuple[list[str], list[str]]:
    """``bon_samples`` samples of each prompt from the SFT model, in one batched pass."""
    from lmgym.models.generation import DecodingConfig
    from lmgym.models.loading import load_model
    from lmgym.rlhf.rankings import sample_completions
    from lmgym.seeding import set_seed

    model, tokenizer = load_model(sft)
    set_seed(config.seed + 2)
    repeated = [prompt for prompt in prompts for _ in range(config.bon_samples)]
    texts, _ = sample_completions(model, tokenizer, repeated, DecodingConfig())
    return repeated, texts


def _run_summary(
    size: int,
    rm_metrics: dict[str, Any],
    picks: list[tuple[int, float, float]],
    history: dict[str, list[Any]],
) -> dict[str, Any]:
    """One RM size's points and fits, JSON-ready."""
    bon_d = np.sqrt([kl_bound(n) for n, _, _ in picks])
    bon_gold = np.array([g for _, _, g in picks])
    # k1 estimates of a tiny KL can come out slightly negative: √ of the clipped value.
    rl_d = np.sqrt(np.clip(history["kl"], 0.0, None))
    rl_gold = np.asarray(history["true_score"], dtype=float)
    return {
        "rankings": size,
        "rm_heldout_accuracy": rm_metrics["heldout_accuracy"],
        "rm_true_score_correlation": rm_metrics["true_score_correlation"],
        "best_of_n": [
            {"n": n, "kl_bound": kl_bound(n), "proxy": p, "gold": g} for n, p, g in picks
        ],
        "ppo": history,
        "fits": {
            "bon": _fit_dict(bon_d, bon_gold - bon_gold[0], "bon"),
            "rl": _fit_dict(rl_d, rl_gold - rl_gold[0], "rl"),
        },
    }


def _fit_dict(d: np.ndarray, gain: np.ndarray, form: str) -> dict[str, Any] | None:
    """The fit as JSON, or None when the points cannot support one (fewer than 2 distinct d)."""
    try:
        fit = fit_scaling_law(d, gain, form)  # type: ignore[arg-type]
    except ValueError as err:
        logger.warning("over-optimisation: no %s fit: %s", form, err)
        return None
    peak = fit.peak_d
    return {
        "alpha": fit.alpha,
        "beta": fit.beta,
        "d_max": fit.d_max,
        "peak_d": peak if peak is None or math.isfinite(peak) else None,
        "peak_kl": None if peak is None or not math.isfinite(peak) else peak**2,
        "peak_observed": fit.peak_observed,
    }


def _fit_from(entry: dict[str, Any], form: str) -> ScalingFit | None:
    raw = entry["fits"][form]
    if raw is None:
        return None
    return ScalingFit(form, raw["alpha"], raw["beta"], raw["d_max"])  # type: ignore[arg-type]


def plot_overoptimisation(results: dict[str, Any], path: str | Path) -> Path:
    """Gold (top) and proxy (bottom) score against √KL, best-of-n left and PPO right.

    One colour per reward-model size; the dotted lines are the fitted gold forms, shifted by the
    SFT model's gold score. Gold and proxy are on different scales (the proxy is standardised on
    the SFT model's samples), so each row has its own y axis. The title names the sweep's sizes.

    Example:
        >>> import tempfile, os
        >>> run = {"rankings": 8, "best_of_n": [{"n": 1, "kl_bound": 0.0, "proxy": 0.0,
        ...        "gold": 1.0}, {"n": 2, "kl_bound": 0.19, "proxy": 0.5, "gold": 1.1}],
        ...        "ppo": {"kl": [0.0, 1.0], "true_score": [1.0, 1.2], "reward_model": [0, 1]},
        ...        "fits": {f: {"alpha": 0.1, "beta": 0.01, "d_max": 1.0} for f in ("bon", "rl")}}
        >>> config = {"rm_k": 4, "bon_samples": 2, "ppo_steps": 256}
        >>> path = os.path.join(tempfile.mkdtemp(), "o.png")
        >>> plot_overoptimisation({"config": config, "runs": [run]}, path).exists()
        True
    """
    from matplotlib.lines import Line2D

    from lmgym.plots import new_figure, save_figure

    figure = new_figure(11, 7.5)
    axes = figure.subplots(2, 2, sharex="col", sharey="row")
    (bon_gold_ax, rl_gold_ax), (bon_proxy_ax, rl_proxy_ax) = axes
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    handles = []
    for index, run in enumerate(results["runs"]):
        colour = colours[index % len(colours)]
        handles.append(Line2D([], [], color=colour, label=f"RM of {run['rankings']} rankings"))
        bon_d = np.sqrt([p["kl_bound"] for p in run["best_of_n"]])
        bon_gold = np.array([p["gold"] for p in run["best_of_n"]])
        bon_gold_ax.plot(bon_d, bon_gold, "o-", color=colour)
        bon_proxy_ax.plot(bon_d, [p["proxy"] for p in run["best_of_n"]], "s--", color=colour)
        rl_d = np.sqrt(np.clip(run["ppo"]["kl"], 0.0, None))
        rl_gold = np.asarray(run["ppo"]["true_score"], dtype=float)
        rl_gold_ax.plot(rl_d, rl_gold, ".-", color=colour, linewidth=1)
        rl_proxy_ax.plot(rl_d, run["ppo"]["reward_model"], ".--", color=colour, linewidth=1)
        for ax, form, d, start in ((bon_gold_ax, "bon", bon_d, bon_gold[0]),
                                   (rl_gold_ax, "rl", rl_d, rl_gold[0])):  # fmt: skip
            fit = _fit_from(run, form)
            if fit is not None:
                grid = np.linspace(0.0, max(float(np.max(d)), 1e-6), 50)
                ax.plot(grid, start + fit(grid), ":", color=colour, linewidth=2)
    handles.append(Line2D([], [], color="grey", linestyle=":", linewidth=2,
                          label="gold: Gao et al.'s form, fitted"))  # fmt: skip
    config = results["config"]
    bon_gold_ax.set(title=f"best-of-n, n = 1 … {config['bon_samples']}, held-out prompts",
                    ylabel="gold score (the hidden true score)")  # fmt: skip
    rl_gold_ax.set(title=f"PPO with β = 0, {config['ppo_steps']} completions (its rollouts)")
    bon_proxy_ax.set(xlabel="√KL to the SFT model (nats^½; best-of-n: log n − (n−1)/n)",
                     ylabel="proxy score (the RM's, standardised)")  # fmt: skip
    rl_proxy_ax.set(xlabel="√KL to the SFT model (nats^½)")
    rl_proxy_ax.legend(handles=handles, fontsize=8, loc="lower right")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    sizes = ", ".join(str(run["rankings"]) for run in results["runs"])
    figure.suptitle(
        f"Reward over-optimisation: proxy RMs trained on {sizes} rankings (K = {config['rm_k']}) "
        "of the SFT model's samples"
    )
    return save_figure(figure, path)


def format_overoptimisation(results: dict[str, Any]) -> str:
    """A markdown table: per RM size, its accuracy, the end points, and where the gold peaks.

    Each peak is given twice: the highest gold score measured (and its KL), and the peak of the
    fitted form. They can disagree: best-of-n's form is a parabola, so a gold curve that only
    levels off is fitted with a peak inside the measured range.
    """

    def fitted(fit: dict[str, Any] | None) -> str:
        if fit is None:
            return "too few points to fit"
        if fit["peak_kl"] is None:
            return f"no peak (rises up to KL {fit['d_max'] ** 2:.2f})"
        where = f"KL ≈ {fit['peak_kl']:.2f}"
        if fit["peak_observed"]:
            return where
        return f"not reached: fit extrapolates {where}, measured up to {fit['d_max'] ** 2:.2f}"

    def highest(gold: Sequence[float], kl: Sequence[float]) -> str:
        best = int(np.argmax(gold))
        last = " (the last point)" if best == len(gold) - 1 else ""
        return f"{gold[best]:.3f} at KL {max(kl[best], 0.0):.2f}{last}"

    lines = [
        "| RM rankings | RM held-out accuracy | PPO end: KL | proxy | gold (start) "
        "| PPO: highest gold | gold peak, PPO fit | best-of-n: highest gold "
        "| gold peak, best-of-n fit |",
        "|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for run in results["runs"]:
        ppo, bon = run["ppo"], run["best_of_n"]
        bon_highest = highest([p["gold"] for p in bon], [p["kl_bound"] for p in bon])
        lines.append(
            f"| {run['rankings']} | {run['rm_heldout_accuracy']:.3f} | {ppo['kl'][-1]:.2f} | "
            f"{ppo['reward_model'][-1]:+.2f} | {ppo['true_score'][-1]:.3f} "
            f"({ppo['true_score'][0]:.3f}) | {highest(ppo['true_score'], ppo['kl'])} | "
            f"{fitted(run['fits']['rl'])} | {bon_highest} | {fitted(run['fits']['bon'])} |"
        )
    return "\n".join(lines)
