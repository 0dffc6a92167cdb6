"""Completions/s of one PPO iteration with the LM policy on LMBandit-v0, against its bare floor.

One iteration samples B completions (one rollout of ``n_envs = B``, ``n_steps = 1``), scores
them in the env (reference forward, KL, reward) and runs PPO's update (``--epochs`` passes of a
forward and backward over the B completions, one minibatch). The time is split by a profile into
generation, the env step (reference scoring + reward), and the update.

The floor is the same work run bare on the same model, batch and prompts, in the same run:
``generate`` (KV cache, sampling), one no-grad reference forward over prompt + completion, and
per epoch one forward + backward + Adam step of the LM. lmgym's overhead is iteration / floor - 1;
the goal is <= 15% at B = 64. Peak memory (max RSS) is reported against the model's parameter
and Adam-state bytes (the weights the policy trains, its two moments, and the env's one frozen
reference copy).

    python benchmarks/ppo_throughput.py --model gpt2-small --batch 64 --json out.json
    python benchmarks/ppo_throughput.py --model default --batch 64     # the embedded model

``--model gpt2-small`` builds a randomly initialised 124M GPT-2 with a 50,257-token BPE once
(``benchmarks/gpt2_small.py``). Times are CPU-seconds of this process (all threads) and wall
seconds; each figure is the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import resource
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import PPO

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.models.padding import completion_mask_from_ids, right_to_left_padding


def model_dir(name: str) -> Path:
    if name == "default":
        return DEFAULT_MODEL_DIR
    if name == "gpt2-small":
        from gpt2_small import gpt2_small_dir

        return gpt2_small_dir()
    return Path(name)


class Clock:
    """CPU-seconds (all threads of this process) and wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def make_env(args: argparse.Namespace, **options: Any) -> Any:
    """``make_vec("LMBandit-v0", args.batch)`` on the benchmark's model and prompts."""
    return gym.make_vec(
        "LMBandit-v0",
        args.batch,
        model=str(model_dir(args.model)),
        prompts=corpus_prompts("train"),
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        **options,
    )


def build(args: argparse.Namespace) -> tuple[PPO, SB3VecEnv]:
    env = make_env(args, device=args.device, dtype=args.dtype)
    vec = SB3VecEnv(env)
    agent = PPO(
        LMActorCriticPolicy,
        vec,
        n_steps=1,
        batch_size=args.batch,
        n_epochs=args.epochs,
        learning_rate=1e-5,
        seed=args.seed,
        device=args.device,
        policy_kwargs=lm_policy_kwargs(env),
    )
    agent.policy.attach_to(vec)  # type: ignore[attr-defined]
    return agent, vec


def time_iteration(agent: PPO, batch: int) -> tuple[Clock, pstats.Stats]:
    profiler = cProfile.Profile()
    with Clock() as clock:
        profiler.enable()
        agent.learn(batch, reset_num_timesteps=False)
        profiler.disable()
    return clock, pstats.Stats(profiler)


