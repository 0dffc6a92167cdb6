"""Elo ratings of policies from head-to-head labeler comparisons, with a bootstrap interval.

Each policy writes one completion per prompt on the same held-out prompts; a labeler judges every
pair of policies on every prompt (a "game"). The ratings are the Bradley-Terry maximum-likelihood
fit of all games on the Elo scale, ``P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400))``, as the
Chatbot Arena leaderboard computes them (Chiang et al. 2024), rather than Elo's sequential
updates, whose result depends on the order the games are played in. A weak Gaussian prior around
1000 (``prior_sd`` Elo points) keeps a player that wins every game at a finite rating. The 95%
interval is the percentile bootstrap: resample the games with replacement, refit, take the
2.5% and 97.5% quantiles of each player's rating (Efron & Tibshirani 1993).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "EloConfig",
    "EloRating",
    "Game",
    "elo_table",
    "fit_elo",
    "format_elo_table",
    "play_games",
]

ELO_SCALE = 400.0 / math.log(10.0)
"""Elo points per natural-log unit of the Bradley-Terry strength θ: ``R = 1000 + ELO_SCALE · θ``."""
ELO_CENTER = 1000.0
"""The rating of the prior's mean (and of a player with no games)."""


@dataclass(frozen=True)
class Game:
    """One comparison of two players' completions of a prompt.

    Attributes:
        player_a: Name of the first player.
        player_b: Name of the second player.
        score_a: 1.0 if ``player_a`` won, 0.0 if ``player_b`` won, 0.5 for a draw.
        prompt: The prompt both completions answer (for the record; the fit ignores it).
    """

    player_a: str
    player_b: str
    score_a: float
    prompt: str = ""

    def __post_init__(self) -> None:
        if self.player_a == self.player_b:
            raise ValueError(
                f"player_a=player_b={self.player_a!r}: a game needs two different players."
            )
        if self.score_a not in (0.0, 0.5, 1.0):
            raise ValueError(
                f"score_a={self.score_a!r} is not a game result; expected 1.0 (player_a won), "
                "0.0 (player_b won) or 0.5 (a draw)."
            )


@dataclass
class EloConfig:
    """How the ratings and their interval are computed.

    Attributes:
        n_bootstrap: Resamples of the games for the confidence interval (0: no interval).
        confidence: Coverage of the interval, in (0, 1).
        prior_sd: Standard deviation, in Elo points, of the Gaussian prior around 1000 that
            keeps an unbeaten player's rating finite; larger trusts the games more.
        seed: Seed of the bootstrap's resampling.
    """

    n_bootstrap: int = 200
    confidence: float = 0.95
    prior_sd: float = 400.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int):
            raise TypeError(f"n_bootstrap={self.n_bootstrap!r} is not an int; pass e.g. 200.")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap={self.n_bootstrap} must be >= 0, e.g. 200.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence={self.confidence!r} must lie in (0, 1), e.g. 0.95.")
        if not (math.isfinite(self.prior_sd) and self.prior_sd > 0):
            raise ValueError(f"prior_sd={self.prior_sd!r} must be a finite number > 0, e.g. 400.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is not a non-negative int; pass e.g. seed=0.")


@dataclass
class EloRating:
    """One player's row of the Elo table.

    Attributes:
        player: The player's name.
        rating: Maximum-likelihood Elo rating (the prior's mean is 1000).
        low: Lower end of the bootstrap interval (= ``rating`` without a bootstrap).
        high: Upper end of the bootstrap interval (= ``rating`` without a bootstrap).
        games: Games the player took part in.
        score: The player's points per game (wins + half the draws, over games).
    """

    player: str
    rating: float
    low: float
    high: float
    games: int
    score: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return asdict(self)


def _wins_matrix(games: Sequence[Game], index: Mapping[str, int]) -> np.ndarray:
    """``W[i, j]``: points player i took from player j (a draw gives each 0.5)."""
    wins = np.zeros((len(index), len(index)))
    for game in games:
        a, b = index[game.player_a], index[game.player_b]
        wins[a, b] += game.score_a
        wins[b, a] += 1.0 - game.score_a
    return wins


