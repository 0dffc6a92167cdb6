"""Learning check of the LM actor-critic policy on the default task, PPO next to A2C.

SB3's PPO and A2C fine-tune the embedded LM (``LMActorCriticPolicy``) on
``gym.make_vec("LMBandit-v0")`` with the adaptive KL controller, then the held-out prompts are
scored with the env's own reward. The baseline is the base LM, measured in the same run on the
same prompts. Issue 5's bar, reported per algorithm:

- gain: mean lexicon reward after − base, against half of the range it can move,
  (max lexicon score 1.0 − base) / 2;
- KL: mean summed KL of the held-out completions < 2 × the controller's target;
- fluency: share of prompt + completion passing the grammar check >= 80%;
- wall time and process CPU time of training (the budget is 5 CPU-minutes each).

``ppo_kl0`` is PPO with ``kl_coef=0`` and no controller: the reward-hacking run, where fluency
should fall (its KL bar does not apply; the row shows how far the policy drifts without it).

    python benchmarks/lm_policy_learning.py --json bench-results/lm_policy_learning.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_logprobs, lm_policy_kwargs
from lmgym.agents.callbacks import RewardPartsCallback
from lmgym.evaluation import evaluate_actions_on_prompts, lm_sampler
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.generation import DecodingConfig
from lmgym.seeding import set_seed
from lmgym.training.algorithms import default_kl_horizon


def kl_horizon(args: argparse.Namespace) -> int:
    """The run's controller horizon: ``--kl-horizon``, else lmgym's default for the run."""
    return args.kl_horizon or default_kl_horizon("LMBandit-v0", args.steps)


def train(algo: str, args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    no_kl = algo == "ppo_kl0"
    vec = SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=16,
            kl_coef=0.0 if no_kl else args.kl_coef,
            kl_target=None if no_kl else args.kl_target,
            # Ziegler's controller needs a horizon well below the run's length to adapt at all.
            kl_horizon=kl_horizon(args),
        )
    )
    vec.seed(args.seed)
    env = vec.venv
    common = {"gamma": 1.0, "seed": args.seed, "policy_kwargs": lm_policy_kwargs(vec)}
    if algo in ("ppo", "ppo_kl0"):
        model = PPO(LMActorCriticPolicy, vec, n_steps=16, batch_size=64, n_epochs=2,
                    learning_rate=args.ppo_lr, **common)  # fmt: skip
    else:
        model = A2C(LMActorCriticPolicy, vec, n_steps=4, learning_rate=args.a2c_lr,
                    policy_kwargs=common.pop("policy_kwargs")
                    | {"optimizer_class": torch.optim.Adam}, **common)  # fmt: skip
    test = corpus_prompts("test")
    torch.manual_seed(args.seed)
    env.attach_policy(lm_logprobs(env.models.model, env.models))
    base = evaluate_actions_on_prompts(
        env, test, lm_sampler(env, DecodingConfig(max_new_tokens=env.max_new_tokens)),
        samples_per_prompt=args.eval_samples,
    )  # fmt: skip
    model.policy.attach_to(vec)
    callback = RewardPartsCallback()
    started, cpu_started = time.perf_counter(), time.process_time()
    model.learn(args.steps, callback=callback)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(obs, deterministic=False)[0])

    after = evaluate_actions_on_prompts(env, test, act, samples_per_prompt=args.eval_samples)
    half_range = (1.0 - base.reward_model) / 2
    gain = after.reward_model - base.reward_model
    return {
        "algo": algo,
        "steps": args.steps,
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "base_reward_model": base.reward_model,
        "after_reward_model": after.reward_model,
        "gain": gain,
        "half_range": half_range,
        "gain_ok": gain >= half_range,
        "after_kl": after.kl,
        "kl_target": None if no_kl else args.kl_target,
        "kl_horizon": None if no_kl else kl_horizon(args),
        "kl_ok": None if no_kl else after.kl < 2 * args.kl_target,
        "final_kl_coef": float(env.rewarder.controller.value),
        "base_fluency": base.fluency,
        "after_fluency": after.fluency,
        "fluency_ok": after.fluency >= 0.8,
        "examples": after.examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "a2c", "ppo_kl0"],
                        choices=["ppo", "a2c", "ppo_kl0"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=12_288, help="completions per algorithm")
    parser.add_argument("--kl-coef", type=float, default=0.02, help="initial β")
    parser.add_argument("--kl-target", type=float, default=4.0, help="summed KL per completion")
    parser.add_argument("--kl-horizon", type=int, default=None,
                        help="controller horizon (default: 1/16 of the run)")  # fmt: skip
    parser.add_argument("--ppo-lr", type=float, default=1e-4)
    parser.add_argument("--a2c-lr", type=float, default=1e-4)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [train(algo, args) for algo in args.algos]
    print("| algo | steps | train s (CPU s) | r_φ base → after | gain / half range | KL (target) | "
          "β end | fluency base → after |")  # fmt: skip
    print("|---|---:|---:|---|---|---|---:|---|")
    for r in rows:
        print(
            f"| {r['algo']} | {r['steps']} | {r['train_wall_s']:.0f} ({r['train_cpu_s']:.0f}) | "
            f"{r['base_reward_model']:+.3f} → {r['after_reward_model']:+.3f} | "
            f"{r['gain']:.3f} / {r['half_range']:.3f} {'ok' if r['gain_ok'] else 'short'} | "
            f"{r['after_kl']:.2f} ({r['kl_target']}) "
            f"{'-' if r['kl_ok'] is None else 'ok' if r['kl_ok'] else 'over'} | "
            f"{r['final_kl_coef']:.4f} | "
            f"{r['base_fluency']:.0%} → {r['after_fluency']:.0%} "
            f"{'ok' if r['fluency_ok'] else 'low'} |"
        )
        for prompt, completion in r["examples"]:
            print(f"    {prompt!r} -> {completion!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"benchmark": "lm_policy_learning", "rows": rows}, indent=2)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
