"""Simulated labelers: the hidden true score, Bradley-Terry noise, Plackett-Luce rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmgym.rlhf.labelers import BradleyTerryLabeler, true_score

PROMPT = "the pizza was"


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_true_score_is_sentiment_plus_fluency() -> None:
    scores = true_score(
        [PROMPT] * 4, ["great .", "great great great", "awful .", "okay . great pizza was"]
    )
    # sentiment(completion) + parses(prompt + completion): 0.5 + 1, 1 + 0, -0.5 + 1, 0.2 + 0
    np.testing.assert_allclose(scores, [1.5, 1.0, 0.5, 0.2])


def test_true_score_weights() -> None:
    scores = true_score([PROMPT], ["great ."], sentiment_weight=2.0, fluency_weight=0.0)
    np.testing.assert_allclose(scores, [1.0])


def test_true_score_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        true_score([PROMPT, PROMPT], ["great ."])


def test_noise_free_rank_sorts_by_true_score() -> None:
    labeler = BradleyTerryLabeler(temperature=0.0)
    completions = ["awful .", "great .", "fine .", "great great great"]
    order = labeler.rank(PROMPT, completions)
    assert order == [1, 2, 3, 0]  # 1.5, 1.0 (fine, first of the tie), 1.0, 0.5
    assert labeler.prefers(PROMPT, "great .", "awful .")
    assert not labeler.prefers(PROMPT, "awful .", "great .")


def test_rank_needs_two_completions() -> None:
    with pytest.raises(ValueError, match="K >= 2"):
        BradleyTerryLabeler().rank(PROMPT, ["great ."])


def test_same_seed_same_labels_other_seed_other_labels() -> None:
    completions = ["awful .", "great .", "fine .", "good .", "cold ."]

    def labels(seed: int) -> list[object]:
        labeler = BradleyTerryLabeler(temperature=1.0, seed=seed)
        return [labeler.rank(PROMPT, completions) for _ in range(20)] + [
            labeler.prefers(PROMPT, "fine .", "good .") for _ in range(20)
        ]

    assert labels(3) == labels(3)
    assert labels(3) != labels(4)


def test_prefers_follows_bradley_terry() -> None:
    labeler = BradleyTerryLabeler(temperature=0.5, seed=0)
    n = 4000
    wins = sum(labeler.prefers(PROMPT, "great .", "fine .") for _ in range(n))  # s: 1.5 vs 1.0
    expected = sigmoid((1.5 - 1.0) / 0.5)
    assert abs(wins / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_plackett_luce_pairwise_marginal_is_bradley_terry() -> None:
    # The difference of two Gumbel variables is logistic, so in a Plackett-Luce ranking
    # P(a above b) = σ((s_a - s_b) / T), whatever else is ranked.
    labeler = BradleyTerryLabeler(temperature=0.5, seed=1)
    completions = ["great .", "fine .", "awful ."]  # 1.5, 1.0, 0.5
    n = 4000
    above = 0
    for _ in range(n):
        order = labeler.rank(PROMPT, completions)
        above += order.index(0) < order.index(1)
    expected = sigmoid((1.5 - 1.0) / 0.5)
    assert abs(above / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_noise_free_tie_is_a_coin_flip() -> None:
    labeler = BradleyTerryLabeler(temperature=0.0, seed=0)
    outcomes = {labeler.prefers(PROMPT, "fine .", "okay .") for _ in range(50)}
    assert outcomes == {True, False}


def test_score_uses_the_labelers_weights() -> None:
    labeler = BradleyTerryLabeler(sentiment_weight=0.0, fluency_weight=3.0)
    np.testing.assert_allclose(labeler.score([PROMPT], ["great ."]), [3.0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": -0.1}, ValueError, "temperature=-0.1"),
        ({"temperature": float("nan")}, ValueError, "temperature=nan"),
        ({"temperature": True}, ValueError, "temperature=True"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"seed": 1.5}, ValueError, "seed=1.5"),
        ({"sentiment_weight": "1"}, TypeError, "sentiment_weight='1'"),
        ({"fluency_weight": float("inf")}, ValueError, "fluency_weight=inf"),
    ],
    ids=["negative-T", "nan-T", "bool-T", "negative-seed", "float-seed", "str-weight", "inf"],
)
def test_labeler_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BradleyTerryLabeler(**kwargs)
