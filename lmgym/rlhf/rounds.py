"""Iterated online RLHF: ``lmgym rlhf --rounds N`` repeats rankings → reward model → PPO.

Bai et al. (2022, *Training a Helpful and Harmless Assistant with RLHF*, section 4.5) collected
comparisons on samples of the current policy, trained a new reward model and trained the policy
again, round after round, and placed every round's policy in one Elo ranking. A reward model
trained on the SFT model's samples has seen few texts like those a PPO policy writes, so its
scores of them are the least reliable exactly where the policy goes; a new round's rankings are
taken from there.

Round 1 is the pipeline's own reward model and main PPO run (``PPO``, β = ``kl_coef``). Round
k ≥ 2 (:func:`training_stages`, one pipeline stage per round):

1. the same simulated labeler ranks K samples of round k−1's policy for each prompt round 1
   ranked (as many rankings as round 1), and of each held-out test prompt;
2. a new reward model, started from the SFT model as round 1's was, trains on every round's
   rankings so far (``rm_data="accumulate"``) or on round k's alone (``"latest"``), and is
   measured on round k's held-out rankings: the texts it is about to be used on;
3. it is standardised on the SFT model's samples (round 1's rankings), as round 1's reward
   model is (:class:`~lmgym.rlhf.ppo_stage.NormalizedReward`), so an RM score of 0 means "as
   good as the SFT model" under every round's reward model;
4. PPO continues from round k−1's saved LM (the value head starts afresh) against it, the KL
   reference still the SFT model, as in Bai et al.

:func:`round_table` (a stage after Elo) then gathers one row per round, with the SFT model as
round 0: the reward model's data and held-out accuracy, the policy's true score, its score
under that round's reward model and under round 1's, its KL to the SFT model and its Elo.
:func:`plot_rounds` draws the scores by round (``rounds.png``). A round's reward model fooled by
its own policy shows as its RM score rising while the true score falls.

The module imports nothing heavy at import time, as :mod:`lmgym.rlhf.pipeline`; each stage
imports what it runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lmgym.rlhf.config import StageResult
    from lmgym.rlhf.pipeline import RLHFConfig
    from lmgym.rlhf.rankings import Ranking

__all__ = [
    "Round",
    "format_round_table",
    "plot_rounds",
    "policy_name",
    "rm_training_data",
    "round_table",
    "round_table_note",
    "train_round",
    "training_stages",
]

logger = logging.getLogger(__name__)

RMData = Literal["accumulate", "latest"]

SEED_STRIDE = 10
"""Round k's seeds are round 1's plus ``SEED_STRIDE · (k − 1)``, so round 1 is the pipeline's."""


@dataclass(frozen=True)
class Round:
    """What one round produced.

    Attributes:
        number: The round, from 1.
        policy: The policy's name in the evaluation and the Elo table (``PPO`` for round 1).
        rankings: The rankings collected this round (not those of earlier rounds).
        reward_model: The round's reward model; its metrics are measured on held-out rankings
            of the samples it was collected on.
        reward: The standardised reward PPO trained on (a
            :class:`~lmgym.rlhf.ppo_stage.NormalizedReward`).
        ppo: The round's PPO run.
    """

    number: int
    policy: str
    rankings: list[Ranking]
    reward_model: StageResult
    reward: Any
    ppo: StageResult


def policy_name(number: int) -> str:
    """Round ``number``'s policy name: round 1 is the pipeline's main ``PPO`` run.

    Example:
        >>> policy_name(1), policy_name(3)
        ('PPO', 'PPO round 3')
    """
    return "PPO" if number == 1 else f"PPO round {number}"


def rm_training_data(per_round: Sequence[Sequence[Ranking]], rm_data: RMData) -> list[Ranking]:
    """The rankings the latest round's reward model trains on.

    Args:
        per_round: Each round's own rankings, round 1 first.
        rm_data: ``"accumulate"``: all of them; ``"latest"``: the last round's.

    Example:
        >>> rm_training_data([["a1", "a2"], ["b1", "b2"]], "accumulate")
        ['a1', 'a2', 'b1', 'b2']
        >>> rm_training_data([["a1", "a2"], ["b1", "b2"]], "latest")
        ['b1', 'b2']
    """
    if rm_data == "latest":
        return list(per_round[-1])
    return [ranking for rankings in per_round for ranking in rankings]


