from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lmgym  # noqa: F401  (registers CatGrid-v0)
from lmgym.envs.catgrid import DEFAULT_LAYOUT, DOWN, LEFT, RIGHT, TILE, UP, CatGridEnv
from lmgym.envs.catgrid_planning import (
    optimal_return,
    policy_return,
    value_iteration,
)

SLIPS = [0.0, 0.2]


def rollout(env: gym.Env, seed: int, n_steps: int = 300) -> list[tuple]:
    """Seeded random actions, reset on episode end; everything the env returned."""
    actions = np.random.default_rng(seed).integers(0, 4, size=n_steps)
    out: list[tuple] = [env.reset(seed=seed)]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(int(action))
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            out.append(env.reset())
    return out


# --- API conformance --------------------------------------------------------------------------


def test_registered_with_default_layout() -> None:
    env = gym.make("CatGrid-v0")
    assert env.spec is not None and env.spec.max_episode_steps == 100
    assert env.unwrapped.layout == DEFAULT_LAYOUT
    assert env.observation_space == gym.spaces.Discrete(25)
    assert env.action_space == gym.spaces.Discrete(4)


@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
@pytest.mark.parametrize("slip", SLIPS, ids=lambda s: f"slip={s}")
def test_gymnasium_check_env_no_warnings(slip: float, render_mode: str | None) -> None:
    env = gym.make("CatGrid-v0", slip=slip, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)


@pytest.mark.parametrize("slip", SLIPS, ids=lambda s: f"slip={s}")
def test_sb3_check_env_no_warnings(slip: float) -> None:
    env = gym.make("CatGrid-v0", slip=slip).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


@pytest.mark.parametrize("slip", [0.0, 0.3], ids=lambda s: f"slip={s}")
def test_same_seed_same_rollout(slip: float) -> None:
    first = rollout(gym.make("CatGrid-v0", slip=slip), seed=7)
    second = rollout(gym.make("CatGrid-v0", slip=slip), seed=7)
    assert first == second


def test_different_seeds_differ_when_drunk() -> None:
    assert rollout(gym.make("CatGrid-v0", slip=0.3), seed=1) != rollout(
        gym.make("CatGrid-v0", slip=0.3), seed=2
    )


@pytest.mark.parametrize("slip", [0.0, 0.3], ids=lambda s: f"slip={s}")
def test_pickle_round_trip_continues_identically(slip: float) -> None:
    env = gym.make("CatGrid-v0", slip=slip)
    env.reset(seed=3)
    env.step(DOWN)
    clone = pickle.loads(pickle.dumps(env))
    for action in [RIGHT, RIGHT, DOWN, LEFT, UP, RIGHT] * 3:
        assert env.step(action) == clone.step(action)


