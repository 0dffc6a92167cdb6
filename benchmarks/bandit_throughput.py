"""Completions/s of ``gym.make_vec("LMBandit-v0")`` against the bare cost of what a step must do.

A bandit step must (1) run the reference model teacher-forced over prompt + completion once and
(2) decode the completions and call the reward function once. The baseline does exactly that,
with the same model, prompts and completions, in the same run; the env's extra cost (validation,
masks, KL, infos, autoreset) is the overhead. Goal: env / baseline >= 0.9 (overhead <= 10%).

Completions are sampled once from the default LM (so their lengths and EOS positions are
realistic) and reused by both sides. Each figure is the best of ``--repeats`` timed runs.

    python benchmarks/bandit_throughput.py --json bench-results/bandit_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.envs.bandit_vector import LMBanditVectorEnv
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.padding import completion_mask_from_ids
from lmgym.models.scoring import score_completions
from lmgym.rewards import call_reward_fn


def sample_actions(envs: LMBanditVectorEnv, observations: np.ndarray, rounds: int) -> list:
    lm = envs.models
    ids = torch.from_numpy(observations)
    out = []
    for _ in range(rounds):
        gen = generate(
            lm.model, ids, (ids != lm.pad_token_id).long(),
            DecodingConfig(max_new_tokens=envs.max_new_tokens),
            eos_token_id=lm.eos_token_id, pad_token_id=lm.pad_token_id,
        )  # fmt: skip
        out.append(gen.completion_ids.numpy())
    return out


def time_env(envs: LMBanditVectorEnv, actions: list, seed: int) -> float:
    envs.reset(seed=seed)
    start = time.perf_counter()
    for batch in actions:
        envs.step(batch)
    return time.perf_counter() - start


def time_baseline(
    envs: LMBanditVectorEnv, observations: list, prompts: list, actions: list
) -> float:
    lm, reward_fn = envs.models, envs.rewarder.reward_fn
    start = time.perf_counter()
    for obs, texts, batch in zip(observations, prompts, actions, strict=True):
        prompt_ids = torch.from_numpy(obs)
        completion_ids = torch.from_numpy(batch)
        mask = completion_mask_from_ids(completion_ids, lm.eos_token_id)
        with torch.inference_mode():
            score_completions(
                lm.ref_model, prompt_ids, (prompt_ids != lm.pad_token_id).long(),
                completion_ids, mask, pad_token_id=lm.pad_token_id,
            )  # fmt: skip
        lengths = mask.sum(1).tolist()
        id_lists = [row[:n].tolist() for row, n in zip(completion_ids, lengths, strict=True)]
        completions = lm.tokenizer.batch_decode(id_lists, skip_special_tokens=True)
        call_reward_fn(reward_fn, texts, completions)
    return time.perf_counter() - start


def record_prompts(envs: LMBanditVectorEnv, actions: list, seed: int) -> tuple[list, list]:
    """The observations and prompt texts the env will see, step by step (same seed)."""
    obs, _ = envs.reset(seed=seed)
    observations, prompts = [], []
    for batch in actions:
        observations.append(obs.copy())
        prompts.append(list(envs._prompts))
        obs, *_ = envs.step(batch)
    return observations, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--completions", type=int, default=1024, help="completions per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rows = []
    for batch in args.batches:
        envs = gym.make_vec("LMBandit-v0", num_envs=batch)
        steps = max(1, args.completions // batch)
        obs, _ = envs.reset(seed=args.seed)
        actions = sample_actions(envs, obs, steps)
        observations, prompts = record_prompts(envs, actions, args.seed)
        env_s = min(time_env(envs, actions, args.seed) for _ in range(args.repeats))
        base_s = min(
            time_baseline(envs, observations, prompts, actions) for _ in range(args.repeats)
        )
        n = steps * batch
        rows.append(
            {
                "batch": batch,
                "completions": n,
                "env_completions_per_s": n / env_s,
                "baseline_completions_per_s": n / base_s,
                "ratio_env_over_baseline": base_s / env_s,
                "overhead_pct": 100 * (env_s - base_s) / base_s,
            }
        )

    print(f"LMBandit-v0 make_vec throughput (torch threads={args.threads})")
    print("| batch | env compl/s | baseline compl/s | env/baseline | overhead |")
    print("|------:|------------:|-----------------:|-------------:|---------:|")
    for r in rows:
        print(
            f"| {r['batch']:>5} | {r['env_completions_per_s']:>11.0f} | "
            f"{r['baseline_completions_per_s']:>16.0f} | {r['ratio_env_over_baseline']:>12.2f} | "
            f"{r['overhead_pct']:>7.1f}% |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"benchmark": "bandit_throughput", "machine": platform.platform(),
                   "threads": args.threads, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
