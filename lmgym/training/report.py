"""The human-readable outputs of ``lmgym bench``: ``results.md``, ``curves.png``, ``frontier.png``.

All are made from the ``results.json`` object alone (``algos`` holds each algorithm's
aggregates), so every number in the table is a value of the JSON, formatted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmgym.plots import new_figure, save_figure

__all__ = [
    "TABLE_HEADER",
    "best_of_n_markdown",
    "eval_prompts_text",
    "format_ci",
    "format_matched",
    "format_steps",
    "plot_curves",
    "plot_frontier",
    "results_markdown",
    "table_header",
    "table_row",
]


def format_ci(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± half-width`` of a ``{"mean", "ci95"}`` entry (``n/a`` when there is none).

    Example:
        >>> format_ci({"mean": 3.0, "ci95": 1.96324})
        '3.000 ± 1.963'
        >>> format_ci({"mean": 3.0, "ci95": None}), format_ci(None)
        ('3.000', 'n/a')
    """
    if stat is None or stat.get("mean") is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    return text if stat.get("ci95") is None else f"{text} ± {stat['ci95']:.{digits}f}"


def format_steps(entry: dict[str, Any]) -> str:
    """Mean steps to the threshold over the runs that reached it, and how many did.

    Example:
        >>> format_steps({"mean": 1234.5, "reached": 4, "runs": 5})
        '1234 (4/5)'
        >>> format_steps({"mean": None, "reached": 0, "runs": 5})
        'never (0/5)'
    """
    mean = "never" if entry["mean"] is None else f"{entry['mean']:.0f}"
    return f"{mean} ({entry['reached']}/{entry['runs']})"


TABLE_HEADER = (
    "| algo | runs | eval reward before | eval reward after (mean ± 95% CI) | "
    "steps to threshold (reached) | eval KL after | wall s per run |"
)


def format_matched(entry: dict[str, Any]) -> str:
    """The reward at one matched KL over seeds, and how many seeds reached that KL.

    Example:
        >>> format_matched({"mean": 0.25, "ci95": 0.04, "reached": 5, "runs": 5})
        '0.250 ± 0.040'
        >>> format_matched({"mean": 0.3, "ci95": None, "reached": 1, "runs": 5})
        '0.300 (1/5)'
        >>> format_matched({"mean": None, "ci95": None, "reached": 0, "runs": 5})
        'missing (0/5)'
    """
    if entry["mean"] is None:
        return f"missing (0/{entry['runs']})"
    text = format_ci(entry)
    return (
        text
        if entry["reached"] == entry["runs"]
        else f"{text} ({entry['reached']}/{entry['runs']})"
    )


def table_header(matched_kls: list[str] | None = None) -> str:
    """The results table's header; with ``matched_kls``, the reward–KL columns beside the reward.

    Example:
        >>> table_header().startswith(TABLE_HEADER)
        True
        >>> "r_φ at KL 2 |" in table_header(["1", "2", "4"])
        True
    """
    if not matched_kls:
        return TABLE_HEADER + "\n|---|---:|---:|---:|---:|---:|---:|"
    at = "".join(f" r_φ at KL {kl} |" for kl in matched_kls)
    header = (
        "| algo | runs | eval reward before | eval reward after (mean ± 95% CI) | r_φ after |"
        f"{at} steps to threshold (reached) | eval KL after | wall s per run |"
    )
    return header + "\n|---|---:|---:|---:|---:|" + "---:|" * len(matched_kls) + "---:|---:|---:|"


def table_row(algo: str, agg: dict[str, Any]) -> str:
    """One row of the results table, formatted from one algorithm's aggregates.

    With ``matched_kl`` (LM envs), r_φ after training and r_φ at each matched KL follow the
    reward after.

    Example:
        >>> agg = {"runs": 2, "eval_reward_before": {"mean": 0.1, "ci95": 0.05},
        ...        "eval_reward_after": {"mean": 0.5, "ci95": 0.2},
        ...        "steps_to_threshold": {"mean": 300.0, "reached": 1, "runs": 2},
        ...        "eval_kl_after": None, "wall_s": {"mean": 12.3, "ci95": 1.0},
        ...        "matched_kl": None}
        >>> table_row("ppo", agg)
        '| ppo | 2 | 0.100 ± 0.050 | 0.500 ± 0.200 | 300 (1/2) | n/a | 12.3 ± 1.0 |'
    """
    matched = ""
    if agg["matched_kl"] is not None:
        matched = f" {format_ci(agg['eval_reward_model_after'])} |" + "".join(
            f" {format_matched(entry)} |" for entry in agg["matched_kl"].values()
        )
    return (
        f"| {algo} | {agg['runs']} | {format_ci(agg['eval_reward_before'])} | "
        f"{format_ci(agg['eval_reward_after'])} |{matched} "
        f"{format_steps(agg['steps_to_threshold'])} | "
        f"{format_ci(agg['eval_kl_after'])} | {format_ci(agg['wall_s'], 1)} |"
    )


