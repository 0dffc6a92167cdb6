"""Elo ratings from head-to-head games: known orders, symmetry, the bootstrap interval, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from lmgym.rlhf.elo import (
    ELO_CENTER,
    ELO_SCALE,
    EloConfig,
    EloRating,
    Game,
    elo_table,
    fit_elo,
    format_elo_table,
    interval_ranks,
    play_games,
)


def round_robin(strength: dict[str, int], rounds: int) -> list[Game]:
    """Every pair plays ``rounds`` games; the stronger player always wins."""
    names = list(strength)
    games = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for _ in range(rounds):
                games.append(Game(a, b, 1.0 if strength[a] > strength[b] else 0.0))
    return games


def test_a_player_that_always_wins_rates_highest_and_order_is_recovered() -> None:
    strength = {"base": 0, "sft": 1, "dpo": 2, "ppo": 3}
    table = elo_table(round_robin(strength, 10), EloConfig(n_bootstrap=0))
    assert [row.player for row in table] == ["ppo", "dpo", "sft", "base"]
    assert table[0].score == 1.0 and table[-1].score == 0.0
    assert all(abs(row.rating) < 1e5 for row in table)  # the prior keeps them finite


def test_symmetric_results_give_equal_ratings() -> None:
    games = [Game("a", "b", 1.0), Game("a", "b", 0.0), Game("b", "c", 1.0), Game("b", "c", 0.0)]
    games += [Game("c", "a", 0.5)] * 3
    ratings = fit_elo(games)
    assert ratings["a"] == pytest.approx(1000.0, abs=1e-6)
    assert ratings["b"] == pytest.approx(1000.0, abs=1e-6)
    assert ratings["c"] == pytest.approx(1000.0, abs=1e-6)


def test_rating_gap_matches_the_elo_formula_with_a_weak_prior() -> None:
    # a wins 3 of 4 against b: the MLE gap solves 1 / (1 + 10^(-gap/400)) = 0.75.
    games = [Game("a", "b", 1.0)] * 300 + [Game("a", "b", 0.0)] * 100
    ratings = fit_elo(games, prior_sd=1e6)
    expected_gap = 400 * math.log10(3.0)
    assert ratings["a"] - ratings["b"] == pytest.approx(expected_gap, rel=1e-4)


def test_fit_ignores_the_order_of_games() -> None:
    games = round_robin({"x": 0, "y": 1, "z": 2}, 3) + [Game("x", "z", 1.0)]
    assert fit_elo(games) == pytest.approx(fit_elo(list(reversed(games))))


def test_interval_contains_the_estimate_and_is_seeded() -> None:
    games = [Game("a", "b", 1.0)] * 30 + [Game("a", "b", 0.0)] * 20
    games += [Game("b", "c", 1.0)] * 25 + [Game("b", "c", 0.0)] * 25
    config = EloConfig(n_bootstrap=100, seed=3, resample="game")  # independent games
    table = elo_table(games, config)
    for row in table:
        assert row.low <= row.rating <= row.high
        assert row.high - row.low > 10  # 50 games per pair leave real uncertainty
    again = elo_table(games, EloConfig(n_bootstrap=100, seed=3, resample="game"))
    assert [r.as_dict() for r in again] == [r.as_dict() for r in table]
    other = elo_table(games, EloConfig(n_bootstrap=100, seed=4, resample="game"))
    assert [r.low for r in other] != [r.low for r in table]


# --- Coverage of the interval in a simulation of the pipeline's design ------------------------
# lmgym rlhf rates 7 policies on the 36 held-out prompts x 4 samples each; a Bradley-Terry
# labeler (T = 0.25) judges every pair of policies on every sample. A completion's true score
# is its policy's mean (the true scores measured in docs/rlhf.md), plus a policy x prompt effect
# shared by the prompt's 4 samples, plus the completion's own spread. Every completion then
# plays 6 games, so the games are far from independent.
POLICY_MEANS = np.array([0.967, 1.170, 1.410, 1.378, 1.336, 1.412, 1.337])
POLICY_SPREADS = np.array([0.50, 0.45, 0.25, 0.25, 0.35, 0.25, 0.30])
PROMPT_EFFECT_SD = 0.1
N_PROMPTS, SAMPLES, TEMPERATURE = 36, 4, 0.25
POLICIES = [f"policy{i}" for i in range(len(POLICY_MEANS))]


def pipeline_games(rng: np.random.Generator) -> list[Game]:
    """One replication of the pipeline's games, with fresh prompts, completions and labels."""
    prompt_of = np.repeat(np.arange(N_PROMPTS), SAMPLES)  # (N,) the prompt of each sample
    n_policies, n = len(POLICY_MEANS), N_PROMPTS * SAMPLES
    prompt_effect = rng.normal(0.0, PROMPT_EFFECT_SD, (n_policies, N_PROMPTS))[:, prompt_of]
    score = (
        POLICY_MEANS[:, None]
        + prompt_effect
        + POLICY_SPREADS[:, None] * rng.normal(size=(n_policies, n))
    )  # (P, N) true score of every completion
    games = []
    for i in range(n_policies):
        for j in range(i + 1, n_policies):
            p_win = 0.5 * (1.0 + np.tanh(0.5 * (score[i] - score[j]) / TEMPERATURE))
            won = rng.random(n) < p_win
            games += [
                Game(POLICIES[i], POLICIES[j], float(w), f"prompt {k}")
                for w, k in zip(won, prompt_of, strict=True)
            ]
    return games