def first_round(state: Mapping[str, Any]) -> Round:
    """Round 1 as the pipeline's reward-model and main PPO stages left it in ``state``."""
    name = policy_name(1)
    return Round(1, name, state["rankings"], state["rm"], state["reward"], state["ppo"][name])


def train_round(config: RLHFConfig, state: dict[str, Any], *, number: int) -> None:
    """Pipeline stage: round ``number`` ≥ 2 (rankings of the last policy → new RM → PPO).

    Reads ``state["rounds"]`` (round 1 from the earlier stages when absent) and appends the new
    :class:`Round`; the PPO run also goes to ``state["ppo"]`` under the round's policy name, so
    the evaluation and the Elo table take it in like any other PPO policy.
    """
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.rlhf.config import PPOStageConfig, RewardModelConfig
    from lmgym.rlhf.learned_reward import LearnedRewardModel
    from lmgym.rlhf.ppo_stage import NormalizedReward, run_ppo_stage
    from lmgym.rlhf.rankings import collect_rankings
    from lmgym.rlhf.reward_model import train_reward_model

    rounds: list[Round] = state.setdefault("rounds", [first_round(state)])
    assert rounds[-1].number == number - 1, f"round {number} after round {rounds[-1].number}"
    sft, labeler, k = state["SFT"], state["labeler"], config.size("rm_k")
    previous, first = rounds[-1].ppo.path, rounds[0].rankings
    seed = config.seed + SEED_STRIDE * (number - 1)
    # The prompts round 1 ranked, as often: each round gets as many comparisons as round 1.
    rankings = collect_rankings(previous, [r.prompt for r in first], k, labeler, seed)
    heldout = collect_rankings(previous, corpus_prompts("test"), k, labeler, seed + 1)
    data = rm_training_data([*(r.rankings for r in rounds), rankings], config.rm_data)
    out = state["models"] / f"round{number}"
    rm_config = RewardModelConfig(epochs=config.size("rm_epochs"), seed=seed,
                                  progress=config.progress, device=config.device)  # fmt: skip
    rm = train_reward_model(rm_config, data, out / "reward_model", model=sft, heldout=heldout)
    reward = NormalizedReward.fit(
        LearnedRewardModel(rm.path, policy_tokenizer=sft, device=config.device, dtype=config.dtype),
        [r.prompt for r in first for _ in r.completions],
        [c for r in first for c in r.completions],
    )
    ppo_config = PPOStageConfig(
        steps=config.size("ppo_steps"),
        kl_coef=config.kl_coef,
        learning_rate=config.ppo_learning_rate,
        seed=seed,
        progress=config.progress,
        device=config.device,
        dtype=config.dtype,
    )
    name = policy_name(number)
    desc = f"{name} β={config.kl_coef:g}"
    ppo = run_ppo_stage(ppo_config, reward, out / "ppo", model=previous, reference=sft, desc=desc)
    ppo.metrics["round"] = number
    state["ppo"][name] = ppo
    rounds.append(Round(number, name, rankings, rm, reward, ppo))
    logger.info(
        "round %d: RM on %d rankings, held-out accuracy %.3f; PPO saved to %s",
        number, len(data), rm.metrics["heldout_accuracy"], ppo.path,
    )  # fmt: skip


def training_stages(config: RLHFConfig) -> list[tuple[str, Callable[..., None]]]:
    """The pipeline stages of rounds 2 to ``config.rounds``, one per round.

    Example:
        >>> from lmgym.rlhf.pipeline import RLHFConfig
        >>> [name for name, _ in training_stages(RLHFConfig(rounds=3))]
        ['round 2', 'round 3']
    """
    return [(f"round {n}", partial(train_round, number=n)) for n in range(2, config.rounds + 1)]