def eval_prompts_text(split: str | None) -> str:
    """Which prompts the evaluation played, in words, from ``results.json``'s ``eval_prompts``.

    Example:
        >>> eval_prompts_text("test")
        'the held-out test prompts (none of them a training prompt)'
        >>> eval_prompts_text(None)
        'no prompts (not an LM env)'
        >>> eval_prompts_text("the 4 prompts of /data/eval.txt (sha256 0123456789ab)")
        'the 4 prompts of /data/eval.txt (sha256 0123456789ab)'
    """
    if split is None:
        return "no prompts (not an LM env)"
    if split == "test":
        return "the held-out test prompts (none of them a training prompt)"
    return split  # a user's split says where its prompts come from (task_options)


def _dispatch_text(results: dict[str, Any]) -> str:
    """Where the runs ran: the local pool's size, or Ray and how many attempts it retried."""
    if results.get("backend", "local") == "local":  # results.json before 0.2 has no backend
        return f"{results['jobs']} parallel processes"
    return f"Ray tasks, {results['retries']} retried after a worker died"


def results_markdown(results: dict[str, Any]) -> str:
    """The ``results.md`` text of a ``results.json`` object."""
    first = next(iter(results["algos"].values()))
    matched_kls = None if first["matched_kl"] is None else list(first["matched_kl"])
    lines = [
        f"# lmgym bench: {results['env']}, {results['policy']} policy",
        "",
        f"{len(results['seeds'])} seeds ({', '.join(map(str, results['seeds']))}), "
        f"{results['steps']} env steps per run, {_dispatch_text(results)}; "
        f"bench wall time {results['wall_s']:.0f} s. Evaluated on "
        f"{eval_prompts_text(results['eval_prompts'])}.",
        "",
        table_header(matched_kls),
        *(table_row(algo, agg) for algo, agg in results["algos"].items()),
        "",
        f"- eval reward: mean return of {results['eval_episodes']} episodes of a separate env "
        "seeded from each run's seed, the same episodes before and after training "
        "(LM envs: r_φ − β·KL with β fixed at kl_coef, on the held-out prompts); ± is the "
        "Student-t 95% interval over seeds.",
        "- steps to threshold: first env step at which the training curve (mean reward of the "
        f"last {results['curve']['window_episodes']} training episodes, at "
        f"{results['curve']['points']} evenly spaced steps) reached {results['threshold']:g}; "
        "mean over the runs that reached it (how many did).",
        "- eval KL after: KL to the reference model summed over an episode (nats), LM envs only.",
    ]
    if matched_kls:
        lines += [
            "- r_φ after: the reward model's score (without the KL term) of the evaluation after "
            "training. r_φ at KL k: the score where the run's evaluations (before, every "
            f"{results['eval_every']} steps during, and after training; the same evaluator and "
            "prompts for every algorithm) first reached a KL of k nats, interpolated linearly "
            "in √KL; a KL beyond the largest the run reached is not extrapolated, and (r/n) "
            "says how many of the n seeds reached it (the mean is over those). The fair "
            "comparison: reward bought at the same distance from the reference "
            "(frontier.png).",
        ]
        if results.get("best_of_n"):
            lines.append(best_of_n_markdown(results["best_of_n"]))
    lines.append("")
    return "\n".join(lines)


