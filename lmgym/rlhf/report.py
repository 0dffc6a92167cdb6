"""The report of ``lmgym rlhf``: PNG plots and ``results.md`` from the pipeline's results.

Three figures carry the pipeline's findings:

* ``rm_vs_true.png``: reward-model score and true score of the completions PPO wrote, over
  training, one line per β. Reward over-optimisation (Gao et al. 2023) is the RM score rising
  while the true score stalls or falls, most visible at small β.
* ``reward_vs_kl.png``: RM score and true score of each policy on the held-out prompts against
  its KL to the SFT model (the "reward against KL" frontier), with each PPO run's trajectory.
* ``elo.png``: the Elo ratings with their bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lmgym.rlhf.checks import Check
from lmgym.rlhf.elo import EloRating, format_elo_table

__all__ = [
    "format_policy_table",
    "format_summary",
    "plot_elo",
    "plot_reward_vs_kl",
    "plot_rm_vs_true",
    "write_md",
]

History = Mapping[str, Sequence[float]]
"""A PPO run's per-rollout ``timesteps``, ``reward_model``, ``true_score`` and ``kl``."""


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG.

    A bare Figure draws with the Agg canvas when saved: no display, no pyplot state, and no
    backend chosen when the module is imported.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_rm_vs_true(runs: Mapping[str, History], path: str | Path) -> Path:
    """RM score, true score and KL of the training completions over PPO steps, per run.

    Example:
        >>> import tempfile, os
        >>> h = {"timesteps": [256, 512], "reward_model": [0.1, 0.5], "true_score": [1.0, 0.9],
        ...      "kl": [0.5, 2.0]}
        >>> plot_rm_vs_true({"PPO β=0.01": h}, os.path.join(tempfile.mkdtemp(), "a.png")).exists()
        True
    """
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    panels = (
        ("reward_model", "RM score (standardised on SFT samples)", "what PPO maximises"),
        ("true_score", "true score (sentiment + fluency)", "the hidden ground truth"),
        ("kl", "KL to the SFT model (nats per completion)", "drift from the SFT model"),
    )
    # A run of one rollout has one point: a line through it draws nothing but a dot, so such
    # runs are drawn as bars of their one value (a --quick run), and the titles say so.
    draw = _curves if any(len(h["timesteps"]) > 1 for h in runs.values()) else _bars
    for ax, (name, ylabel, title) in zip(axes, panels, strict=True):
        draw(ax, runs, name)
        ax.set_ylabel(ylabel)
        ax.set_title(title if draw is _curves else f"{title}\n(one rollout per run: bars)")
        ax.grid(alpha=0.3)
    if draw is _curves:
        axes[0].legend(fontsize=8)
    return _save(fig, path)


def _curves(ax: Any, runs: Mapping[str, History], name: str) -> None:
    for label, history in runs.items():
        ax.plot(history["timesteps"], history[name], marker=".", label=label)
    ax.set_xlabel("PPO environment steps (completions)")