def round_table(config: RLHFConfig, state: dict[str, Any]) -> None:
    """Pipeline stage after Elo: ``state["round_table"]``, one row per round plus the SFT model.

    Each round's policy is scored again under that round's reward model by an evaluator with
    the pipeline's seed, prompts and samples, so it writes the same completions as in the
    evaluation, and the score is computed as the evaluation computes its RM score (round 1's
    reward model): round 1's row equals the ``PPO`` row there.
    """
    from lmgym.evaluation import PolicyEvaluator

    rounds: list[Round] = state["rounds"]
    policies = state["policies"]
    elo = {row.player: row for row in state["elo"]}
    prompts = state["evaluator"].prompts[:: config.size("eval_samples")]

    def row(number: int, name: str, rm: StageResult | None, rm_score: float | None,
            rm_score_se: float | None) -> dict[str, Any]:  # fmt: skip
        policy, rating = policies[name], elo[name]
        metrics = {} if rm is None else rm.metrics
        return {
            "round": number,
            "policy": name,
            "rm_rankings": metrics.get("n_train_rankings"),
            "rm_pairs": metrics.get("n_train_pairs"),
            "rm_heldout_accuracy": metrics.get("heldout_accuracy"),
            "rm_oracle_accuracy": metrics.get("oracle_accuracy"),
            "true_score": policy["true_score"],
            "true_score_se": policy["true_score_se"],
            "rm_score": rm_score,
            "rm_score_se": rm_score_se,
            "first_rm_score": policy["rm_score"],
            "kl": policy["kl"],
            "elo": rating.rating,
            "elo_low": rating.low,
            "elo_high": rating.high,
        }

    rows = [row(0, "SFT", None, None, None)]
    for r in rounds:
        evaluator = PolicyEvaluator(
            state["SFT"],
            r.reward,
            prompts,
            samples=config.size("eval_samples"),
            seed=config.seed + 2,  # the pipeline's evaluation seed: the same completions
            corpus_docs=0,
        )
        scored = evaluator(r.ppo.path)
        assert scored["completions"] == policies[r.policy]["completions"], r.policy
        rows.append(row(r.number, r.policy, r.reward_model, scored["rm_score"],
                        scored["rm_score_se"]))  # fmt: skip
    state["round_table"] = {"rm_data": config.rm_data, "rows": rows}


def round_table_note(table: Mapping[str, Any]) -> str:
    """What the round table's columns mean: the text above it in results.md.

    Example:
        >>> round_table_note({"rm_data": "latest"})[:33]
        'Round 0 is the SFT model; round 1'
    """
    data = {"accumulate": "every round's rankings so far", "latest": "its own rankings only"}
    return (
        "Round 0 is the SFT model; round 1 is the reward model and PPO policy above. Each later "
        "round ranked samples of the previous round's policy (as many rankings as round 1, the "
        f"same labeler), trained a new reward model on {data[table['rm_data']]} and continued "
        "PPO from that policy, the KL still to the SFT model. RM data: the rankings (pairs) the "
        "round's reward model trained on; its held-out accuracy is on rankings of the test "
        "prompts' samples from the policy the round started from (the ceiling: the true "
        "score's own agreement with the noisy labels). Scores are on the held-out prompts; RM "
        "scores are standardised on the SFT model's samples (0: as good as SFT). A round's "
        "reward model fooled by its own policy shows as its RM score rising while the true "
        "score falls."
    )


