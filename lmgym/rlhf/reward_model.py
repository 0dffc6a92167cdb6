"""Training a reward model from rankings, and measuring it against the hidden true score.

The reward model (RM, :mod:`lmgym.rlhf.learned_reward`) is the LM with a scalar head in place of
its unembedding. It is trained on rankings of K completions per prompt with the loss
``-log σ(r(x, y_w) - r(x, y_l))`` averaged over the C(K,2) pairs (Ouyang et al. 2022, section
3.5), less the pairs of identical texts (a sample drawn twice), which carry no preference and
are counted in the result instead; each ranking is one batch element, so each completion takes
one forward row (:mod:`lmgym.rlhf.rankings`). It is measured on held-out rankings: pairwise
accuracy against the noisy labeler and against the noise-free true order, and the correlation
with the true score.

This module also re-exports the stage's other names, so one import serves the whole stage:
:class:`Ranking`, :func:`collect_rankings`, :func:`preference_pairs`,
:func:`pairwise_ranking_loss`, and :class:`LearnedRewardModel`, which wraps a trained RM as a
batch reward function for ``gym.make("LMBandit-v0", reward_fn=LearnedRewardModel(path))``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.rlhf.config import RewardModelConfig, StageResult
from lmgym.rlhf.fit import fit, n_batches, resolve_out, save_model_dir, shuffled_batches
from lmgym.rlhf.labelers import true_score
from lmgym.rlhf.learned_reward import (
    LearnedRewardModel,
    init_reward_model,
    reward_scores,
)
from lmgym.rlhf.rankings import (
    Ranking,
    collect_rankings,
    pairwise_ranking_loss,
    preference_pairs,
)
from lmgym.seeding import set_seed

__all__ = [
    "LearnedRewardModel",
    "Ranking",
    "RewardModelConfig",
    "collect_rankings",
    "evaluate_reward_model",
    "init_reward_model",
    "pairwise_ranking_loss",
    "preference_pairs",
    "ranking_batch_loss",
    "reward_scores",
    "train_reward_model",
]

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def ranking_batch_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rankings: Sequence[Ranking]
) -> torch.Tensor:
    """Mean over ``rankings`` of each ranking's pairwise loss, from one forward pass.

    All completions of all rankings go through the RM once (Σ K rows); the pairs of a ranking
    are then formed from its K scores. Pairs of identical texts are left out of each ranking's
    mean (:func:`pairwise_ranking_loss`), and a ranking with no pair of different texts is left
    out of the batch's mean; a batch of only such rankings gives a loss of 0 (no gradient).

    Example:
        >>> model, tok = init_reward_model(DEFAULT_MODEL_DIR)
        >>> r = Ranking("the soup was", ["cold .", "great .", "fine ."], order=[1, 2, 0])
        >>> ranking_batch_loss(model, tok, [r]).shape
        torch.Size([])
    """
    prompts = [r.prompt for r in rankings for _ in r.completions]
    completions = [c for r in rankings for c in r.completions]
    scores = reward_scores(model, tokenizer, prompts, completions)  # (Σ K,)
    losses = [
        pairwise_ranking_loss(chunk, r.order, r.completions)
        for r, chunk in zip(rankings, scores.split([r.k for r in rankings]), strict=True)
        if r.identical_pairs < math.comb(r.k, 2)
    ]
    if not losses:
        return scores.sum() * 0.0  # keeps the graph, so backward() still works
    return torch.stack(losses).mean()


def evaluate_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rankings: Sequence[Ranking],
    *,
    true_score_fn: ScoreFn = true_score,
    batch_size: int = 64,
) -> dict[str, float]:
    """Pairwise accuracy (noisy and noise-free), loss and true-score correlation on rankings.

    Pairs of identical texts carry no preference and are not counted, in the accuracies nor in
    the loss (``identical_pairs`` says how many were left out); a tied RM score counts as half
    right.

    Returns:
        ``{"accuracy", "true_accuracy", "oracle_accuracy", "loss", "correlation", "pairs",
        "identical_pairs"}``: ``pairs`` is the number of pairs of different texts the
        accuracies and the loss are over.

    Example:
        >>> model, tok = init_reward_model(DEFAULT_MODEL_DIR)
        >>> r = Ranking("the soup was", ["cold .", "great ."], order=[1, 0])
        >>> metrics = evaluate_reward_model(model, tok, [r])
        >>> metrics["pairs"], metrics["identical_pairs"], sorted(metrics)[:3]
        (1, 0, ['accuracy', 'correlation', 'identical_pairs'])
    """
    if not rankings:
        raise ValueError("rankings is empty; expected at least one ranking to evaluate on.")
    scores: list[np.ndarray] = []
    losses: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(rankings), batch_size):
            chunk = rankings[start : start + batch_size]
            prompts = [r.prompt for r in chunk for _ in r.completions]
            completions = [c for r in chunk for c in r.completions]
            flat = reward_scores(model, tokenizer, prompts, completions)
            for r, s in zip(chunk, flat.split([r.k for r in chunk]), strict=True):
                if r.identical_pairs < math.comb(r.k, 2):
                    losses.append(float(pairwise_ranking_loss(s, r.order, r.completions)))
                scores.append(s.double().numpy())
    truths = [true_score_fn([r.prompt] * r.k, r.completions) for r in rankings]
    agree, true_agree, oracle = [], [], []
    for r, s, t in zip(rankings, scores, truths, strict=True):
        for w, lo in r.pairs():
            if r.completions[w] == r.completions[lo]:
                continue
            agree.append(_agreement(s[w] - s[lo]))
            oracle.append(_agreement(t[w] - t[lo]))
            if t[w] != t[lo]:
                true_agree.append(_agreement((s[w] - s[lo]) * np.sign(t[w] - t[lo])))
    all_scores, all_truths = np.concatenate(scores), np.concatenate(truths)
    constant = all_scores.std() == 0 or all_truths.std() == 0
    return {
        "accuracy": float(np.mean(agree)) if agree else float("nan"),
        "true_accuracy": float(np.mean(true_agree)) if true_agree else float("nan"),
        "oracle_accuracy": float(np.mean(oracle)) if oracle else float("nan"),
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "correlation": float("nan")
        if constant
        else float(np.corrcoef(all_scores, all_truths)[0, 1]),
        "pairs": len(agree),
        "identical_pairs": sum(r.identical_pairs for r in rankings),
    }


def _agreement(margin: float) -> float:
    return 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5


def _split_by_prompt(
    rankings: Sequence[Ranking], fraction: float, seed: int
) -> tuple[list[Ranking], list[Ranking]]:
    """Hold out the rankings of a seeded ``fraction`` of the distinct prompts (at least one)."""
    distinct = sorted({r.prompt for r in rankings})
    if len(distinct) < 2:
        raise ValueError(
            f"rankings cover {len(distinct)} distinct prompt(s); holding out a fraction of the "
            "prompts needs at least 2. Rank more prompts, or pass heldout=... rankings."
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_heldout = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    heldout_prompts = {distinct[i] for i in order[:n_heldout]}
    train = [r for r in rankings if r.prompt not in heldout_prompts]
    heldout = [r for r in rankings if r.prompt in heldout_prompts]
    return train, heldout


def train_reward_model(
    config: RewardModelConfig,
    rankings: Sequence[Ranking],
    out: str | Path | None = None,
    *,
    model: str | Path | PreTrainedModel = DEFAULT_MODEL_DIR,
    heldout: Sequence[Ranking] | None = None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    true_score_fn: ScoreFn = true_score,
) -> StageResult:
    """Train a reward model on ``rankings``, measure it on held-out rankings, save it to ``out``.

    Args:
        config: Training settings.
        rankings: Rankings to train on (:func:`collect_rankings`).
        out: Directory to save the RM to; ``None``: a new temporary directory.
        model: The LM the RM starts from (usually the SFT model).
        heldout: Rankings to measure on, e.g. of the held-out test prompts; ``None`` holds out
            ``config.heldout_fraction`` of the prompts of ``rankings``.
        tokenizer: The LM's tokenizer, when ``model`` is a model object.
        true_score_fn: The hidden true score, used only to measure the RM (never trained on).

    Returns:
        A :class:`~lmgym.rlhf.config.StageResult` whose metrics are

        - ``heldout_accuracy``: fraction of held-out pairs the RM orders as the (noisy) labeler
          did; ``oracle_accuracy``: how often the true score itself does (the ceiling under the
          labeler's noise); ``heldout_true_accuracy``: pairs with different true scores the RM
          orders as the true score does (the noise-free order);
        - ``true_score_correlation``: Pearson correlation of RM score and true score over the
          held-out completions; ``heldout_loss``: their mean pairwise loss;
        - ``train_accuracy`` after training and ``final_train_loss``, the last epoch's mean;
        - ``n_train_rankings``, ``n_heldout_rankings``, ``n_train_pairs``,
          ``n_heldout_pairs`` (pairs of different texts, what losses and accuracies are over)
          and ``n_train_identical_pairs``, ``n_heldout_identical_pairs`` (pairs of a sample
          drawn twice, left out: they carry no preference);
        - ``wall_time_s``.

    Raises:
        ValueError: No rankings, or too few distinct prompts to hold some out.

    Example:
        >>> import tempfile
        >>> r = [Ranking(p, ["cold .", "great ."], order=[1, 0]) for p in ["a", "b", "c"]]
        >>> config = RewardModelConfig(epochs=1, progress=False)
        >>> result = train_reward_model(config, r, tempfile.mkdtemp())  # from the default LM
        >>> 0 <= result.metrics["heldout_accuracy"] <= 1
        True
    """
    started = time.perf_counter()
    if not rankings:
        raise ValueError("rankings is empty; expected rankings from collect_rankings(...).")
    if heldout is None:
        train, held = _split_by_prompt(rankings, config.heldout_fraction, config.seed)
    else:
        train, held = list(rankings), list(heldout)
        if not held:
            raise ValueError("heldout is empty; pass held-out rankings, or heldout=None.")
    set_seed(config.seed)
    rm, tok = init_reward_model(model, tokenizer, device=config.device)
    losses = fit(
        rm,
        shuffled_batches(len(train), config.batch_size, config.epochs, config.seed),
        lambda rows: ranking_batch_loss(rm, tok, [train[i] for i in rows]),
        total_steps=n_batches(len(train), config.batch_size, config.epochs),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        warmup_fraction=config.warmup_fraction,
        desc="reward model",
        progress=config.progress,
    )
    held_metrics = evaluate_reward_model(
        rm, tok, held, true_score_fn=true_score_fn, batch_size=config.eval_batch_size
    )
    train_metrics = evaluate_reward_model(
        rm, tok, train, true_score_fn=true_score_fn, batch_size=config.eval_batch_size
    )
    wall = round(time.perf_counter() - started, 2)
    path = resolve_out(out, "reward-model")
    summary = {
        "stage": "reward_model",
        "config": {**config.as_dict(), "out": str(path)},
        "heldout": held_metrics,
        "train": train_metrics,
        "n_train_rankings": len(train),
        "n_heldout_rankings": len(held),
        "wall_time_s": wall,
    }
    save_model_dir(path, rm, tok, summary)
    metrics = {
        "heldout_accuracy": held_metrics["accuracy"],
        "true_score_correlation": held_metrics["correlation"],
        "heldout_true_accuracy": held_metrics["true_accuracy"],
        "oracle_accuracy": held_metrics["oracle_accuracy"],
        "heldout_loss": held_metrics["loss"],
        "train_accuracy": train_metrics["accuracy"],
        "final_train_loss": float(np.mean(losses[-(len(losses) // config.epochs) :])),
        "n_train_rankings": len(train),
        "n_heldout_rankings": len(held),
        "n_train_pairs": int(train_metrics["pairs"]),
        "n_train_identical_pairs": int(train_metrics["identical_pairs"]),
        "n_heldout_pairs": int(held_metrics["pairs"]),
        "n_heldout_identical_pairs": int(held_metrics["identical_pairs"]),
        "wall_time_s": wall,
    }
    return StageResult(path, metrics, {"loss": losses})
