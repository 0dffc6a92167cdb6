"""Peak memory of one PPO iteration with the LM policy, under each of lmgym's memory options.

Each configuration runs in a fresh process (peak RSS only ever grows, so one process can
measure one thing): it builds ``make_vec("LMBandit-v0", B)`` and the LM policy, runs one PPO
iteration (B completions, one epoch, one mini-batch of B) and reports the process's peak
resident memory. The configurations, all float32 on the CPU:

- ``full``: every weight trains; the env holds its own frozen reference copy;
- ``minibatch``: the same, with ``minibatch_size`` rows per forward (the env's scoring and
  PPO's forward/backward run as accumulated micro-batches; same update);
- ``checkpointing``: the same, with ``gradient_checkpointing=True`` (activations recomputed in
  the backward pass);
- ``lora``: LoRA adapters (r=8) train; the reference is the base with the adapters off
  (``attach_lora_reference``), so one copy of the weights;
- ``lora+all``: LoRA with micro-batches and checkpointing.

The table gives each peak, the part above the process's size once torch, SB3 and
transformers are imported, its ratio to ``full`` measured in the same run, and the static
bytes (weights, gradients and Adam's two moments of what trains, and the env's reference).

    python benchmarks/peak_memory.py --model gpt2-small --batch 64 --json out.json
    python benchmarks/peak_memory.py --model default --batch 64      # the embedded model
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIGS = ("full", "minibatch", "checkpointing", "lora", "lora+all")


def measure(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one PPO iteration under ``config`` in this process; its peak RSS and static bytes."""
    import torch
    from ppo_throughput import make_env

    import lmgym  # noqa: F401  (registers LMBandit-v0)
    from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, attach_lora_reference, lm_policy_kwargs
    from lmgym.algorithms import LMPPO

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch, SB3, HF
    lora = config.startswith("lora")
    micro = args.minibatch if config in ("minibatch", "lora+all") else None
    env = make_env(args, minibatch_size=micro)
    vec = SB3VecEnv(env)
    policy_kwargs = lm_policy_kwargs(
        env,
        gradient_checkpointing=config in ("checkpointing", "lora+all"),
        **({"lora": {"r": 8}} if lora else {}),
    )
    agent = LMPPO(LMActorCriticPolicy, vec, n_steps=1, batch_size=args.batch, n_epochs=1,
                  learning_rate=1e-5, seed=args.seed, minibatch_size=micro,
                  policy_kwargs=policy_kwargs)  # fmt: skip
    if lora:
        attach_lora_reference(agent)
    agent.policy.attach_to(vec)
    agent.learn(args.batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lm = agent.policy.lm
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    trained = sum(p.numel() * 4 for p in lm.parameters() if p.requires_grad)
    reference = 0 if lora else weights  # LoRA shares the base; otherwise the env has a copy
    return {
        "config": config,
        "peak_rss_bytes": peak,
        "imports_rss_bytes": imported,
        "static_bytes": weights + 3 * trained + reference,  # + grads and Adam's two moments
        "parameters": sum(p.numel() for p in lm.parameters()),
        "trained_parameters": trained // 4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="gpt2-small, default, or a dir")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--minibatch", type=int, default=16, help="rows per micro-batch")
    parser.add_argument("--max-prompt-tokens", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # a child's config
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    shared = (
        "model",
        "batch",
        "minibatch",
        "max_prompt_tokens",
        "max_new_tokens",
        "threads",
        "seed",
    )
    child_args = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in shared]
    rows = []
    for config in args.configs:
        out = subprocess.run(
            [sys.executable, __file__, *child_args, "--one", config],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    full = next((r["peak_rss_bytes"] for r in rows if r["config"] == "full"), None)
    print(
        f"Peak RSS of one PPO iteration, LM policy on LMBandit-v0: {args.model} "
        f"({rows[0]['parameters'] / 1e6:.1f}M params), B={args.batch}, "
        f"micro-batch {args.minibatch}, {args.threads} thread(s), float32, CPU"
    )
    print(
        "| configuration | trained params | static MiB | peak RSS MiB | above imports MiB "
        "| peak / full |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['peak_rss_bytes'] / full:.2f}" if full else "-"
        row["peak_over_full"] = row["peak_rss_bytes"] / full if full else None
        print(
            f"| {row['config']} | {row['trained_parameters'] / 1e6:.2f}M | "
            f"{row['static_bytes'] / 2**20:.0f} | {row['peak_rss_bytes'] / 2**20:.0f} | "
            f"{(row['peak_rss_bytes'] - row['imports_rss_bytes']) / 2**20:.0f} | {ratio} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "benchmark": "peak_memory",
            "machine": platform.platform(),
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2, default=str))  # fmt: skip
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
