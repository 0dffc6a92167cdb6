"""Teach a cat to find the meat: PPO and A2C against the exact optimum on ``CatGrid-v0``.

The gridworld half of lmgym's RL <-> LM mapping. The cat is the agent (a language model), its
cell the state (the prefix), a move the action (the next token), and ``slip`` the "drunk cat"
(sampling temperature). We train stable-baselines3's PPO and A2C with a plain ``MlpPolicy``,
compute the optimum by value iteration on the env's transition model ``P``, print the three
returns side by side, and save a picture of each greedy path on the grid.

On the default layout the optimum with ``gamma=0.99`` crosses one broom (return 99) to reach the
meat 6 steps sooner than the broom-free detour (return 100): discounting prefers sooner rewards.
Try ``--gamma 0.999`` (the optimum becomes the detour; do the agents find it?) or ``--slip 0.1``
(the drunk cat's optimum keeps away from the bathtub).

Run:
    python examples/cat_gridworld.py            # full run, about 35 s on 2 CPU cores
    python examples/cat_gridworld.py --smoke    # a few seconds; also LMGYM_SMOKE=1
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

import lmgym
from lmgym.envs.catgrid import TILE
from lmgym.envs.catgrid_planning import optimal_return, policy_return, value_iteration

matplotlib.use("Agg")  # write files, never open a window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


@dataclass
class Args:
    """Command-line arguments; each field's docstring is its ``--help`` text."""

    seed: int = 0
    """seed of Python, NumPy and torch, of the envs and of both agents"""
    slip: float = 0.0
    """drunk-cat probability in [0, 1) that a move goes in a random other direction"""
    gamma: float = 0.99
    """discount of both agents and of value iteration (the optimum depends on it)"""
    n_envs: int = 4
    """environments stepped side by side (DummyVecEnv) for each agent"""
    ppo_timesteps: int = 20_000
    """environment steps PPO trains for"""
    a2c_timesteps: int = 30_000
    """environment steps A2C trains for"""
    eval_episodes: int = 100
    """greedy episodes played to measure each agent's return"""
    output_dir: str = "runs/cat_gridworld"
    """where the PNG of the paths and results.json are written"""
    threads: int = 1
    """torch intra-op threads; 1 is fastest for tiny MLPs on a few cores (docs/design.md, 6)"""
    smoke: bool = False
    """tiny budgets so the script finishes in seconds, for tests (also: LMGYM_SMOKE=1)"""


def parse_args() -> Args:
    """Build an argparse parser from :class:`Args`, using the field docstrings as help."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Args)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    helps = {
        node.target.id: nxt.value.value
        for node, nxt in zip(body, body[1:], strict=False)
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in dataclasses.fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=helps[field.name])
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(flag, type=kind, default=field.default, help=helps[field.name])
    args = Args(**vars(parser.parse_args()))
    args.smoke = args.smoke or os.environ.get("LMGYM_SMOKE") == "1"
    if args.smoke:
        args.ppo_timesteps, args.a2c_timesteps, args.eval_episodes = 512, 512, 5
    return args


def greedy_table(model: BaseAlgorithm, n_states: int) -> np.ndarray:
    """The action the agent picks in every cell when acting greedily, shape ``(S,)``."""
    actions, _ = model.predict(np.arange(n_states), deterministic=True)
    return np.asarray(actions, dtype=np.int64)


def play(policy: np.ndarray, slip: float, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``policy`` over played episodes of ``CatGrid-v0``."""
    env = gym.make("CatGrid-v0", slip=slip)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(policy[obs]))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def sober_path(policy: np.ndarray, max_steps: int) -> list[tuple[int, int]]:
    """Cells visited by following ``policy`` without slipping (what the agent intends)."""
    env = gym.make("CatGrid-v0", max_episode_steps=max_steps)
    obs, info = env.reset(seed=0)
    path, done = [info["position"]], False
    while not done:
        obs, _, terminated, truncated, info = env.step(int(policy[obs]))
        path.append(info["position"])
        done = terminated or truncated
    return path


