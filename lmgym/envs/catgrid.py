"""``CatGrid-v0``: a cat walks a grid to the meat, the toy that teaches the RL ↔ LM mapping.

The cat is the agent, its cell is the state, a move is the action; a language model is the same
loop with "prefix" for cell and "next token" for move (docs/design.md, section 1). The
environment follows Gymnasium's toy-text family (``FrozenLake-v1``, ``CliffWalking-v0``): the
layout is a list of strings and the full transition model is exposed as ``P`` so that value
iteration (:mod:`lmgym.envs.catgrid_planning`) gives the optimum agents are tested against.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lmgym.error import short_repr

__all__ = [
    "ACTION_NAMES",
    "BATHTUB",
    "BROOM",
    "CELL_NAMES",
    "CELL_REWARDS",
    "DEFAULT_LAYOUT",
    "DOWN",
    "EMPTY",
    "LEFT",
    "MEAT",
    "RIGHT",
    "START",
    "TERMINAL_CELLS",
    "TILE",
    "UP",
    "CatGridEnv",
    "Transition",
]

UP: Final = 0
RIGHT: Final = 1
DOWN: Final = 2
LEFT: Final = 3
ACTION_NAMES: Final = ("up", "right", "down", "left")
_DELTAS: Final = ((-1, 0), (0, 1), (1, 0), (0, -1))  # (d_row, d_col) per action

START: Final = "C"
EMPTY: Final = "."
BROOM: Final = "B"
BATHTUB: Final = "T"
MEAT: Final = "M"
CELL_NAMES: Final = {
    START: "start",
    EMPTY: "empty",
    BROOM: "broom",
    BATHTUB: "bathtub",
    MEAT: "meat",
}
# Reward for moving *onto* a cell, and whether the episode ends there.
CELL_REWARDS: Final = {START: 0.0, EMPTY: 0.0, BROOM: -1.0, BATHTUB: -10.0, MEAT: 100.0}
TERMINAL_CELLS: Final = frozenset({BATHTUB, MEAT})

# A wall of brooms in column 3 guards the meat. Through the wall the meat is 5 moves away at the
# cost of one broom (return 99); round the bottom of the wall it is 11 moves and no broom (return
# 100). With gamma = 0.99 the discounted optimum takes the broom, with gamma = 0.999 the detour:
# this teaches what discounting does. The bathtub at (0, 3) sits right beside the shortcut, so
# the drunk cat's optimum (slip > 0) keeps away from it. A random walk still reaches the meat in
# about 13% of episodes, so policy-gradient agents find it within a few thousand steps (with two
# more bathtubs it was under 3%, and PPO with the same budget failed for one seed in three).
DEFAULT_LAYOUT: Final = (
    "C..T.",
    "...BM",
    "...B.",
    ".T.B.",
    ".....",
)

Transition = tuple[float, int, float, bool]
"""One entry of ``P[s][a]``: ``(probability, next_state, reward, terminated)``."""
_Outcome = tuple[int, float, bool, tuple[int, int], float]  # next, reward, terminated, (r, c), p


class CatGridEnv(gym.Env):
    """A cat walks a grid of brooms, bathtubs and meat; a move may slip when the cat is drunk.

    ## Description

    The cat starts on the cell marked ``C`` (at every reset) and wants the meat (``M``). Brooms
    (``B``) sting but can be crossed; a bathtub (``T``) ends the episode badly. This is the
    gridworld half of lmgym's RL ↔ LM mapping: the cat is the agent (the language model), its
    cell the state (the prefix), a move the action (the next token), and the "drunk cat" slip
    plays the role of sampling temperature. The full transition model is exposed as ``P`` like
    ``FrozenLake-v1``, so :func:`lmgym.envs.catgrid_planning.value_iteration` computes the
    optimum exactly.

    The default layout (``.`` empty)::

        C . . T .
        . . . B M
        . . . B .
        . T . B .
        . . . . .

    ## Action Space

    ``Discrete(4)``: ``0`` up, ``1`` right, ``2`` down, ``3`` left (4-connected). A move off the
    grid leaves the cat where it is.

    ## Observation Space

    ``Discrete(rows * cols)``: the cat's cell index ``row * cols + col``.

    ## Reward

    For the cell the cat moves onto: empty or start ``0``, broom ``-1`` (the broom stays, the cat
    stands on it), bathtub ``-10``, meat ``+100``. Bumping into the edge gives ``0``.

    ## Episode End

    - Termination: the cat moves onto a bathtub or onto meat.
    - Truncation: ``max_episode_steps`` set at registration (100 for ``CatGrid-v0``).

    ## Information

    ``step`` and ``reset`` return ``info`` with ``"position"``, the cat's ``(row, col)``, and
    ``"prob"``, the probability of the transition that happened (``1.0`` on reset).

    ## Arguments

    ```python
    import gymnasium as gym
    import lmgym

    env = gym.make("CatGrid-v0", layout=["C.B.M", "..T.."], slip=0.1, render_mode="ansi")
    ```

    - ``layout``: a list of equal-length strings over ``C . B T M`` with exactly one ``C`` and
      meat reachable from it without crossing a bathtub. Default: :data:`DEFAULT_LAYOUT`.
    - ``slip``: the "drunk cat" probability in ``[0, 1)`` that a move goes in a uniformly random
      *other* direction. Default ``0.0``.
    - ``render_mode``: ``None``, ``"ansi"`` (a text grid) or ``"rgb_array"`` (a ``uint8``
      ``(rows * 32, cols * 32, 3)`` picture).

    ## Version History

    - v0: initial version.

    Example:
        >>> env = CatGridEnv(render_mode="ansi")
        >>> obs, info = env.reset(seed=0)
        >>> obs, info["position"]
        (0, (0, 0))
        >>> env.step(RIGHT)
        (1, 0.0, False, False, {'position': (0, 1), 'prob': 1.0})
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        layout: Sequence[str] | None = None,
        slip: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.layout: tuple[str, ...] = _validate_layout(
            DEFAULT_LAYOUT if layout is None else layout
        )
        self.slip: float = _validate_slip(slip)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={short_repr(render_mode)} is not supported: expected None or one of "
                f"{self.metadata['render_modes']}. Pass e.g. render_mode='ansi'."
            )
        self.render_mode = render_mode

        self.nrow, self.ncol = len(self.layout), len(self.layout[0])
        n_states = self.nrow * self.ncol
        self.observation_space = spaces.Discrete(n_states)
        self.action_space = spaces.Discrete(4)
        self.start_state: int = "".join(self.layout).index(START)

        # outcomes[s][a]: (next_state, reward, terminated, position, prob) for the intended
        # direction first, then the three other directions. `step` only indexes into this.
        self._outcomes = [[self._outcomes_for(s, a) for a in range(4)] for s in range(n_states)]
        self.P: dict[int, dict[int, list[Transition]]] = {
            s: {a: [(o[4], o[0], o[1], o[2]) for o in self._outcomes[s][a]] for a in range(4)}
            for s in range(n_states)
        }
        # Cumulative thresholds on one uniform draw: below slip/3 the first other direction, ...
        self._slip_thresholds = (self.slip / 3, 2 * self.slip / 3, self.slip)
        self._positions = [divmod(s, self.ncol) for s in range(n_states)]

        self.state: int = self.start_state
        self.last_action: int | None = None
        self._background: np.ndarray | None = None  # rgb_array tiles, drawn on first render

    def _move(self, state: int, direction: int) -> int:
        row, col = divmod(state, self.ncol)
        d_row, d_col = _DELTAS[direction]
        row, col = row + d_row, col + d_col
        if 0 <= row < self.nrow and 0 <= col < self.ncol:
            return row * self.ncol + col
        return state  # off the grid: stay

    def _outcomes_for(self, state: int, action: int) -> list[_Outcome]:
        row, col = divmod(state, self.ncol)
        if self.layout[row][col] in TERMINAL_CELLS:
            # Absorbing, as in FrozenLake: nothing more happens after the episode ended.
            return [(state, 0.0, True, (row, col), 1.0)]
        directions = [action] + [d for d in range(4) if d != action]
        probs = [1.0 - self.slip] + [self.slip / 3] * 3
        outcomes: list[_Outcome] = []
        for direction, prob in zip(directions, probs, strict=True):
            if prob == 0.0:
                continue
            nxt = self._move(state, direction)
            n_row, n_col = divmod(nxt, self.ncol)
            cell = self.layout[n_row][n_col]
            reward = 0.0 if nxt == state else CELL_REWARDS[cell]
            outcomes.append((nxt, reward, cell in TERMINAL_CELLS, (n_row, n_col), prob))
        return outcomes

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Put the cat back on the start cell.

        Args:
            seed: Seeds ``self.np_random``, which drives the slips.
            options: Unused; accepted for the Gymnasium API.

        Returns:
            The start cell index and ``info`` (see the class docstring).
        """
        super().reset(seed=seed)
        self.state = self.start_state
        self.last_action = None
        return self.state, {"position": self._positions[self.state], "prob": 1.0}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        """Move the cat one cell (or not, at the edge), possibly slipping.

        Args:
            action: ``0`` up, ``1`` right, ``2`` down, ``3`` left.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``truncated`` is always
            ``False`` here, the ``TimeLimit`` wrapper from registration sets it.

        Raises:
            TypeError: ``action`` is not an integer (a Python int, NumPy integer or 0-d array).
            ValueError: ``action`` is not one of 0, 1, 2, 3.
        """
        action = _check_action(action)
        outcomes = self._outcomes[self.state][action]
        # No draw at all when sober, so slip=0 costs nothing; one uniform draw otherwise.
        if self.slip and len(outcomes) > 1:
            u = self.np_random.random()
            first, second, third = self._slip_thresholds
            if u >= third:
                outcome = outcomes[0]
            elif u < first:
                outcome = outcomes[1]
            elif u < second:
                outcome = outcomes[2]
            else:
                outcome = outcomes[3]
        else:
            outcome = outcomes[0]
        next_state, reward, terminated, position, prob = outcome
        self.state = next_state
        self.last_action = int(action)
        return next_state, reward, terminated, False, {"position": position, "prob": prob}

    def render(self) -> str | np.ndarray | None:
        """Draw the grid with the cat on it, according to ``render_mode``.

        Returns:
            ``"ansi"``: a text grid (``C`` marks the cat). ``"rgb_array"``: a ``uint8`` array of
            shape ``(rows * 32, cols * 32, 3)``. ``None`` (with a warning) if no render mode.
        """
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'rgb_array' "
                'to the constructor, e.g. gym.make("CatGrid-v0", render_mode="rgb_array").'
            )
            return None
        if self.render_mode == "ansi":
            return self._render_text()
        return self._render_rgb()

    def _render_text(self) -> str:
        row, col = self._positions[self.state]
        grid = [[EMPTY if c == START else c for c in line] for line in self.layout]
        grid[row][col] = START
        header = f"  ({ACTION_NAMES[self.last_action]})" if self.last_action is not None else ""
        return header + "\n" + "\n".join(" ".join(line) for line in grid) + "\n"

    def _render_rgb(self) -> np.ndarray:
        if self._background is None:
            self._background = _draw_background(self.layout)
        frame = self._background.copy()
        row, col = self._positions[self.state]
        tile = frame[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
        tile[_CAT_MASK] = _CAT_COLOUR
        tile[_CAT_EYES] = (20, 20, 20)
        return frame


# ---------------------------------------------------------------------------------------------
# Validation: each error names the argument, the value, what was expected and how to fix it.


def _check_action(action: Any) -> int:
    """``action`` as a plain int in 0..3 (NumPy integers and 0-d arrays alike), else raise."""
    value = action[()] if isinstance(action, np.ndarray) and action.shape == () else action
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"action={short_repr(action)} has type {type(action).__name__}: expected an int "
            "0 (up), 1 (right), 2 (down) or 3 (left). Sample one with env.action_space.sample()."
        )
    if not 0 <= value < 4:
        raise ValueError(
            f"action={int(value)} is outside the action space Discrete(4): expected 0 (up), "
            "1 (right), 2 (down) or 3 (left). Sample one with env.action_space.sample()."
        )
    return int(value)


def _validate_slip(slip: float) -> float:
    if isinstance(slip, bool) or not isinstance(slip, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"slip={short_repr(slip)} has type {type(slip).__name__}: expected a float in [0, 1). "
            "Pass e.g. slip=0.1, or slip=0.0 for a sober cat."
        )
    if not 0.0 <= slip < 1.0:  # also rejects NaN
        raise ValueError(
            f"slip={slip!r} is outside [0, 1): it is the probability that a move goes in a random "
            "other direction, and at 1 the cat could never move where it wants. "
            "Pass e.g. slip=0.1, or slip=0.0 for a sober cat."
        )
    return float(slip)


def _validate_layout(layout: Sequence[str]) -> tuple[str, ...]:
    if (
        isinstance(layout, str)
        or not isinstance(layout, (Sequence, np.ndarray))
        or not all(isinstance(line, str) for line in layout)
    ):
        raise TypeError(
            f"layout={short_repr(layout)} is not a list of strings: expected one string per "
            'row, e.g. layout=["C.B.M", "..T.."]. Split a multi-line string with .splitlines().'
        )
    rows = tuple(layout)
    if not rows or not rows[0]:
        raise ValueError(
            f"layout={short_repr(layout)} is empty: expected at least one non-empty row. "
            'Pass e.g. layout=["C.M"].'
        )
    for i, line in enumerate(rows):
        if len(line) != len(rows[0]):
            raise ValueError(
                f"layout row {i} {short_repr(line)} has length {len(line)} but row 0 "
                f"{short_repr(rows[0])} has length {len(rows[0])}: expected a rectangle. Pad the "
                "rows with '.' to one length."
            )
        for j, char in enumerate(line):
            if char not in CELL_NAMES:
                raise ValueError(
                    f"layout row {i} {short_repr(line)} has the unknown character {char!r} at "
                    f"column {j}: "
                    f"expected one of {''.join(CELL_NAMES)} ("
                    + ", ".join(f"{k} {v}" for k, v in CELL_NAMES.items())
                    + "). Replace it, e.g. with '.'."
                )
    n_starts = sum(line.count(START) for line in rows)
    if n_starts != 1:
        raise ValueError(
            f"layout={short_repr(list(rows))} has {n_starts} start cells 'C': expected exactly "
            "one. "
            + ("Mark where the cat starts with 'C'." if n_starts == 0 else "Keep only one 'C'.")
        )
    if not _meat_reachable(rows):
        raise ValueError(
            f"layout={short_repr(list(rows))} has no meat 'M' reachable from 'C' without crossing "
            "a bathtub 'T': expected at least one path (brooms may be crossed). Add an 'M' or open "
            "a path by replacing a 'T' with '.' or 'B'."
        )
    return rows


def _meat_reachable(rows: tuple[str, ...]) -> bool:
    """Breadth-first search from the start, through anything but bathtubs."""
    nrow, ncol = len(rows), len(rows[0])
    start = divmod("".join(rows).index(START), ncol)
    seen = {start}
    queue = deque([start])
    while queue:
        row, col = queue.popleft()
        if rows[row][col] == MEAT:
            return True
        for d_row, d_col in _DELTAS:
            nxt = (row + d_row, col + d_col)
            if (
                0 <= nxt[0] < nrow
                and 0 <= nxt[1] < ncol
                and nxt not in seen
                and rows[nxt[0]][nxt[1]] != BATHTUB
            ):
                seen.add(nxt)
                queue.append(nxt)
    return False


# ---------------------------------------------------------------------------------------------
# rgb_array drawing with numpy only: boolean masks on one TILE x TILE cell.

TILE: Final = 32
_Y, _X = np.mgrid[0:TILE, 0:TILE] + 0.5  # pixel centres
_FLOOR = (238, 232, 214)
_GRID_LINE = (190, 180, 160)
_CAT_COLOUR = (232, 140, 40)


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    return (_Y - cy) ** 2 + (_X - cx) ** 2 <= r**2


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((_Y - cy) / ry) ** 2 + ((_X - cx) / rx) ** 2 <= 1.0


def _segment(y0: float, x0: float, y1: float, x1: float, width: float) -> np.ndarray:
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((_Y - y0) * dy + (_X - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
    return (_Y - (y0 + t * dy)) ** 2 + (_X - (x0 + t * dx)) ** 2 <= (width / 2) ** 2


def _triangle(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float]):
    def side(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
        return (_X - b[1]) * (a[0] - b[0]) - (a[1] - b[1]) * (_Y - b[0])

    s0, s1, s2 = side(p0, p1), side(p1, p2), side(p2, p0)
    return ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))


# The cat: a round head with two ears and two eyes, drawn over whatever tile it stands on.
_CAT_EARS = _triangle((3, 7), (14, 7), (11, 15)) | _triangle((3, 25), (14, 25), (11, 17))
_CAT_MASK = _disc(18, 16, 9.5) | _CAT_EARS
_CAT_EYES = _disc(16, 12.5, 1.6) | _disc(16, 19.5, 1.6)


def _draw_tile(cell: str) -> np.ndarray:
    tile = np.empty((TILE, TILE, 3), dtype=np.uint8)
    tile[:] = _FLOOR
    if cell == BROOM:
        tile[_segment(4, 27, 19, 12, 3)] = (120, 72, 30)  # handle
        tile[_triangle((16, 9), (22, 17), (29, 3))] = (214, 180, 70)  # bristles
    elif cell == BATHTUB:
        tile[_ellipse(19, 16, 9, 14)] = (245, 245, 250)  # enamel
        tile[_ellipse(17, 16, 5, 11)] = (70, 140, 220)  # water
        tile[_segment(27, 8, 31, 7, 2) | _segment(27, 24, 31, 25, 2)] = (150, 150, 160)  # feet
    elif cell == MEAT:
        tile[_ellipse(18, 14, 10, 11)] = (190, 40, 50)
        tile[_ellipse(18, 14, 5, 6)] = (235, 120, 130)  # fat marbling
        tile[_segment(20, 22, 11, 29, 4) | _disc(10, 29, 3)] = (250, 248, 240)  # bone
    tile[0, :] = tile[:, 0] = _GRID_LINE
    return tile


def _draw_background(layout: tuple[str, ...]) -> np.ndarray:
    tiles = {cell: _draw_tile(cell) for cell in CELL_NAMES}
    image = np.concatenate(
        [np.concatenate([tiles[c] for c in line], axis=1) for line in layout], axis=0
    )
    image[-1, :] = image[:, -1] = _GRID_LINE  # close the grid on the bottom and right
    return image