def _fit_strengths(
    wins: np.ndarray, prior_precision: float, start: np.ndarray | None = None
) -> np.ndarray:
    """Newton's method on the penalised Bradley-Terry log-likelihood; returns θ (natural units).

    ``L(θ) = Σ_ij W_ij log σ(θ_i − θ_j) − λ/2 Σ_i θ_i²`` is strictly concave for λ > 0, so
    Newton converges from anywhere, in a handful of steps for a few players.
    """
    n = wins.shape[0]
    played = wins + wins.T  # N_ij: games between i and j
    theta = np.zeros(n) if start is None else start.copy()
    for _ in range(100):
        diff = theta[:, None] - theta[None, :]  # (n, n) θ_i − θ_j
        p = 0.5 * (1.0 + np.tanh(0.5 * diff))  # σ(θ_i − θ_j), overflow-free
        gradient = (wins - played * p).sum(1) - prior_precision * theta
        curvature = played * p * (1.0 - p)
        hessian = curvature - np.diag(curvature.sum(1)) - prior_precision * np.eye(n)
        step = np.linalg.solve(hessian, gradient)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta


def _players(games: Sequence[Game], players: Sequence[str] | None) -> list[str]:
    seen = list(dict.fromkeys(p for g in games for p in (g.player_a, g.player_b)))
    if players is None:
        return seen
    names = list(players)
    if len(set(names)) != len(names):
        raise ValueError(f"players={names!r} has duplicates; expected each name once.")
    unknown = [p for p in seen if p not in names]
    if unknown:
        raise ValueError(
            f"games involve players {unknown!r} that are missing from players={names!r}; "
            "list every player, or pass players=None to take them from the games."
        )
    return names


def fit_elo(
    games: Sequence[Game], players: Sequence[str] | None = None, *, prior_sd: float = 400.0
) -> dict[str, float]:
    """Maximum-likelihood Elo ratings of all players from ``games`` (order-independent).

    Args:
        games: The comparisons.
        players: Names to rate, in the order to return them; ``None``: every player in
            ``games``, in order of first appearance. A listed player with no games gets 1000.
        prior_sd: Standard deviation of the Gaussian prior around 1000, in Elo points.

    Returns:
        ``{player: rating}``.

    Example:
        >>> games = [Game("a", "b", 1.0), Game("a", "b", 1.0), Game("a", "b", 0.0)]
        >>> ratings = fit_elo(games)
        >>> ratings["a"] > 1000 > ratings["b"]
        True
        >>> round(ratings["a"] + ratings["b"])  # the prior centres the ratings on 1000
        2000
    """
    if not (math.isfinite(prior_sd) and prior_sd > 0):
        raise ValueError(f"prior_sd={prior_sd!r} must be a finite number > 0, e.g. 400.")
    names = _players(games, players)
    index = {name: i for i, name in enumerate(names)}
    theta = _fit_strengths(_wins_matrix(games, index), (ELO_SCALE / prior_sd) ** 2)
    return {name: ELO_CENTER + ELO_SCALE * float(theta[i]) for name, i in index.items()}