if __name__ == "__main__":
    args = parse_args()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- seeding: one seed for Python, NumPy, torch; the envs and agents get it below ----------
    lmgym.set_seed(args.seed)
    torch.set_num_threads(args.threads)

    env = gym.make("CatGrid-v0", slip=args.slip, render_mode="rgb_array")
    env.reset(seed=args.seed)
    n_states = int(env.observation_space.n)  # type: ignore[attr-defined]
    horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 100
    start = env.unwrapped.start_state  # type: ignore[attr-defined]
    print("layout (C cat, B broom, T bathtub, M meat):")
    print("\n".join("  " + " ".join(row) for row in env.unwrapped.layout))  # type: ignore[attr-defined]

    # ---- the optimum: value iteration on the transition model P ----------------------------------
    plan = value_iteration(env, gamma=args.gamma)
    best = optimal_return(env, gamma=args.gamma)

    # ---- train the agents -----------------------------------------------------------------------
    # Small rollouts and many updates suit a 25-state problem. A2C needs an entropy bonus here: a
    # few early bathtubs otherwise teach it to pace safely forever and never meet the meat.
    agents = {
        "PPO": (PPO, args.ppo_timesteps, {"n_steps": 128, "batch_size": 64}),
        "A2C": (A2C, args.a2c_timesteps, {"n_steps": 32, "ent_coef": 0.01}),
    }
    results: dict[str, dict[str, float]] = {}
    policies = {}
    for name, (algo, timesteps, hyper) in agents.items():
        tic = time.perf_counter()
        venv = make_vec_env(
            "CatGrid-v0", n_envs=args.n_envs, seed=args.seed, env_kwargs={"slip": args.slip}
        )
        model = algo("MlpPolicy", venv, gamma=args.gamma, seed=args.seed, verbose=0, **hyper)
        model.learn(total_timesteps=timesteps)
        policies[name] = greedy_table(model, n_states)
        results[name] = {
            "timesteps": timesteps,
            "train_seconds": time.perf_counter() - tic,
            "return_played": play(policies[name], args.slip, args.eval_episodes, args.seed + 1),
            "return_expected": policy_return(env, policies[name], start, horizon),
        }
    policies["optimum"] = plan.policy
    results["optimum"] = {
        "timesteps": 0,
        "train_seconds": 0.0,
        "return_played": play(plan.policy, args.slip, args.eval_episodes, args.seed + 1),
        "return_expected": best,
    }

    # ---- report ---------------------------------------------------------------------------------
    print(f"\nslip={args.slip} gamma={args.gamma} seed={args.seed} smoke={args.smoke}")
    print(f"{'agent':<10}{'steps':>8}{'train s':>9}{'return (played)':>17}{'(expected)':>12}")
    for name, row in results.items():
        print(
            f"{name:<10}{row['timesteps']:>8}{row['train_seconds']:>9.1f}"
            f"{row['return_played']:>17.2f}{row['return_expected']:>12.2f}"
        )
    print("optimum: greedy policy of value iteration (undiscounted return, as the agents')")

    # ---- picture: each greedy path drawn on the rendered grid -----------------------------------
    grid = env.render()
    fig, axes = plt.subplots(1, len(policies), figsize=(3.2 * len(policies), 3.6))
    for ax, (name, policy) in zip(axes, policies.items(), strict=True):
        path = np.array(sober_path(policy, horizon), dtype=float)  # (T, 2) as (row, col)
        ax.imshow(grid)
        ax.plot(path[:, 1] * TILE + TILE / 2, path[:, 0] * TILE + TILE / 2, "-o", color="purple")
        ax.set_title(f"{name}: {results[name]['return_expected']:.1f}")
        ax.set_axis_off()
    fig.suptitle(f"CatGrid-v0 greedy paths (slip={args.slip}, gamma={args.gamma})")
    fig.tight_layout()
    png = out_dir / "cat_gridworld_paths.png"
    fig.savefig(png, dpi=100)
    payload = {"args": dataclasses.asdict(args), "results": results}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {png} and {out_dir / 'results.json'}")