def _fmt(value: float | None, spec: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return format(value, spec)


def format_round_table(table: Mapping[str, Any]) -> str:
    """The round table as Markdown: one row per round, the SFT model as round 0.

    Example:
        >>> rows = [{"round": 1, "policy": "PPO", "rm_rankings": 360, "rm_pairs": 5362,
        ...          "rm_heldout_accuracy": 0.665, "rm_oracle_accuracy": 0.711,
        ...          "true_score": 1.405, "true_score_se": 0.02, "rm_score": 0.866,
        ...          "first_rm_score": 0.866, "kl": 1.48, "elo": 1071.2, "elo_low": 1045.0,
        ...          "elo_high": 1098.0}]
        >>> print(format_round_table({"rows": rows}).splitlines()[2])
        | 1 | PPO | 360 (5362) | 66.5% (71.1%) | 1.405 ± 0.020 | +0.866 | +0.866 | 1.48 | 1071 [1045, 1098] |
    """  # noqa: E501 - a doctest output line cannot be wrapped
    lines = [
        "| round | policy | RM data: rankings (pairs) | RM held-out accuracy (ceiling) | "
        "true score ± SE | RM score (this round's RM) | RM score (round 1's RM) | KL to SFT | "
        "Elo [95%] |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        data = "–" if r["rm_rankings"] is None else f"{r['rm_rankings']} ({r['rm_pairs']})"
        accuracy = (
            "–"
            if r["rm_heldout_accuracy"] is None
            else f"{r['rm_heldout_accuracy']:.1%} ({r['rm_oracle_accuracy']:.1%})"
        )
        lines.append(
            f"| {r['round']} | {r['policy']} | {data} | {accuracy} | "
            f"{r['true_score']:.3f} ± {_fmt(r['true_score_se'], '.3f')} | "
            f"{_fmt(r['rm_score'], '+.3f')} | {_fmt(r['first_rm_score'], '+.3f')} | "
            f"{r['kl']:.2f} | {r['elo']:.0f} [{r['elo_low']:.0f}, {r['elo_high']:.0f}] |"
        )
    return "\n".join(lines)


def plot_rounds(table: Mapping[str, Any], path: str | Path) -> Path:
    """``rounds.png``: true score (left) and RM scores (right) of each round's policy.

    The right panel draws each policy's score under its own round's reward model and under
    round 1's; round 0 is the SFT model (0 under every round's RM by the standardisation, up to
    the sample). Error bars are one standard error over the held-out samples.

    Example:
        >>> import os, tempfile
        >>> rows = [{"round": 0, "true_score": 1.2, "true_score_se": 0.02, "rm_score": None,
        ...          "rm_score_se": None, "first_rm_score": 0.0},
        ...         {"round": 1, "true_score": 1.4, "true_score_se": 0.02, "rm_score": 0.9,
        ...          "rm_score_se": 0.05, "first_rm_score": 0.9}]
        >>> plot_rounds({"rows": rows}, os.path.join(tempfile.mkdtemp(), "r.png")).exists()
        True
    """
    from lmgym.plots import new_figure, save_figure

    rows = table["rows"]
    fig = new_figure(11, 4.2)
    truth_ax, rm_ax = fig.subplots(1, 2)
    rounds = [r["round"] for r in rows]
    truth_ax.errorbar(rounds, [r["true_score"] for r in rows],
                      yerr=[r["true_score_se"] for r in rows], marker="o", capsize=3,
                      color="C0")  # fmt: skip
    truth_ax.set_ylabel("true score (sentiment + fluency)")
    truth_ax.set_title("hidden true score on held-out prompts")
    own = [r for r in rows if r["rm_score"] is not None]
    rm_ax.errorbar([r["round"] for r in own], [r["rm_score"] for r in own],
                   yerr=[r["rm_score_se"] for r in own], marker="o", capsize=3, color="C1",
                   label="this round's RM (what its PPO maximised)")  # fmt: skip
    rm_ax.plot(rounds, [r["first_rm_score"] for r in rows], marker="s", ls="--", color="C2",
               label="round 1's RM")  # fmt: skip
    rm_ax.axhline(0.0, color="gray", lw=0.8)
    rm_ax.set_ylabel("RM score (standardised on SFT samples)")
    rm_ax.set_title("reward-model score on held-out prompts")
    rm_ax.legend(fontsize=8)
    for ax in (truth_ax, rm_ax):
        ax.set_xlabel("round (0: the SFT model)")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