def test_vector_env() -> None:
    envs = gym.make_vec("CatGrid-v0", num_envs=3, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    assert obs.tolist() == [0, 0, 0]
    obs, *_ = envs.step(np.array([RIGHT, DOWN, UP]))
    assert obs.tolist() == [1, 5, 0]


# --- dynamics and rewards ---------------------------------------------------------------------


def make(layout: list[str], **kwargs) -> gym.Env:
    env = gym.make("CatGrid-v0", layout=layout, **kwargs)
    env.reset(seed=0)
    return env


def test_reset_info() -> None:
    obs, info = make(["..M", ".C."]).reset(seed=0)
    assert obs == 4
    assert info == {"position": (1, 1), "prob": 1.0}


def test_empty_and_start_cells_pay_zero() -> None:
    env = make(["C.M"])
    assert env.step(RIGHT) == (1, 0.0, False, False, {"position": (0, 1), "prob": 1.0})
    assert env.step(LEFT) == (0, 0.0, False, False, {"position": (0, 0), "prob": 1.0})


def test_move_off_grid_stays_with_zero_reward() -> None:
    env = make(["C.M"])
    for action in (UP, DOWN, LEFT):
        assert env.step(action)[:3] == (0, 0.0, False)


def test_broom_stings_and_stays() -> None:
    env = make(["CBM"])
    assert env.step(RIGHT)[:3] == (1, -1.0, False)
    assert env.step(UP)[:3] == (1, 0.0, False)  # bumping the edge while on the broom: 0
    assert env.step(LEFT)[:3] == (0, 0.0, False)
    assert env.step(RIGHT)[:3] == (1, -1.0, False)  # the broom is still there
    assert env.unwrapped.layout == ("CBM",)


def test_bathtub_ends_the_episode() -> None:
    env = make(["C.M", "T.."])
    obs, reward, terminated, truncated, info = env.step(DOWN)
    assert (obs, reward, terminated, truncated) == (3, -10.0, True, False)
    assert info["position"] == (1, 0)


def test_meat_ends_the_episode() -> None:
    env = make(["CM"])
    assert env.step(RIGHT)[:4] == (1, 100.0, True, False)


def test_time_limit_truncates() -> None:
    env = make(["C.M"], max_episode_steps=5)
    for _ in range(4):
        assert env.step(UP)[2:4] == (False, False)
    assert env.step(UP)[2:4] == (False, True)
    assert gym.make("CatGrid-v0").spec.max_episode_steps == 100


def test_slip_frequencies() -> None:
    env = make(["...", ".C.", "..M"], slip=0.3)
    counts = {1: 0, 3: 0, 5: 0, 7: 0}  # up, left, right, down neighbours of the centre
    n = 6000
    for _ in range(n):
        env.unwrapped.state = 4
        obs, _, _, _, info = env.step(RIGHT)
        counts[obs] += 1
        assert info["prob"] == pytest.approx(0.7 if obs == 5 else 0.1)
    assert counts[5] / n == pytest.approx(0.7, abs=0.03)
    for other in (1, 3, 7):
        assert counts[other] / n == pytest.approx(0.1, abs=0.02)


def test_sober_cat_never_draws_randomness() -> None:
    env = make(["C.M"])
    before = env.unwrapped.np_random.bit_generator.state
    env.step(RIGHT)
    assert env.unwrapped.np_random.bit_generator.state == before


@pytest.mark.parametrize("slip", [0.0, 0.25], ids=lambda s: f"slip={s}")
def test_transition_model_is_consistent(slip: float) -> None:
    env = gym.make("CatGrid-v0", slip=slip).unwrapped
    assert set(env.P) == set(range(25))
    for s, by_action in env.P.items():
        for a, transitions in by_action.items():
            assert sum(t[0] for t in transitions) == pytest.approx(1.0)
            env.state = s
            obs, reward, terminated, _, info = env.step(a)
            assert (info["prob"], obs, reward, terminated) in transitions


def test_terminal_cells_are_absorbing() -> None:
    env = gym.make("CatGrid-v0").unwrapped
    meat = 9  # (1, 4)
    for a in range(4):
        assert env.P[meat][a] == [(1.0, meat, 0.0, True)]


def test_invalid_action() -> None:
    env = make(["C.M"])
    with pytest.raises(ValueError, match=r"action=4 .*Discrete\(4\)"):
        env.step(4)
    with pytest.raises(ValueError, match="action=-1"):
        env.step(-1)


def test_numpy_actions_accepted() -> None:
    env = make(["C.M"])
    assert env.step(np.int64(RIGHT))[0] == 1


# --- rendering --------------------------------------------------------------------------------


def test_render_ansi() -> None:
    env = make(["C.B", "T.M"], render_mode="ansi")
    assert env.render() == "\nC . B\nT . M\n"
    env.step(RIGHT)
    env.step(RIGHT)
    assert env.render() == "  (right)\n. . C\nT . M\n"


def test_render_rgb_array() -> None:
    env = make(["C.B", "T.M"], render_mode="rgb_array")
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (2 * TILE, 3 * TILE, 3)
    env.step(RIGHT)
    moved = env.render()
    assert not np.array_equal(frame[:TILE, :TILE], moved[:TILE, :TILE])  # cat left (0, 0)
    assert not np.array_equal(frame[:TILE, TILE : 2 * TILE], moved[:TILE, TILE : 2 * TILE])
    assert not np.shares_memory(frame, moved)


def test_render_without_mode_warns() -> None:
    env = CatGridEnv()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


# --- validation: each bad input is a clear error ----------------------------------------------


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        (["...", "..M"], r"0 start cells 'C'.*expected exactly one"),
        (["C.C", "..M"], r"2 start cells 'C'.*Keep only one"),
        (["C.T", "TTM"], r"no meat 'M' reachable from 'C' without crossing a bathtub"),
        (["C..", "..."], r"no meat 'M' reachable"),
        (["C.M", ".."], r"row 1 '\.\.' has length 2 but row 0 'C\.M' has length 3"),
        (["C.M", ".X."], r"unknown character 'X' at column 1.*expected one of"),
        ([], r"empty"),
    ],
    ids=["no-start", "two-starts", "meat-behind-bathtubs", "no-meat", "ragged", "unknown", "empty"],
)
def test_bad_layout(layout: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        gym.make("CatGrid-v0", layout=layout)
    assert "layout" in str(err.value)


def test_layout_as_one_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"splitlines"):
        CatGridEnv(layout="C.M")