def split(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of the phases, from the profile (its own overhead included)."""
    wanted = {
        "generation": ("generation.py", "generate"),
        "env step (reference + reward)": ("sequence_reward.py", "__call__"),
        "reward function": ("base.py", "call_reward_fn"),
        "update (forward + backward)": ("ppo.py", "train"),
    }
    out = dict.fromkeys(wanted, 0.0)
    for (path, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        for phase, (file, function) in wanted.items():
            if path.endswith(file) and name == function:
                out[phase] = max(out[phase], row[3])
    return out


def time_floor(agent: PPO, vec: SB3VecEnv, args: argparse.Namespace) -> dict[str, Clock]:
    """The same work, bare: generate, one reference forward, per epoch forward + backward."""
    models = vec.venv.models  # type: ignore[attr-defined]
    lm = agent.policy.lm  # type: ignore[attr-defined]
    obs = torch.from_numpy(vec.reset()).to(lm.device)
    ids, mask = right_to_left_padding(obs, (obs != models.pad_token_id).long(), 0)
    keep = int(mask.sum(1).max())  # drop the columns that are padding in every row
    ids, mask = ids[:, -keep:], mask[:, -keep:]
    clocks = {}
    with Clock() as clocks["generate"], torch.inference_mode():
        out = lm.generate(
            input_ids=ids, attention_mask=mask, do_sample=True,
            max_new_tokens=args.max_new_tokens, pad_token_id=models.pad_token_id,
        )  # fmt: skip
    completion = out[:, ids.shape[1] :].clone()
    full = torch.cat([ids, completion], dim=1).clone()
    full_mask = torch.cat([mask, completion_mask_from_ids(completion, models.eos_token_id)], 1)
    with Clock() as clocks["reference forward"], torch.inference_mode():
        models.ref_model(input_ids=full, attention_mask=full_mask)
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-5)
    n_prompt, counted = ids.shape[1], full_mask[:, ids.shape[1] :]
    with Clock() as clocks["forward + backward"]:
        for _ in range(args.epochs):  # log-probs of the completion tokens only, as PPO needs
            logits = lm(input_ids=full, attention_mask=full_mask).logits[:, n_prompt - 1 : -1]
            logp = torch.log_softmax(logits.float(), -1).gather(2, completion[..., None])[..., 0]
            loss = -(logp * counted).sum() / counted.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return clocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="gpt2-small, default, or a dir")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-prompt-tokens", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    agent, vec = build(args)
    agent.learn(args.batch)  # warm-up: first-call costs are not the steady state
    runs = [time_iteration(agent, args.batch) for _ in range(args.repeats)]
    # Before the floor runs: its own Adam state would add to the peak.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock, stats = min(runs, key=lambda run: run[0].cpu)
    phases = split(stats)
    floors = [time_floor(agent, vec, args) for _ in range(args.repeats)]
    floor = {name: min(f[name].cpu for f in floors) for name in floors[0]}
    floor_cpu = sum(floor.values())
    lm = agent.policy.lm  # type: ignore[attr-defined]
    param_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    trained = sum(p.numel() * 4 for p in lm.parameters() if p.requires_grad)
    budget = 2 * param_bytes + 2 * trained  # policy + env reference, Adam's two moments
    result: dict[str, Any] = {
        "benchmark": "ppo_throughput",
        "machine": platform.platform(),
        "model": args.model,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "vocab": int(lm.config.vocab_size),
        "batch": args.batch,
        "epochs": args.epochs,
        "threads": args.threads,
        "device": args.device,
        "dtype": str(next(lm.parameters()).dtype),
        "iteration_cpu_s": clock.cpu,
        "iteration_wall_s": clock.wall,
        "completions_per_cpu_s": args.batch / clock.cpu,
        "completions_per_wall_s": args.batch / clock.wall,
        "phases_profiled_s": phases,
        "floor_cpu_s": floor,
        "overhead_over_floor": clock.cpu / floor_cpu - 1,
        "peak_rss_bytes": peak,
        "params_plus_adam_bytes": budget,
    }
    print(
        f"PPO iteration, LM policy on LMBandit-v0: {args.model} "
        f"({result['parameters'] / 1e6:.1f}M params, vocab {result['vocab']}), B={args.batch}, "
        f"{args.epochs} epoch(s), {args.threads} thread(s), {args.device}/{result['dtype']}"
    )
    print("| | CPU-s | wall s | completions/CPU-s |")
    print("|---|---:|---:|---:|")
    print(
        f"| lmgym iteration | {clock.cpu:.2f} | {clock.wall:.2f} | "
        f"{result['completions_per_cpu_s']:.1f} |"
    )
    print(f"| bare floor | {floor_cpu:.2f} | | {args.batch / floor_cpu:.1f} |")
    print(f"\nlmgym overhead over the floor: {100 * result['overhead_over_floor']:+.1f}%")
    print("floor parts (CPU-s): " + ", ".join(f"{k} {v:.2f}" for k, v in floor.items()))
    print("iteration split (profiled, s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print(
        f"peak RSS {peak / 2**20:.0f} MiB; parameters + Adam state {budget / 2**20:.0f} MiB "
        f"(ratio {peak / budget:.2f})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
