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
    """The opening of a ``TextCatGrid-v0`` conversation: the layout (it never changes).

    Cells are ``(row column)`` from the top-left ``(0 0)``; ``up`` lowers the row. The text is
    terse on purpose: with the default layout the first turn fits a 64-position model.

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> catgrid_rules(CatGridEnv(layout=["C.B", "T.M"]))
        'Meat: (1 2). Brooms: (0 2). Bathtubs: (1 0). Moves: up, down, left, right.'
    """
    layout = game.unwrapped.layout  # type: ignore[attr-defined]
    return (
        f"Meat: {_where(_cells(layout, MEAT))}. Brooms: {_where(_cells(layout, BROOM))}. "
        f"Bathtubs: {_where(_cells(layout, BATHTUB))}. Moves: up, down, left, right."
    )


def describe_catgrid(game: gym.Env, observation: Any, info: dict[str, Any]) -> str:
    """A ``CatGrid-v0`` turn in words: where the cat is, and the question.

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> describe_catgrid(CatGridEnv(), 7, {"position": (1, 2)})
        'The cat is at (1 2). Which way?'
    """
    row, col = divmod(int(observation), int(game.unwrapped.ncol))  # type: ignore[attr-defined]
    return f"The cat is at ({row} {col}). Which way?"


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
    cat is (:func:`describe_catgrid`) and the reply must name ``up``, ``down``, ``left`` or
    ``right`` (:data:`CATGRID_ACTIONS`).

    Args:
        layout: The grid (``CatGrid-v0``'s ``layout``; default its default layout).
        slip: The drunk cat's slip probability.
        max_episode_steps: The game's ``TimeLimit``, in moves (``CatGrid-v0``'s 100).
        **kwargs: :class:`~lmgym.envs.text_game.TextGameEnv`'s arguments (model, β, budget,
            ``parse_penalty``, ...).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("TextCatGrid-v0", layout=["C.M"])
        >>> obs, info = env.reset(seed=0)
        >>> info["text"]
        'The cat is at (0 0). Which way?'
    """
    game = gym.make("CatGrid-v0", layout=layout, slip=slip, max_episode_steps=max_episode_steps)
    kwargs.setdefault("system", catgrid_rules)
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