def population_ratings() -> dict[str, float]:
    """The ratings the fit converges to on infinitely many prompts: the truth to cover.

    P(i beats j) averaged over prompts and completions is E[σ(D / T)] with D normal (the
    difference of two true scores); the Bradley-Terry fit of those win rates, centred on 1000
    as the prior centres the fit, is the estimand.
    """
    x, w = np.polynomial.hermite_e.hermegauss(80)  # E[f(Z)], Z ~ N(0, 1), by quadrature
    sd = np.sqrt(
        POLICY_SPREADS[:, None] ** 2 + POLICY_SPREADS[None, :] ** 2 + 2 * PROMPT_EFFECT_SD**2
    )
    diff = (POLICY_MEANS[:, None] - POLICY_MEANS[None, :])[..., None] + sd[..., None] * x
    win_rate = (w * 0.5 * (1.0 + np.tanh(0.5 * diff / TEMPERATURE))).sum(-1) / w.sum()

    def neg_log_likelihood(theta: np.ndarray) -> float:
        d = theta[:, None] - theta[None, :]
        return float((win_rate * np.logaddexp(0.0, -d)).sum())

    theta = minimize(neg_log_likelihood, np.zeros(len(POLICIES)), options={"gtol": 1e-10}).x
    return dict(zip(POLICIES, ELO_CENTER + ELO_SCALE * (theta - theta.mean()), strict=True))


@pytest.mark.slow  # ~10 s of CPU: 300 replications of 3,024 games, 1,000 resamples each
def test_interval_covers_the_true_rating_95_percent_of_the_time() -> None:
    truth = population_ratings()
    rng = np.random.default_rng(0)
    covered = []
    for replication in range(300):
        table = elo_table(pipeline_games(rng), EloConfig(seed=replication))  # the defaults
        covered += [row.low <= truth[row.player] <= row.high for row in table]
    coverage = float(np.mean(covered))
    # Measured here: 0.937 (0.926 with 200 resamples); resampling single games, as elo_table
    # once did, 0.804 with 200 resamples.
    assert 0.90 <= coverage <= 0.98, f"95% intervals covered the true rating {coverage:.1%}"


def test_resampling_single_games_understates_the_uncertainty() -> None:
    games = pipeline_games(np.random.default_rng(1))
    by_prompt = elo_table(games, EloConfig(n_bootstrap=200, seed=0))
    by_game = elo_table(games, EloConfig(n_bootstrap=200, seed=0, resample="game"))
    width = {row.player: row.high - row.low for row in by_prompt}
    ratio = np.mean([(row.high - row.low) / width[row.player] for row in by_game])
    assert ratio < 0.85  # measured 0.68 on average: games on one prompt share completions
    assert [r.rating for r in by_game] == [r.rating for r in by_prompt]  # the fit is the same


def test_bootstrap_needs_two_prompts_and_warns_below_ten() -> None:
    games = [Game("a", "b", 1.0, "p"), Game("a", "b", 0.0, "p")]
    with pytest.raises(ValueError, match="resample='prompt' with 1 prompt to resample"):
        elo_table(games)
    assert len(elo_table(games, EloConfig(n_bootstrap=0))) == 2  # no interval: no need
    few = [Game("a", "b", float(n % 2), f"p{n}") for n in range(4)]
    with pytest.warns(UserWarning, match="resamples 4 prompts"):
        elo_table(few, EloConfig(n_bootstrap=20))


