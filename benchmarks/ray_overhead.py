"""The same ``lmgym bench`` grid on the local process pool and on a 2-node Ray cluster.

Two Ray nodes with one CPU each are started on 127.0.0.1 (``ray start --head`` and ``ray start
--address``), so the Ray grid runs two runs at a time, as the local pool does with ``--jobs 2``.
Both grids train the same runs with the same seeds (the benchmark checks that their eval
rewards are equal). On a 2-core machine there is nothing to gain from Ray: the figure to watch
is its overhead, the Ray grid's extra wall time per run:

    overhead per run = (wall_ray - wall_local) * 2 / runs

(two runs share the wall time at any moment). The cluster's start and stop are timed apart and
not counted in either grid.

    python benchmarks/ray_overhead.py --json out.json
    python benchmarks/ray_overhead.py --seeds 4 --steps 2048 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmgym.training.bench import BenchConfig, run_bench

PORT = 6391
RAY = Path(sys.executable).with_name("ray")


def ray_cmd(*args: str) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([str(RAY), *args], check=True, env=env, capture_output=True)


def start_cluster() -> float:
    started = time.perf_counter()
    ray_cmd("start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}",
            "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats")  # fmt: skip
    ray_cmd("start", f"--address=127.0.0.1:{PORT}", "--node-ip-address=127.0.0.1",
            "--num-cpus=1", "--disable-usage-stats")  # fmt: skip
    return time.perf_counter() - started


def grid(out: Path, args: argparse.Namespace, **backend: Any) -> dict[str, Any]:
    config = BenchConfig(env="CatGrid-v0", algos=["ppo", "a2c"], seeds=args.seeds,
                         steps=args.steps, out=out, progress=False, **backend)  # fmt: skip
    started = time.perf_counter()
    results = run_bench(config)
    return {"wall_s": time.perf_counter() - started, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    runs = 2 * args.seeds
    tmp = Path(tempfile.mkdtemp())
    cluster_start_s = start_cluster()
    rows = []
    try:
        for repeat in range(args.repeats):
            local = grid(tmp / f"local{repeat}", args, jobs=2)
            remote = grid(tmp / f"ray{repeat}", args, backend="ray",
                          address=f"127.0.0.1:{PORT}")  # fmt: skip
            same = [r["eval_reward_after"] for r in local["results"]["runs"]] == [
                r["eval_reward_after"] for r in remote["results"]["runs"]
            ]
            rows.append({"local_wall_s": local["wall_s"], "ray_wall_s": remote["wall_s"],
                         "ray_retries": remote["results"]["retries"],
                         "same_results": same})  # fmt: skip
    finally:
        stop = time.perf_counter()
        ray_cmd("stop", "--force")
        cluster_stop_s = time.perf_counter() - stop
        shutil.rmtree(tmp, ignore_errors=True)
    local_s = min(r["local_wall_s"] for r in rows)
    ray_s = min(r["ray_wall_s"] for r in rows)
    summary = {
        "grid": f"CatGrid-v0, ppo + a2c, {args.seeds} seeds, {args.steps} steps: {runs} runs",
        "local_wall_s": local_s,
        "ray_wall_s": ray_s,
        "ray_over_local": ray_s / local_s,
        "ray_overhead_per_run_s": (ray_s - local_s) * 2 / runs,
        "cluster_start_s": cluster_start_s,
        "cluster_stop_s": cluster_stop_s,
        "same_results": all(r["same_results"] for r in rows),
        "repeats": rows,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"| {summary['grid']} | wall (best of {args.repeats}) |")
    print("|---|---|")
    print(f"| local pool, 2 processes | {local_s:.1f} s |")
    print(f"| Ray, 2 nodes × 1 CPU on 127.0.0.1 | {ray_s:.1f} s ({ray_s / local_s:.2f}×) |")
    print(f"| Ray overhead per run | {summary['ray_overhead_per_run_s']:.2f} s |")
    print(f"| cluster start / stop (not in the grids) | {cluster_start_s:.1f} s / "
          f"{cluster_stop_s:.1f} s |")  # fmt: skip
    each = ", ".join(f"{r['local_wall_s']:.1f} / {r['ray_wall_s']:.1f}" for r in rows)
    print(f"| each repeat, local / Ray | {each} s |")
    print(f"| same eval rewards on both backends | {summary['same_results']} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