def elo_table(
    games: Sequence[Game],
    config: EloConfig | None = None,
    *,
    players: Sequence[str] | None = None,
) -> list[EloRating]:
    """Ratings with a bootstrap confidence interval, best player first.

    The bootstrap resamples whole games with replacement ``config.n_bootstrap`` times, refits
    the ratings, and takes the ``(1 ± confidence) / 2`` quantiles of each player's rating.

    Args:
        games: The comparisons (at least one).
        config: Bootstrap and prior settings; ``None``: :class:`EloConfig` defaults.
        players: As in :func:`fit_elo`.

    Example:
        >>> games = [Game("ppo", "base", 1.0)] * 8 + [Game("ppo", "base", 0.0)] * 2
        >>> table = elo_table(games, EloConfig(n_bootstrap=50, seed=0))
        >>> [row.player for row in table]
        ['ppo', 'base']
        >>> table[0].low <= table[0].rating <= table[0].high
        True
    """
    config = EloConfig() if config is None else config
    if len(games) == 0:
        raise ValueError("games is empty; expected at least one Game to rate the players from.")
    names = _players(games, players)
    index = {name: i for i, name in enumerate(names)}
    precision = (ELO_SCALE / config.prior_sd) ** 2
    wins = _wins_matrix(games, index)
    theta = _fit_strengths(wins, precision)
    point = ELO_CENTER + ELO_SCALE * theta
    low, high = point.copy(), point.copy()
    if config.n_bootstrap > 0:
        rng = np.random.default_rng(config.seed)
        pairs = np.array([(index[g.player_a], index[g.player_b]) for g in games])  # (G, 2)
        scores = np.array([g.score_a for g in games])  # (G,)
        samples = np.empty((config.n_bootstrap, len(names)))
        for b in range(config.n_bootstrap):
            pick = rng.integers(len(games), size=len(games))
            resampled = np.zeros_like(wins)
            np.add.at(resampled, (pairs[pick, 0], pairs[pick, 1]), scores[pick])
            np.add.at(resampled, (pairs[pick, 1], pairs[pick, 0]), 1.0 - scores[pick])
            samples[b] = ELO_CENTER + ELO_SCALE * _fit_strengths(resampled, precision, theta)
        tail = (1.0 - config.confidence) / 2.0
        low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    played = wins + wins.T
    rows = [
        EloRating(
            player=name,
            rating=float(point[i]),
            low=float(low[i]),
            high=float(high[i]),
            games=int(round(played[i].sum())),
            score=float(wins[i].sum() / played[i].sum()) if played[i].sum() else float("nan"),
        )
        for name, i in index.items()
    ]
    return sorted(rows, key=lambda row: -row.rating)


def play_games(
    prompts: Sequence[str],
    completions: Mapping[str, Sequence[str]],
    prefers: Callable[[str, str, str], bool],
) -> list[Game]:
    """Judge every pair of players on every prompt: ``prefers(prompt, a, b)`` is True if a wins.

    Args:
        prompts: The prompts (N), the same for every player; a prompt may repeat (several
            samples per prompt).
        completions: ``{player: completions}``, each the N completions of ``prompts``.
        prefers: A judge, e.g. ``BradleyTerryLabeler(...).prefers``.

    Returns:
        ``C(P, 2) · N`` games for P players, pair by pair, prompt by prompt.

    Example:
        >>> games = play_games(["the soup was"], {"a": ["good ."], "b": ["cold ."]},
        ...                    lambda prompt, x, y: x == "good .")
        >>> games[0].score_a
        1.0
    """
    names = list(completions)
    if len(names) < 2:
        raise ValueError(
            f"completions has {len(names)} player(s) ({names!r}); expected at least 2 to compare."
        )
    for name in names:
        if len(completions[name]) != len(prompts):
            raise ValueError(
                f"completions[{name!r}] has {len(completions[name])} texts but there are "
                f"{len(prompts)} prompts; expected one completion per prompt for every player."
            )
    games = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for n, prompt in enumerate(prompts):
                won = prefers(prompt, completions[a][n], completions[b][n])
                games.append(Game(a, b, 1.0 if won else 0.0, prompt))
    return games


def format_elo_table(table: Sequence[EloRating], confidence: float = 0.95) -> str:
    """The table as Markdown, best player first.

    Example:
        >>> print(format_elo_table([EloRating("ppo", 1100.0, 1050.0, 1150.0, 10, 0.8)]))
        | policy | Elo | 95% interval | games | score |
        |---|---:|---:|---:|---:|
        | ppo | 1100 | [1050, 1150] | 10 | 0.80 |
    """
    lines = [
        f"| policy | Elo | {confidence:.0%} interval | games | score |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row.player} | {row.rating:.0f} | [{row.low:.0f}, {row.high:.0f}] | "
            f"{row.games} | {row.score:.2f} |"
        )
    return "\n".join(lines)
