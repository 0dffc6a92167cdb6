"""The human-readable outputs of ``lmgym bench``: ``results.md`` and ``curves.png``.

Both are made from the ``results.json`` object alone (``algos`` holds each algorithm's
aggregates), so every number in the table is a value of the JSON, formatted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmgym.plots import new_figure, save_figure

__all__ = [
    "TABLE_HEADER",
    "eval_prompts_text",
    "format_ci",
    "format_steps",
    "plot_curves",
    "results_markdown",
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


def table_row(algo: str, agg: dict[str, Any]) -> str:
    """One row of the results table, formatted from one algorithm's aggregates.

    Example:
        >>> agg = {"runs": 2, "eval_reward_before": {"mean": 0.1, "ci95": 0.05},
        ...        "eval_reward_after": {"mean": 0.5, "ci95": 0.2},
        ...        "steps_to_threshold": {"mean": 300.0, "reached": 1, "runs": 2},
        ...        "eval_kl_after": None, "wall_s": {"mean": 12.3, "ci95": 1.0}}
        >>> table_row("ppo", agg)
        '| ppo | 2 | 0.100 ± 0.050 | 0.500 ± 0.200 | 300 (1/2) | n/a | 12.3 ± 1.0 |'
    """
    return (
        f"| {algo} | {agg['runs']} | {format_ci(agg['eval_reward_before'])} | "
        f"{format_ci(agg['eval_reward_after'])} | {format_steps(agg['steps_to_threshold'])} | "
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


def results_markdown(results: dict[str, Any]) -> str:
    """The ``results.md`` text of a ``results.json`` object."""
    lines = [
        f"# lmgym bench: {results['env']}, {results['policy']} policy",
        "",
        f"{len(results['seeds'])} seeds ({', '.join(map(str, results['seeds']))}), "
        f"{results['steps']} env steps per run, {results['jobs']} parallel processes; "
        f"bench wall time {results['wall_s']:.0f} s. Evaluated on "
        f"{eval_prompts_text(results['eval_prompts'])}.",
        "",
        TABLE_HEADER,
        "|---|---:|---:|---:|---:|---:|---:|",
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
        "",
    ]
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
