"""Exact planning on a tabular transition model: the optimum that CatGrid agents are tested against.

:class:`~lmgym.envs.catgrid.CatGridEnv` exposes its model as ``P[s][a] = [(prob, next_state,
reward, terminated), ...]``, the convention of Gymnasium's toy-text environments, so the functions
here also accept ``FrozenLake-v1``, ``CliffWalking-v0`` or ``Taxi-v3``. Value iteration is the
Bellman optimality backup ``V(s) ← max_a Σ p · (r + γ · (1 − terminated) · V(s'))`` (Sutton &
Barto, *Reinforcement Learning: An Introduction*, 2nd ed., section 4.4), vectorised over states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np

__all__ = [
    "EnvOrModel",
    "Plan",
    "TransitionModel",
    "optimal_return",
    "policy_return",
    "value_iteration",
]

TransitionModel = Mapping[int, Mapping[int, Sequence[tuple[float, int, float, bool]]]]
"""``P[s][a]``: a list of ``(probability, next_state, reward, terminated)``."""

EnvOrModel = gym.Env | TransitionModel


class Plan(NamedTuple):
    """What :func:`value_iteration` found."""

    values: np.ndarray
    """``(S,)`` optimal discounted state values ``V*``."""
    q_values: np.ndarray
    """``(S, A)`` optimal action values ``Q*``."""
    policy: np.ndarray
    """``(S,)`` a greedy optimal action per state (the lowest-numbered one on ties)."""
    iterations: int
    """Bellman backups until the largest value change fell below ``tol``."""


class _Arrays(NamedTuple):
    prob: np.ndarray  # (S, A, K), zero-padded where (s, a) has fewer than K outcomes
    next_state: np.ndarray  # (S, A, K) int
    reward: np.ndarray  # (S, A, K)
    continues: np.ndarray  # (S, A, K) 1.0 unless the transition terminates


def _model(env_or_model: EnvOrModel) -> TransitionModel:
    if isinstance(env_or_model, gym.Env):
        model = getattr(env_or_model.unwrapped, "P", None)
        if model is None:
            raise TypeError(
                f"env_or_model={env_or_model!r} has no transition model `P`: expected a tabular "
                "env such as CatGrid-v0 or FrozenLake-v1, or P itself. Pass one of those."
            )
        return model
    if isinstance(env_or_model, Mapping):
        return env_or_model
    raise TypeError(
        f"env_or_model has type {type(env_or_model).__name__}: expected a gymnasium.Env with a "
        "`P` attribute (e.g. gym.make('CatGrid-v0')) or the mapping P[s][a] itself."
    )


def _arrays(model: TransitionModel) -> _Arrays:
    n_states, n_actions = len(model), len(model[0])
    width = max(len(model[s][a]) for s in range(n_states) for a in range(n_actions))
    shape = (n_states, n_actions, width)
    arrays = _Arrays(
        np.zeros(shape), np.zeros(shape, dtype=np.int64), np.zeros(shape), np.zeros(shape)
    )
    for s in range(n_states):
        for a in range(n_actions):
            for k, (prob, nxt, reward, terminated) in enumerate(model[s][a]):
                arrays.prob[s, a, k] = prob
                arrays.next_state[s, a, k] = nxt
                arrays.reward[s, a, k] = reward
                arrays.continues[s, a, k] = 0.0 if terminated else 1.0
    return arrays


def _check_gamma(gamma: float) -> None:
    if not 0.0 < gamma < 1.0:
        raise ValueError(
            f"gamma={gamma!r} is outside (0, 1): value iteration needs a discount below 1 to "
            "converge to one greedy policy (at gamma=1 the cat may wander forever at no cost). "
            "Pass e.g. gamma=0.99, the default of SB3's PPO and A2C."
        )


def value_iteration(
    env_or_model: EnvOrModel,
    gamma: float = 0.99,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
) -> Plan:
    """Compute ``V*``, ``Q*`` and a greedy optimal policy of a tabular MDP.

    Args:
        env_or_model: An env with a ``P`` attribute (wrappers are looked through) or ``P`` itself.
        gamma: Discount factor in ``(0, 1)``; use the agent's own to compare like with like.
        tol: Stop when no state value changes by more than this.
        max_iterations: Give up (``RuntimeError``) after this many backups.

    Returns:
        A :class:`Plan` with values, action values, the greedy policy and the iteration count.

    Raises:
        ValueError: ``gamma`` is not in ``(0, 1)``.
        RuntimeError: No convergence within ``max_iterations``.

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> plan = value_iteration(CatGridEnv(layout=["C.M"]), gamma=0.9)
        >>> int(plan.policy[0]), round(float(plan.values[0]), 2)  # right; meat 2 steps away
        (1, 90.0)
    """
    _check_gamma(gamma)
    arr = _arrays(_model(env_or_model))
    values = np.zeros(arr.prob.shape[0])
    for iteration in range(1, max_iterations + 1):
        # (S, A, K) -> (S, A): expected one-step return under each action
        backup = arr.reward + gamma * arr.continues * values[arr.next_state]
        q_values = (arr.prob * backup).sum(-1)
        new_values = q_values.max(axis=1)
        delta = float(np.abs(new_values - values).max())
        values = new_values
        if delta <= tol:
            return Plan(values, q_values, q_values.argmax(axis=1), iteration)
    raise RuntimeError(
        f"value iteration did not converge within max_iterations={max_iterations} "
        f"(last change {delta:.3g} > tol={tol}); raise max_iterations or tol."
    )


def policy_return(
    env_or_model: EnvOrModel, policy: Sequence[int] | np.ndarray, start_state: int, horizon: int
) -> float:
    """Expected *undiscounted* return of a deterministic policy over at most ``horizon`` steps.

    This is what an episode of a ``TimeLimit``-wrapped env pays on average, so it is directly
    comparable with the mean episode return an agent reaches.

    Args:
        env_or_model: An env with a ``P`` attribute or ``P`` itself.
        policy: ``(S,)`` the action taken in each state.
        start_state: The state the episode starts in.
        horizon: The episode length limit (``max_episode_steps``).

    Returns:
        The expected sum of rewards from ``start_state``.

    Example:
        >>> from lmgym.envs.catgrid import CatGridEnv
        >>> policy_return(CatGridEnv(layout=["C.M"]), [1, 1, 1], start_state=0, horizon=100)
        100.0
    """
    arr = _arrays(_model(env_or_model))
    states = np.arange(arr.prob.shape[0])
    actions = np.asarray(policy, dtype=np.int64)
    prob, nxt = arr.prob[states, actions], arr.next_state[states, actions]  # (S, K)
    reward, continues = arr.reward[states, actions], arr.continues[states, actions]
    to_go = np.zeros(len(states))  # return over the remaining h steps, h = 0, 1, ..., horizon
    for _ in range(horizon):
        to_go = (prob * (reward + continues * to_go[nxt])).sum(-1)
    return float(to_go[start_state])


def optimal_return(env: gym.Env, gamma: float = 0.99, horizon: int | None = None) -> float:
    """Expected undiscounted episode return of the ``gamma``-optimal greedy policy from the start.

    Deterministic (and exact) for ``slip=0``; the expectation over slips otherwise. On the
    default layout at ``gamma=0.99`` this is ``99.0``: the optimum crosses one broom to reach the
    meat 6 steps sooner, where the broom-free detour would pay 100 undiscounted.

    Args:
        env: A ``CatGrid-v0`` env (made with ``gym.make`` or constructed directly).
        gamma: The discount the policy is optimal for; use the agent's own.
        horizon: Episode length limit; defaults to the env's ``max_episode_steps`` or 100.

    Returns:
        The return an optimal agent with discount ``gamma`` gets per episode on average.

    Example:
        >>> import gymnasium as gym
        >>> import lmgym
        >>> optimal_return(gym.make("CatGrid-v0"))
        99.0
    """
    if horizon is None:
        spec = env.spec
        horizon = spec.max_episode_steps if spec and spec.max_episode_steps else 100
    plan = value_iteration(env, gamma=gamma)
    return policy_return(env, plan.policy, env.unwrapped.start_state, horizon)  # type: ignore[attr-defined]