def _bars(ax: Any, runs: Mapping[str, History], name: str) -> None:
    labels = list(runs)
    values = [runs[label][name][-1] if runs[label][name] else math.nan for label in labels]
    ax.bar(range(len(labels)), values, color=[f"C{i}" for i in range(len(labels))], alpha=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    steps = {h["timesteps"][-1] for h in runs.values() if h["timesteps"]}
    ax.set_xlabel(f"run (its one rollout, at {', '.join(map(str, sorted(steps)))} steps)")


def _label_points(ax: Any, points: Mapping[str, tuple[float, float]]) -> None:
    """Scatter ``points`` and label them without labels on top of each other.

    Points closer than 3% of the data's range on both axes get one label naming them all (e.g.
    policies that wrote the same completions sit on one spot); a label near an earlier one
    moves below its point, and labels in the right third of the plot extend to the left.
    """
    xs = [x for x, _ in points.values()]
    ys = [y for _, y in points.values()]
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    clusters: list[tuple[float, float, list[str]]] = []
    for index, (label, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], s=40, zorder=3, color=f"C{index}")
        for cx, cy, names in clusters:
            if abs(cx - x) <= 0.03 * span_x and abs(cy - y) <= 0.03 * span_y:
                names.append(label)
                break
        else:
            clusters.append((x, y, [label]))
    placed: list[tuple[float, float]] = []
    for x, y, names in clusters:
        crowded = any(abs(px - x) <= 0.25 * span_x and abs(py - y) <= 0.08 * span_y
                      for px, py in placed)  # fmt: skip
        right = x > min(xs) + 0.66 * span_x
        offset = (-4 if right else 4, -11 if crowded else 3)
        ax.annotate(", ".join(names), (x, y), fontsize=8, xytext=offset,
                    textcoords="offset points", ha="right" if right else "left")  # fmt: skip
        placed.append((x, y))
    ax.margins(0.12)