def test_players_without_games_get_the_prior_mean() -> None:
    table = elo_table([Game("a", "b", 1.0)], EloConfig(n_bootstrap=0), players=["a", "b", "c"])
    by_name = {row.player: row for row in table}
    assert by_name["c"].rating == pytest.approx(1000.0)
    assert by_name["c"].games == 0


def test_play_games_pairs_every_player_on_every_prompt() -> None:
    prompts = ["the soup was", "the staff were"]
    completions = {"a": ["good .", "rude ."], "b": ["cold .", "great ."], "c": ["ok .", "ok ."]}
    calls = []

    def prefers(prompt: str, x: str, y: str) -> bool:
        calls.append(prompt)
        return x in ("good .", "great .")

    games = play_games(prompts, completions, prefers)
    assert len(games) == 3 * 2  # C(3, 2) pairs x 2 prompts
    assert calls == prompts * 3
    assert [(g.player_a, g.player_b, g.score_a) for g in games[:2]] == [
        ("a", "b", 1.0),
        ("a", "b", 0.0),
    ]


def test_format_elo_table_has_one_row_per_player() -> None:
    table = elo_table(round_robin({"p": 1, "q": 0}, 4), EloConfig(n_bootstrap=0))
    text = format_elo_table(table)
    assert text.count("\n") == 3 and "| p |" in text.splitlines()[2]


def test_overlapping_intervals_share_a_rank() -> None:
    rows = [EloRating("a", 1040.0, 1005.0, 1080.0, 9, 0.6),
            EloRating("b", 1000.0, 960.0, 1040.0, 9, 0.5),
            EloRating("c", 960.0, 910.0, 1000.0, 9, 0.4)]  # fmt: skip
    assert interval_ranks(rows) == [1, 1, 2]  # c's interval lies below a's, b overlaps both
    lines = format_elo_table(rows).splitlines()
    assert "| =1 |" in lines[2] and "| =1 |" in lines[3] and "| 2 |" in lines[4]


def test_identical_completions_draw_without_the_judge() -> None:
    calls = []
    games = play_games(["p", "q"], {"a": ["x", "y"], "b": ["x", "z"]},
                       lambda *args: calls.append(args) or True)  # fmt: skip
    assert [g.score_a for g in games] == [0.5, 1.0] and calls == [("q", "y", "z")]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_bootstrap": -1}, "n_bootstrap=-1"),
        ({"n_bootstrap": 1.5}, "n_bootstrap=1.5"),
        ({"confidence": 1.0}, "confidence=1.0"),
        ({"prior_sd": 0.0}, "prior_sd=0.0"),
        ({"seed": -2}, "seed=-2"),
        ({"resample": "completion"}, "resample='completion' is unknown"),
    ],
    ids=["n_bootstrap_neg", "n_bootstrap_float", "confidence", "prior_sd", "seed", "resample"],
)
def test_config_rejects_bad_values(kwargs, fragment) -> None:
    with pytest.raises((ValueError, TypeError), match=fragment):
        EloConfig(**kwargs)


def test_bad_games_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="score_a=2"):
        Game("a", "b", 2)
    with pytest.raises(ValueError, match="two different players"):
        Game("a", "a", 1.0)
    with pytest.raises(ValueError, match="games is empty"):
        elo_table([])
    with pytest.raises(ValueError, match="missing from players"):
        fit_elo([Game("a", "b", 1.0)], players=["a"])
    with pytest.raises(ValueError, match="duplicates"):
        fit_elo([Game("a", "b", 1.0)], players=["a", "b", "a"])
    with pytest.raises(ValueError, match="prior_sd=-1"):
        fit_elo([Game("a", "b", 1.0)], prior_sd=-1)
    with pytest.raises(ValueError, match="at least 2"):
        play_games(["p"], {"a": ["x"]}, lambda *_: True)
    with pytest.raises(ValueError, match=r"completions\['b'\] has 0 texts"):
        play_games(["p"], {"a": ["x"], "b": []}, lambda *_: True)