def test_broom_path_counts_as_reachable() -> None:
    CatGridEnv(layout=["CBM", "TTT"])


@pytest.mark.parametrize("slip", [-0.1, 1.0, 1.5, float("nan")], ids=str)
def test_bad_slip(slip: float) -> None:
    with pytest.raises(ValueError, match=r"slip=.* is outside \[0, 1\).*Pass e\.g\. slip=0\.1"):
        gym.make("CatGrid-v0", slip=slip)


def test_bad_render_mode() -> None:
    with pytest.raises(ValueError, match=r"render_mode='human' is not supported"):
        CatGridEnv(render_mode="human")


# --- planning ---------------------------------------------------------------------------------


def test_value_iteration_default_layout() -> None:
    env = gym.make("CatGrid-v0")
    plan = value_iteration(env, gamma=0.99)
    assert plan.values.shape == (25,) and plan.q_values.shape == (25, 4)
    # Optimal path: right, right, down, right (broom), right (meat).
    assert [int(plan.policy[s]) for s in (0, 1, 2, 7, 8)] == [RIGHT, RIGHT, DOWN, RIGHT, RIGHT]
    expected = -1 * 0.99**3 + 100 * 0.99**4
    assert plan.values[0] == pytest.approx(expected)
    assert optimal_return(env, gamma=0.99) == 99.0


def test_discount_changes_the_optimum() -> None:
    # Far-sighted enough, the broom-free detour (100) beats the shortcut through a broom (99).
    assert optimal_return(gym.make("CatGrid-v0"), gamma=0.999) == 100.0


def test_optimal_return_with_slip_matches_monte_carlo() -> None:
    env = gym.make("CatGrid-v0", slip=0.2)
    plan = value_iteration(env, gamma=0.99)
    expected = optimal_return(env, gamma=0.99)
    returns = []
    for episode in range(2000):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(plan.policy[obs]))
            total += reward
            done = terminated or truncated
        returns.append(total)
    assert 0 < expected < 99
    assert np.mean(returns) == pytest.approx(expected, abs=3 * np.std(returns) / np.sqrt(2000))


def test_planning_accepts_frozen_lake_and_raw_p() -> None:
    lake = gym.make("FrozenLake-v1", is_slippery=False)
    plan = value_iteration(lake.unwrapped.P, gamma=0.9)
    assert plan.values[14] == pytest.approx(1.0)  # next to the goal
    assert policy_return(lake, plan.policy, start_state=0, horizon=100) == 1.0


def test_planning_errors() -> None:
    with pytest.raises(ValueError, match=r"gamma=1\.0 is outside \(0, 1\).*gamma=0\.99"):
        value_iteration(gym.make("CatGrid-v0"), gamma=1.0)
    with pytest.raises(TypeError, match="no transition model `P`"):
        value_iteration(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="expected a gymnasium.Env"):
        value_iteration([1, 2, 3])  # type: ignore[arg-type]


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_ppo_reaches_the_optimum() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("CatGrid-v0", n_envs=4, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=128, batch_size=64, gamma=0.99, seed=0, verbose=0)
    model.learn(total_timesteps=6_144)

    env = gym.make("CatGrid-v0")
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total += reward
        done = terminated or truncated
    assert total == optimal_return(env, gamma=0.99) == 99.0
