"""Elo ratings from head-to-head games: known orders, symmetry, the bootstrap interval, seeds."""

from __future__ import annotations

import math

import pytest

from lmgym.rlhf.elo import (
    EloConfig,
    Game,
    elo_table,
    fit_elo,
    format_elo_table,
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
    config = EloConfig(n_bootstrap=100, seed=3)
    table = elo_table(games, config)
    for row in table:
        assert row.low <= row.rating <= row.high
        assert row.high - row.low > 10  # 50 games per pair leave real uncertainty
    again = elo_table(games, EloConfig(n_bootstrap=100, seed=3))
    assert [r.as_dict() for r in again] == [r.as_dict() for r in table]
    other = elo_table(games, EloConfig(n_bootstrap=100, seed=4))
    assert [r.low for r in other] != [r.low for r in table]


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
    table = elo_table(round_robin({"p": 1, "q": 0}, 4), EloConfig(n_bootstrap=10))
    text = format_elo_table(table)
    assert text.count("\n") == 3 and "| p |" in text.splitlines()[2]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_bootstrap": -1}, "n_bootstrap=-1"),
        ({"n_bootstrap": 1.5}, "n_bootstrap=1.5"),
        ({"confidence": 1.0}, "confidence=1.0"),
        ({"prior_sd": 0.0}, "prior_sd=0.0"),
        ({"seed": -2}, "seed=-2"),
    ],
    ids=["n_bootstrap_neg", "n_bootstrap_float", "confidence", "prior_sd", "seed"],
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