def plot_curves(results: dict[str, Any], path: str | Path) -> Path:
    """``curves.png``: per algorithm, the seeds' mean training curve and its 95% band.

    Example:
        >>> import tempfile, os
        >>> curve = {"steps": [0.0, 10.0], "mean": [0.0, 1.0], "low": [0.0, 0.5],
        ...          "high": [0.0, 1.5]}
        >>> results = {"env": "CatGrid-v0", "policy": "mlp", "seeds": [0, 1], "threshold": 0.8,
        ...            "algos": {"ppo": {"curve": curve}}}
        >>> plot_curves(results, os.path.join(tempfile.mkdtemp(), "c.png")).exists()
        True
    """
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for algo, agg in results["algos"].items():
        curve = agg["curve"]
        if not curve["steps"]:
            continue
        (line,) = ax.plot(curve["steps"], curve["mean"], label=f"{algo} (mean)")
        ax.fill_between(
            curve["steps"],
            curve["low"],
            curve["high"],
            color=line.get_color(),
            alpha=0.2,
            label=f"{algo} 95% CI",
        )
    ax.axhline(results["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("environment steps")
    unit = "r_φ − β·KL" if results["env"] != "CatGrid-v0" else "return"
    ax.set_ylabel(f"training episode reward ({unit})")
    ax.set_title(
        f"{results['env']}, {results['policy']} policy: mean and 95% CI over "
        f"{len(results['seeds'])} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def best_of_n_markdown(curve: dict[str, Any]) -> str:
    """The best-of-n baseline of ``results.json`` as a Markdown table with its method.

    Example:
        >>> text = best_of_n_markdown({"n": [1, 2], "reward": [0.1, 0.2], "kl_bound": [0.0, 0.19],
        ...                            "kl_estimate": [0.0, 0.15], "prompts": 36, "samples": 2,
        ...                            "seed": 0})
        >>> "| 2 | 0.200 | 0.190 | 0.150 |" in text
        True
    """
    rows = [
        f"| {n} | {reward:.3f} | {bound:.3f} | {estimate:.3f} |"
        for n, reward, bound, estimate in zip(
            curve["n"], curve["reward"], curve["kl_bound"], curve["kl_estimate"], strict=True
        )
    ]
    return "\n".join(
        [
            "",
            "## Best-of-n of the initial policy",
            "",
            f"{curve['samples']} completions of each of the {curve['prompts']} evaluation "
            f"prompts, sampled once from the initial model (seed {curve['seed']}); the "
            "best-of-n reward is the mean over every n-subset of a prompt's samples of the best "
            "r_φ in it. KL bound: log n − (n−1)/n, an upper bound (Beirami et al. 2024); KL "
            "estimate: the KL of the best-of-n distribution over the samples' reward levels "
            "(ties broken at random), averaged over prompts.",
            "",
            "| n | r_φ | KL bound (nats) | KL estimate (nats) |",
            "|---:|---:|---:|---:|",
            *rows,
        ]
    )


def plot_frontier(results: dict[str, Any], path: str | Path) -> Path:
    """``frontier.png``: r_φ against √KL per algorithm (seeds' mean, 95% band) and best-of-n.

    Each algorithm's line is the mean over seeds of the reward where each run's evaluation path
    reached that √KL (:func:`lmgym.training.frontier.frontier_band`), over the range every seed
    covers; its runs' own evaluation points are drawn faintly. Best-of-n is drawn at its
    estimated KL (solid) and at the analytic bound (dotted).

    Example:
        >>> import tempfile, os
        >>> band = {"sqrt_kl": [0.0, 1.0], "mean": [0.0, 0.3], "low": [0.0, 0.2],
        ...         "high": [0.0, 0.4]}
        >>> runs = [{"algo": "ppo", "eval_points": [{"kl": 0.0, "reward_model": 0.0},
        ...                                          {"kl": 1.0, "reward_model": 0.3}]}]
        >>> bon = {"n": [1, 4], "reward": [0.0, 0.2], "kl_bound": [0.0, 0.64],
        ...        "kl_estimate": [0.0, 0.5]}
        >>> results = {"env": "LMBandit-v0", "policy": "lm", "seeds": [0], "runs": runs,
        ...            "algos": {"ppo": {"frontier": band}}, "best_of_n": bon}
        >>> plot_frontier(results, os.path.join(tempfile.mkdtemp(), "f.png")).exists()
        True
    """
    import numpy as np

    from lmgym.training.frontier import run_frontier

    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for algo, agg in results["algos"].items():
        band = agg["frontier"]
        (line,) = ax.plot(band["sqrt_kl"], band["mean"], label=f"{algo} (mean)")
        ax.fill_between(band["sqrt_kl"], band["low"], band["high"], color=line.get_color(),
                        alpha=0.2, label=f"{algo} 95% CI")  # fmt: skip
        for run in (r for r in results["runs"] if r["algo"] == algo):
            kls, rewards = run_frontier(run)
            ax.plot(np.sqrt(np.maximum(kls, 0.0)), rewards, ".", color=line.get_color(),
                    alpha=0.25, markersize=4)  # fmt: skip
    bon = results["best_of_n"]
    if bon:
        ax.plot(np.sqrt(bon["kl_estimate"]), bon["reward"], "o-", color="black",
                label="best-of-n (estimated KL)")  # fmt: skip
        ax.plot(np.sqrt(bon["kl_bound"]), bon["reward"], "o:", color="grey", markersize=3,
                label="best-of-n (KL bound)")  # fmt: skip
        for n, x, y in zip(bon["n"], np.sqrt(bon["kl_estimate"]), bon["reward"], strict=True):
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize="x-small")  # fmt: skip
    ax.set_xlabel("√KL to the reference (KL summed over the completion, nats)")
    ax.set_ylabel("reward-model score r_φ (held-out prompts)")
    ax.set_title(
        f"{results['env']}, {results['policy']} policy: reward against KL, mean and 95% CI "
        f"over {len(results['seeds'])} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)