def plot_reward_vs_kl(
    policies: Mapping[str, Mapping[str, float]],
    runs: Mapping[str, History],
    path: str | Path,
) -> Path:
    """RM score and true score against KL to the SFT model: held-out points and PPO paths.

    Args:
        policies: ``{name: {"kl", "rm_score", "true_score"}}`` on the held-out prompts.
        runs: Training histories, drawn as paths through (KL, score).
        path: Where to write the PNG.

    Example:
        >>> import tempfile, os
        >>> pts = {"SFT": {"kl": 0.0, "rm_score": 0.0, "true_score": 1.0}}
        >>> plot_reward_vs_kl(pts, {}, os.path.join(tempfile.mkdtemp(), "b.png")).exists()
        True
    """
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    paths = {label: h for label, h in runs.items() if len(h["kl"]) > 1}  # one point: no path
    for ax, (name, ylabel) in zip(
        axes, (("rm_score", "RM score"), ("true_score", "true score")), strict=True
    ):
        history_name = "reward_model" if name == "rm_score" else "true_score"
        for label, history in paths.items():
            ax.plot(history["kl"], history[history_name], alpha=0.35, label=f"{label} (train)")
        if policies:
            _label_points(ax, {k: (p["kl"], p[name]) for k, p in policies.items()})
        ax.set_xlabel("KL to the SFT model (nats per completion)")
        ax.set_ylabel(ylabel)
        title = f"{ylabel} against KL (points: held-out prompts)"
        if runs and not paths:
            title += "\n(no training paths: one rollout per run)"
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if paths:
        axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_elo(table: Sequence[EloRating], path: str | Path) -> Path:
    """The Elo ratings as bars with their bootstrap intervals, best first.

    Example:
        >>> import tempfile, os
        >>> rows = [EloRating("PPO", 1100.0, 1050.0, 1150.0, 10, 0.8)]
        >>> plot_elo(rows, os.path.join(tempfile.mkdtemp(), "elo.png")).exists()
        True
    """
    fig = Figure(figsize=(1.2 * len(table) + 2, 4))
    ax = fig.subplots()
    names = [row.player for row in table]
    ratings = [row.rating for row in table]
    errors = [
        [row.rating - row.low for row in table],
        [row.high - row.rating for row in table],
    ]
    ax.bar(names, ratings, yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
    low = min(row.low for row in table)
    high = max(row.high for row in table)
    ax.set_ylim(low - 50, high + 50)
    ax.axhline(1000, color="gray", lw=0.8)
    ax.set_ylabel("Elo rating (95% bootstrap interval)")
    ax.set_title("Head-to-head labeler comparisons on held-out prompts")
    ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


RANK_NOTE = (
    "Rank: 1 + the policies whose whole interval lies above this one's; equal ranks (=) are "
    "ties, ordered only by the judge's noise."
)


def _check_line(check: Mapping[str, Any]) -> str:
    """A check of ``results.json`` as one line: verdict, text, and why it is not judged."""
    return Check(check["check"], check["passed"], check["not_judged"]).line()


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def format_policy_table(policies: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of the held-out evaluation, one row per policy.

    Example:
        >>> row = {"true_score": 1.2, "rm_score": 0.3, "sentiment": 0.2, "fluency": 0.95,
        ...        "kl": 1.5, "corpus_loss": 1.1}
        >>> print(format_policy_table({"SFT": row}).splitlines()[2])
        | SFT | 1.200 | +0.300 | +0.200 | 95% | 1.50 | 1.100 |
    """
    lines = [
        "| policy | true score | RM score | sentiment | fluency | KL to SFT | pre-training loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in policies.items():
        lines.append(
            f"| {name} | {_fmt(row['true_score'], '.3f')} | {_fmt(row['rm_score'], '+.3f')} | "
            f"{_fmt(row['sentiment'], '+.3f')} | {_fmt(row['fluency'], '.0%')} | "
            f"{_fmt(row['kl'], '.2f')} | {_fmt(row['corpus_loss'], '.3f')} |"
        )
    return "\n".join(lines)


def write_md(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``results.md``: the results table, RM accuracy, Elo table, checks and wall times.

    ``results`` is the dict :func:`lmgym.rlhf.pipeline.run_rlhf` also writes to
    ``results.json``.
    """
    rm = results["reward_model"]
    lines = [
        "# lmgym rlhf: results",
        "",
        f"Run: `{results['command']}` (seed {results['config']['seed']}, "
        f"{results['config']['threads']} torch thread(s)); total wall time "
        f"{results['wall_time_s']['total']:.0f} s.",
        "",
        *[f"> {note}\n" for note in results["notes"]],
        "## Held-out evaluation",
        "",
        f"{results['eval_prompts']} held-out prompts × {results['config']['eval_samples']} "
        "samples each. True score = lexicon sentiment of the completion + 1 if prompt + "
        "completion pass the grammar check (the labelers' hidden preference, never shown to the "
        "RM). RM score = the learned reward model, standardised on the SFT model's samples (what "
        "PPO maximises). KL = Σ_t KL(π(·|x, y<t) ‖ π_SFT(·|x, y<t)) along the sampled completion "
        "(exact per position). Pre-training "
        "loss = per-token LM loss on held-out reviews of the pre-training corpus.",
        "",
        format_policy_table(results["policies"]),
        "",
        "## Reward model",
        "",
        f"Trained on {rm['n_train_rankings']} rankings of K={results['config']['rm_k']} "
        f"completions ({rm['n_train_pairs']} pairs; {rm['n_train_identical_pairs']} pairs of "
        f"identical texts left out); held out: {rm['n_heldout_rankings']} rankings of the test "
        f"prompts ({rm['n_heldout_pairs']} pairs; {rm['n_heldout_identical_pairs']} left out).",
        "",
        "| held-out pairwise accuracy | labeler's own ceiling | noise-free accuracy | "
        "correlation with true score |",
        "|---:|---:|---:|---:|",
        f"| {rm['heldout_accuracy']:.1%} | {rm['oracle_accuracy']:.1%} | "
        f"{rm['heldout_true_accuracy']:.1%} | {rm['true_score_correlation']:.3f} |",
        "",
        "Accuracy is against the noisy labeler (chance = 50%); the ceiling is how often the true "
        "score itself agrees with the noisy labels.",
        "",
        "## Elo",
        "",
        f"{results['elo_games']} head-to-head games judged by a noisy labeler "
        f"(T={results['config']['labeler_temperature']}); ratings are the Bradley-Terry "
        "maximum-likelihood fit on the Elo scale, intervals by bootstrap over prompts (each "
        "with all its games: games on one prompt share completions). Two identical "
        f"completions are a draw. {RANK_NOTE}",
        "",
        format_elo_table([EloRating(**row) for row in results["elo"]]),
        "",
        "## Checks",
        "",
    ]
    lines += [f"- {_check_line(check)}" for check in results["checks"]]
    lines += [
        "",
        "## Wall time per stage",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {stage} | {seconds:.1f} |" for stage, seconds in results["wall_time_s"].items()],
        "",
        "## Plots",
        "",
        "- `rm_vs_true.png`: RM score, true score and KL over PPO training, one line per β.",
        "- `reward_vs_kl.png`: RM and true score against KL to the SFT model.",
        "- `elo.png`: Elo ratings with 95% intervals.",
        *(
            ["- `overoptimisation.png`: gold and proxy score against √KL per RM size."]
            if "overoptimisation" in results
            else []
        ),
        *(["- `rounds.png`: true score and RM score by round."] if "rounds" in results else []),
        "",
        *_rounds_lines(results),
        *_overoptimisation_lines(results),
        "## Examples (held-out prompts)",
        "",
    ]
    for name, row in results["policies"].items():
        for prompt, completion in row["examples"][:2]:
            lines.append(f"- {name}: `{prompt}` → `{completion}`")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def _rounds_lines(results: Mapping[str, Any]) -> list[str]:
    """The iterated-RLHF section of results.md, when the run had more than one round."""
    from lmgym.rlhf.rounds import format_round_table, round_table_note

    if "rounds" not in results:
        return []
    table = results["rounds"]
    return ["## Rounds", "", round_table_note(table), "", format_round_table(table), ""]


def _overoptimisation_lines(results: Mapping[str, Any]) -> list[str]:
    """The over-optimisation section of results.md, when the sweep ran."""
    from lmgym.rlhf.overoptimisation import format_overoptimisation

    if "overoptimisation" not in results:
        return []
    sweep = results["overoptimisation"]["config"]
    return [
        "## Over-optimisation",
        "",
        f"One proxy RM per ranking count (K={sweep['rm_k']}, {sweep['rm_epochs']} epochs), then "
        f"best-of-n (n ≤ {sweep['bon_samples']}) of the SFT model on the held-out prompts and "
        f"PPO with β = 0 for {sweep['ppo_steps']} completions against each proxy. Gold = the "
        'true score; "highest gold" is the best measured point, and the fitted peaks come '
        "from Gao et al.'s forms fitted to the gold gain over the SFT model (best-of-n: "
        "d(α − βd); PPO: d(α − β log d); d = √KL). PPO's points are the "
        "means of its training rollouts; best-of-n's KL is its analytic upper bound.",
        "",
        format_overoptimisation(results["overoptimisation"]),
        "",
    ]


def format_summary(results: Mapping[str, Any]) -> str:
    """What ``lmgym rlhf`` shows at the end: the held-out table, the RM, Elo, checks, times.

    ``results`` is the dict :func:`lmgym.rlhf.pipeline.run_rlhf` returns.
    """
    rm = results["reward_model"]
    lines = [
        *[f"Note: {note}\n" for note in results["notes"]],
        "Held-out prompts (true score = sentiment + fluency; RM score standardised):",
        format_policy_table(results["policies"]),
        "",
        f"Reward model: held-out pairwise accuracy {rm['heldout_accuracy']:.1%} (ceiling "
        f"{rm['oracle_accuracy']:.1%}), correlation with the true score "
        f"{rm['true_score_correlation']:.3f}",
        "",
        f"Elo ({results['elo_games']} games):",
        format_elo_table([EloRating(**row) for row in results["elo"]]),
        "",
        RANK_NOTE,
        "",
        *_rounds_lines(results),
        "Checks:",
        *[f"  {_check_line(check)}" for check in results["checks"]],
        "",
        "Wall time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["wall_time_s"].items()),
        f"wrote results.md, results.json and the plots to {results['config']['out']}",
    ]
    return "\n".join(lines)
