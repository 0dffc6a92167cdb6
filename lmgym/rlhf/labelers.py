"""Simulated labelers: a hidden "true" preference plus noise, so RLHF is measurable offline.

Human labelers of the InstructGPT recipe (Ouyang et al. 2022) rank K completions of a prompt. Here
a labeler does the same from a hidden score, :func:`true_score`, which is

    true(x, y) = SENTIMENT_WEIGHT · sentiment(y) + FLUENCY_WEIGHT · parses(x + " " + y)

with ``sentiment`` the default task's lexicon reward of the completion alone (in [-1, 1]) and
``parses`` the corpus grammar check of the whole text (0 or 1, a truncated last sentence
allowed). With both weights 1, a fluent positive review (``"great ."``: 0.5 + 1) beats a word
salad that games the lexicon (``"great great great"``: 1 + 0), which beats a fluent negative one
(``"awful ."``: -0.5 + 1). The reward model never sees this score: it learns from rankings only,
and the score is the ground truth for measuring reward over-optimisation.

Noise follows Bradley-Terry with a temperature T: P(a beats b) = σ((s_a - s_b) / T). A ranking of
K completions is a Plackett-Luce sample with probabilities ∝ exp(s / T), drawn by sorting
``s / T + Gumbel noise``; its pairwise marginals are exactly the Bradley-Terry ones, because the
difference of two Gumbel variables is logistic. T = 0 is a noise-free labeler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmgym.models.corpus import parses
from lmgym.models.lexicon import sentiment

__all__ = ["FLUENCY_WEIGHT", "SENTIMENT_WEIGHT", "BradleyTerryLabeler", "true_score"]

SENTIMENT_WEIGHT = 1.0
"""Weight of the completion's lexicon sentiment (in [-1, 1]) in :func:`true_score`."""
FLUENCY_WEIGHT = 1.0
"""Weight of the grammar check of prompt + completion (0 or 1) in :func:`true_score`."""


def true_score(
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    sentiment_weight: float = SENTIMENT_WEIGHT,
    fluency_weight: float = FLUENCY_WEIGHT,
) -> np.ndarray:
    """The hidden ground truth of the simulated labelers: positive sentiment plus fluency.

    Args:
        prompts: Prompt texts (B).
        completions: Completion texts (B), as decoded by the envs (``info["completion"]``).
        sentiment_weight: Weight of the completion's lexicon sentiment.
        fluency_weight: Weight of ``parses(prompt + " " + completion, allow_incomplete=True)``.

    Returns:
        A float64 array (B,).

    Raises:
        ValueError: ``prompts`` and ``completions`` differ in length.

    Example:
        >>> true_score(["the pizza was"] * 3, ["great .", "great great great", "awful ."])
        array([1.5, 1. , 0.5])
    """
    if len(prompts) != len(completions):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(completions)} completions; expected one "
            "completion per prompt."
        )
    scores = [
        sentiment_weight * sentiment(completion)
        + fluency_weight * float(parses(f"{prompt} {completion}".strip(), allow_incomplete=True))
        for prompt, completion in zip(prompts, completions, strict=True)
    ]
    return np.asarray(scores, dtype=np.float64)


@dataclass
class BradleyTerryLabeler:
    """A noisy labeler: Bradley-Terry comparisons and Plackett-Luce rankings of the true score.

    Its randomness comes from its own ``np.random.Generator`` seeded with ``seed``, so a labeler
    built with one seed gives the same labels in the same order of calls.

    Attributes:
        temperature: Noise T >= 0: P(a beats b) = σ((s_a - s_b) / T); 0 is noise-free. With
            T=0.1, the labels of the SFT model's samples agree with the true order about 80% of
            the time, close to InstructGPT's inter-labeler agreement (73-77%).
        seed: Seed of the labeler's own random generator.
        sentiment_weight: Weight of the completion's lexicon sentiment in the true score.
        fluency_weight: Weight of the grammar check in the true score.

    Example:
        >>> labeler = BradleyTerryLabeler(temperature=0.0)
        >>> labeler.rank("the pizza was", ["awful .", "great .", "great great great"])
        [1, 2, 0]
        >>> labeler.prefers("the pizza was", "great .", "awful .")
        True
    """

    temperature: float = 0.1
    seed: int = 0
    sentiment_weight: float = SENTIMENT_WEIGHT
    fluency_weight: float = FLUENCY_WEIGHT
    rng: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise ValueError(
                f"temperature={self.temperature!r} must be a finite number >= 0; 0 is a "
                "noise-free labeler, e.g. temperature=0.5 for a noisy one."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is not a non-negative int; pass e.g. seed=0.")
        for name in ("sentiment_weight", "fluency_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name}={value!r} is not a number; pass e.g. {name}=1.0.")
            if not math.isfinite(value):
                raise ValueError(f"{name}={value!r} must be finite, e.g. {name}=1.0.")
        self.rng = np.random.default_rng(self.seed)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """The hidden true score of each (prompt, completion) pair, with this labeler's weights.

        Example:
            >>> BradleyTerryLabeler().score(["the pizza was"], ["great ."])
            array([1.5])
        """
        return true_score(
            prompts,
            completions,
            sentiment_weight=self.sentiment_weight,
            fluency_weight=self.fluency_weight,
        )

    def rank(self, prompt: str, completions: Sequence[str]) -> list[int]:
        """Rank K >= 2 completions of ``prompt``: indices into ``completions``, best first.

        With T > 0 the order is a Plackett-Luce sample; with T = 0 it sorts by the true score,
        ties kept in input order.

        Raises:
            ValueError: Fewer than 2 completions.

        Example:
            >>> labeler = BradleyTerryLabeler(temperature=0.5, seed=1)
            >>> sorted(labeler.rank("the soup was", ["cold .", "fine .", "good ."]))
            [0, 1, 2]
        """
        if len(completions) < 2:
            raise ValueError(
                f"completions has {len(completions)} item(s); a ranking needs K >= 2 "
                "completions of the prompt. Sample more completions per prompt."
            )
        scores = self.score([prompt] * len(completions), completions)
        if self.temperature > 0:
            # Gumbel-max trick: sorting s/T + Gumbel noise draws a Plackett-Luce ranking.
            scores = scores / self.temperature + self.rng.gumbel(size=len(scores))
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def prefers(self, prompt: str, a: str, b: str) -> bool:
        """Whether the labeler prefers completion ``a`` to ``b``: P = σ((s_a - s_b) / T).

        With T = 0 the better one wins and a tie is a fair coin flip.

        Example:
            >>> labeler = BradleyTerryLabeler(temperature=0.0)
            >>> labeler.prefers("the soup was", "awful .", "good .")
            False
        """
        s_a, s_b = self.score([prompt, prompt], [a, b])
        diff = float(s_a - s_b)
        if self.temperature > 0:
            p_a = 0.5 * (1.0 + math.tanh(0.5 * diff / self.temperature))  # σ, overflow-free
        else:
            p_a = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
        return bool(self.rng.random() < p_a)
