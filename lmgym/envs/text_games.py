"""Games as text: ``TextCatGrid-v0``, ``LMText-v0`` and the describe / parse of each game.

Each game needs only two things to become an LM env: ``describe`` (its state in words) and
``parse`` (a reply back into its action). Here are those of ``CatGrid-v0`` and Gymnasium's
``Blackjack-v1``, and the two registered factories:

- ``TextCatGrid-v0``: the cat described in words, the same ``CatGrid-v0`` inside (every rule and
  reward unchanged);
- ``LMText-v0``: any registered game by id (``game="CatGrid-v0"``), described by its ``ansi``
  rendering unless ``describe=`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from lmgym.envs.catgrid import ACTION_NAMES, BATHTUB, BROOM, MEAT
from lmgym.envs.text_game import TextGameEnv
from lmgym.envs.text_game_parts import ActionNames
from lmgym.error import short_repr

__all__ = [
    "BLACKJACK_ACTIONS",
    "CATGRID_ACTIONS",
    "GAME_ACTION_NAMES",
    "describe_blackjack",
    "describe_catgrid",
    "catgrid_rules",
    "make_text_catgrid",
    "make_text_game",
]

CATGRID_ACTIONS = ActionNames(ACTION_NAMES)
"""Reads ``up``, ``right``, ``down`` or ``left`` in a reply (``CatGrid-v0``'s actions 0-3)."""

BLACKJACK_ACTIONS = ActionNames(("stick", "hit"))
"""Reads ``stick`` (0) or ``hit`` (1) in a reply (``Blackjack-v1``'s actions)."""

GAME_ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "CatGrid-v0": ACTION_NAMES,
    "FrozenLake-v1": ("left", "down", "right", "up"),
    "CliffWalking-v1": ("up", "right", "down", "left"),
    "Blackjack-v1": ("stick", "hit"),
    "Taxi-v4": ("south", "north", "east", "west", "pickup", "dropoff"),
}
"""The action names ``LMText-v0`` uses for these games when ``action_names`` is not given."""


def _cells(layout: Sequence[str], kind: str) -> list[tuple[int, int]]:
    return [(r, c) for r, line in enumerate(layout) for c, cell in enumerate(line) if cell == kind]


def _where(cells: list[tuple[int, int]]) -> str:
    return " ".join(f"({r} {c})" for r, c in cells) if cells else "none"


def catgrid_rules(game: gym.Env) -> str:
    """The opening of a ``TextCatGrid-v0`` conversation: the obstacles (they never move).

    Cells are ``(row column)`` from the top-left ``(0 0)``; ``up`` lowers the row. The meat is
    not listed: every turn says the way to it (:func:`describe_catgrid`). The text is terse on
    purpose: with the default layout the first turn fits a 64-position model.

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> catgrid_rules(CatGridEnv(layout=["C.B", "T.M"]))
        'Brooms: (0 2). Bathtubs: (1 0).'
    """
    layout = game.unwrapped.layout  # type: ignore[attr-defined]
    return f"Brooms: {_where(_cells(layout, BROOM))}. Bathtubs: {_where(_cells(layout, BATHTUB))}."


_NEIGHBOURS = (("Up", -1, 0), ("Right", 0, 1), ("Down", 1, 0), ("Left", 0, -1))
_THINGS = {BROOM: "broom", BATHTUB: "bathtub", MEAT: "meat"}


def describe_catgrid(game: gym.Env, observation: Any, info: dict[str, Any]) -> str:
    """A ``CatGrid-v0`` turn in words: the cat's cell, the way to the meat, what is next to it.

    What a cat in the grid would see: where the (first) meat lies from its cell, and which of
    its four neighbours is a wall (the grid's edge), a broom, a bathtub or the meat (empty
    cells are not named, to keep the conversation short).

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> describe_catgrid(CatGridEnv(), 7, {"position": (1, 2)})
        'The cat is at (1 2). Meat: 2 right. Right: broom. Which way?'
    """
    inner: Any = game.unwrapped
    layout, nrow, ncol = inner.layout, inner.nrow, inner.ncol
    row, col = divmod(int(observation), int(ncol))
    meat_row, meat_col = _cells(layout, MEAT)[0]
    steps = [(meat_row - row, "down", "up"), (meat_col - col, "right", "left")]
    way = ", ".join(f"{abs(d)} {plus if d > 0 else minus}" for d, plus, minus in steps if d)
    near = []
    for name, d_row, d_col in _NEIGHBOURS:
        r, c = row + d_row, col + d_col
        thing = "wall" if not (0 <= r < nrow and 0 <= c < ncol) else _THINGS.get(layout[r][c])
        if thing is not None:
            near.append(f" {name}: {thing}.")
    return f"The cat is at ({row} {col}). Meat: {way or 'here'}.{''.join(near)} Which way?"


