"""Train the embedded LM on ``LMBandit-v0`` with RLlib's PPO, sampling on several EnvRunners.

The same RLHF loop as lmgym's own PPO, run by Ray RLlib: each EnvRunner process builds its own
``LMBandit-v0`` and its own copy of the policy (:class:`lmgym.rllib.LMRLModule`, the embedded
model ``lmgym/models/default``), samples one completion per prompt, and gets the env's reward
(sentiment score minus the KL penalty to the frozen reference). The learner in this process
scores the taken completions with one teacher-forced forward and takes PPO steps; the new
weights go back to the EnvRunners before the next iteration.

:func:`lmgym.rllib.ppo_config` builds the config: it registers the env for the Ray workers,
plugs in the LM module (RLlib's default module cannot read token ids) and picks small batches.

Needs Ray: ``pip install 'lmgym[ray]'``.

Run:
    python examples/rllib_ppo.py                    # 20 iterations of 64 episodes, 2 EnvRunners
    python examples/rllib_ppo.py --env-runners 1    # compare the sampling speed
    python examples/rllib_ppo.py --smoke            # one iteration; also LMGYM_SMOKE=1
"""

from __future__ import annotations

import argparse
import os
import time

import ray

from lmgym.rllib import ppo_config


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="PPO iterations")
    parser.add_argument("--env-runners", type=int, default=2, help="sampling processes")
    parser.add_argument("--batch-size", type=int, default=64, help="episodes per iteration")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate")
    parser.add_argument("--smoke", action="store_true", help="one iteration (for the tests)")
    args = parser.parse_args()
    if args.smoke or os.environ.get("LMGYM_SMOKE") == "1":
        args.iterations = 1
    return args


def main() -> None:
    """Train and print the mean reward (the episode return: one step per episode)."""
    args = parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # A local Ray instance on this machine only; drop address= to join a running cluster.
    ray.init(include_dashboard=False, address="local", log_to_driver=False)
    config = ppo_config(
        "LMBandit-v0", num_env_runners=args.env_runners, train_batch_size=args.batch_size,
        lr=args.lr,
    )  # fmt: skip
    algo = config.build_algo()
    try:
        print(f"{'iter':>4} {'reward':>8} {'env steps/s':>11} {'policy loss':>11}")
        for iteration in range(1, args.iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            seconds = time.perf_counter() - start
            runners = result["env_runners"]
            losses = result["learners"]["default_policy"]
            steps_per_s = runners["num_env_steps_sampled"] / seconds
            print(
                f"{iteration:>4} {runners['episode_return_mean']:>8.3f} {steps_per_s:>11.1f} "
                f"{losses['policy_loss']:>11.4f}"
            )
    finally:
        algo.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
