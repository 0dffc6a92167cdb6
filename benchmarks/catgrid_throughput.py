"""Steps per second of CatGrid-v0 against FrozenLake-v1, measured in the same run.

Both envs are built with ``gym.make`` (so both pay for the same wrappers: TimeLimit, OrderEnforcing,
PassiveEnvChecker), step through the same pre-drawn random actions from one seeded generator, and
reset whenever an episode ends. Each configuration is timed ``--repeats`` times and the best
(least disturbed) run is kept. The headline ratio compares the two defaults (CatGrid sober,
FrozenLake slippery); the slippery and non-slippery pairs are reported too.

    python benchmarks/catgrid_throughput.py --json bench-results/catgrid_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import lmgym  # noqa: F401  (registers CatGrid-v0)

CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("CatGrid-v0 (default, slip=0)", "CatGrid-v0", {}),
    ("CatGrid-v0 (slip=0.2)", "CatGrid-v0", {"slip": 0.2}),
    ("FrozenLake-v1 (default, slippery)", "FrozenLake-v1", {}),
    ("FrozenLake-v1 (is_slippery=False)", "FrozenLake-v1", {"is_slippery": False}),
]


def run_once(env_id: str, kwargs: dict[str, Any], actions: list[int], seed: int) -> dict[str, Any]:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed)
    episodes = 0
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            episodes += 1
    elapsed = time.perf_counter() - start
    env.close()
    return {"seconds": elapsed, "steps_per_s": len(actions) / elapsed, "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per env; best is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the actions and the envs")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    actions = rng.integers(0, 4, size=args.steps).tolist()  # python ints, as an agent's would be

    results = []
    for name, env_id, kwargs in CONFIGS:
        runs = [run_once(env_id, kwargs, actions, args.seed) for _ in range(args.repeats)]
        best = max(runs, key=lambda r: r["steps_per_s"])
        results.append({"name": name, "env_id": env_id, "kwargs": kwargs, **best})

    rate = {r["name"]: r["steps_per_s"] for r in results}
    ratios = {
        "default_vs_default": rate[CONFIGS[0][0]] / rate[CONFIGS[2][0]],
        "slippery_vs_slippery": rate[CONFIGS[1][0]] / rate[CONFIGS[2][0]],
        "deterministic_vs_deterministic": rate[CONFIGS[0][0]] / rate[CONFIGS[3][0]],
    }

    print(f"{args.steps:,} random steps per run, best of {args.repeats}, reset on episode end")
    print(f"{'environment':<36} {'steps/s':>12} {'episodes':>9}")
    for r in results:
        print(f"{r['name']:<36} {r['steps_per_s']:>12,.0f} {r['episodes']:>9,}")
    print(
        f"ratio CatGrid/FrozenLake: defaults {ratios['default_vs_default']:.2f}x, "
        f"both slippery {ratios['slippery_vs_slippery']:.2f}x, "
        f"both deterministic {ratios['deterministic_vs_deterministic']:.2f}x"
    )

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "catgrid_throughput",
            "steps": args.steps,
            "repeats": args.repeats,
            "seed": args.seed,
            "python": platform.python_version(),
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "machine": platform.machine(),
            "results": results,
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