def describe_blackjack(game: gym.Env, observation: Any, info: dict[str, Any]) -> str:
    """A ``Blackjack-v1`` turn in words: the hand, the dealer's card, and the question.

    Example:
        >>> describe_blackjack(None, (14, 10, 0), {})
        'Your hand: 14, no usable ace. Dealer shows: 10. Stick or hit?'
    """
    hand, dealer, ace = observation
    return (
        f"Your hand: {int(hand)}, {'a' if ace else 'no'} usable ace. Dealer shows: "
        f"{int(dealer)}. Stick or hit?"
    )


def make_text_catgrid(
    layout: Sequence[str] | None = None,
    slip: float = 0.0,
    max_episode_steps: int = 100,
    **kwargs: Any,
) -> TextGameEnv:
    """``TextCatGrid-v0``: ``CatGrid-v0`` described in words, its rules and rewards unchanged.

    The conversation opens with the layout (:func:`catgrid_rules`); each turn says where the
    cat is, the way to the meat and what is next to the cat (:func:`describe_catgrid`), and the
    reply must name ``up``, ``down``, ``left`` or ``right`` (:data:`CATGRID_ACTIONS`).

    Args:
        layout: The grid (``CatGrid-v0``'s ``layout``; default its default layout).
        slip: The drunk cat's slip probability.
        max_episode_steps: The game's ``TimeLimit``, in moves (``CatGrid-v0``'s 100).
        **kwargs: :class:`~lmgym.envs.text_game.TextGameEnv`'s arguments (model, β, budget,
            ``parse_penalty``, ...); ``max_new_tokens`` defaults to 4 here (a move is a word).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("TextCatGrid-v0", layout=["C.M"])
        >>> obs, info = env.reset(seed=0)
        >>> info["text"]
        'The cat is at (0 0). Meat: 2 right. Up: wall. Down: wall. Left: wall. Which way?'
    """
    game = gym.make("CatGrid-v0", layout=layout, slip=slip, max_episode_steps=max_episode_steps)
    kwargs.setdefault("system", catgrid_rules)
    kwargs.setdefault("max_new_tokens", 4)  # a move is one word
    return TextGameEnv(game, describe_catgrid, CATGRID_ACTIONS, **kwargs)


def make_text_game(
    game: str | gym.Env = "CatGrid-v0",
    game_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TextGameEnv:
    """``LMText-v0``: any registered game with a ``Discrete`` action space, as a text game.

    Args:
        game: A registered env id (made with ``render_mode="ansi"`` when no ``describe`` is
            given) or an env.
        game_kwargs: Arguments of ``gym.make(game, ...)``.
        **kwargs: :class:`~lmgym.envs.text_game.TextGameEnv`'s arguments. Without
            ``action_names`` or ``parse``, the names of :data:`GAME_ACTION_NAMES` are used for
            the games listed there (numbers otherwise).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMText-v0", game="CatGrid-v0")
        >>> env.unwrapped.game.spec.id
        'CatGrid-v0'
    """
    if isinstance(game, gym.Env):
        return TextGameEnv(game, **kwargs)
    if not isinstance(game, str):
        raise TypeError(
            f"game={short_repr(game)} (type {type(game).__name__}) is neither an env id nor a "
            "gymnasium.Env; expected e.g. game='CatGrid-v0'."
        )
    if game not in gym.registry:
        raise ValueError(
            f"game={game!r} is not a registered env id; expected e.g. 'CatGrid-v0' or "
            "'FrozenLake-v1' (see gymnasium.registry)."
        )
    options = dict(game_kwargs or {})
    if kwargs.get("describe") is None:
        options.setdefault("render_mode", "ansi")
    if kwargs.get("parse") is None and kwargs.get("action_names") is None:
        if game in GAME_ACTION_NAMES:
            kwargs["action_names"] = GAME_ACTION_NAMES[game]
    return TextGameEnv(gym.make(game, **options), **kwargs)
