"""Steps/s of ``gym.make_vec("LMToken-v0")`` against ``model.generate`` tokens/s, same model/batch.

A token-env step must do what one decoding step of ``generate`` does: one incremental forward of
the (reference) model over one new token per sequence, with a KV cache kept across steps. So
the baseline is Hugging Face ``generate`` on the same default model, at the same batch size, with
sampling and its KV cache, over the same prompts, timed in the same run. One env step of each of
the B envs appends one token, so env tokens/s = B × batch steps/s. Goal: env / generate >= 0.9
at B = 64.

Both sides also run without the cache (``use_cache=False`` for ``generate``;
``reference_cache=False`` for the env, which re-encodes every prefix each step) to show what the
cache buys. The env keeps a table of encoded prompts (a reset to a known prompt runs no
forward), which ``generate`` has no equivalent of; the "table off" rows shrink that table to one
prompt, so every reset encodes its prompt as ``generate`` does.

The env's actions are uniform over the tokens its action mask allows, drawn from a seeded
generator before timing (so the agent's cost is not counted); ``generate`` is given
``min_new_tokens = max_new_tokens`` so both sides produce episodes of the same length (the
random actions pick EOS about once per 240 tokens, so a few env episodes end early and reset
on their own). Each figure is the best of ``--repeats`` timed runs.

    python benchmarks/token_env_throughput.py --json bench-results/token_env_throughput.json

``--model gpt2-small`` runs the same on a randomly initialised 124M GPT-2 with a 50,257-token
BPE (built once by ``benchmarks/gpt2_small.py``); ``--model DIR`` on any saved causal LM.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import lmgym  # noqa: F401  (registers LMToken-v0)
from lmgym.envs.token_vector import LMTokenVectorEnv
from lmgym.models.padding import right_to_left_padding

VARIANTS = {  # name: (KV cache, table of encoded prompts)
    "cache": (True, True),
    "cache_no_prompt_table": (True, False),
    "no_cache": (False, False),
}


def make_envs(
    batch: int, cache: bool, prompt_table: bool, args: argparse.Namespace
) -> LMTokenVectorEnv:
    envs = gym.make_vec(
        "LMToken-v0",
        num_envs=batch,
        model=model_dir(args.model),
        reference_cache=cache,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
    )
    if not prompt_table:
        envs.batch.reference.prompt_cache_bytes = 0  # keeps one prompt: resets re-encode
    return envs


def model_dir(name: str) -> Path | None:
    """The model's directory: None (the embedded default), the 124M benchmark model, or a path."""
    if name == "default":
        return None
    if name == "gpt2-small":
        from gpt2_small import gpt2_small_dir

        return gpt2_small_dir()
    return Path(name)


def random_actions(envs: LMTokenVectorEnv, steps: int, seed: int) -> list[np.ndarray]:
    """Uniform over each env's allowed tokens (the default mask is the same in every state)."""
    allowed = np.flatnonzero(envs.action_masks()[0])
    rng = np.random.default_rng(seed)
    return [rng.choice(allowed, size=envs.num_envs) for _ in range(steps)]


def time_env(envs: LMTokenVectorEnv, actions: list[np.ndarray], seed: int) -> float:
    envs.reset(seed=seed)
    start = time.perf_counter()
    for batch in actions:
        envs.step(batch)
    return time.perf_counter() - start


def time_generate(envs: LMTokenVectorEnv, rounds: int, cache: bool, seed: int) -> float:
    lm, n_new = envs.models, envs.max_new_tokens
    obs, _ = envs.reset(seed=seed)
    prompt = torch.from_numpy(obs[:, : envs.batch.max_prompt_tokens])
    left_ids, left_mask = right_to_left_padding(
        prompt, (prompt != lm.pad_token_id).long(), lm.pad_token_id
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    for _ in range(rounds):
        with torch.inference_mode():
            out = lm.ref_model.generate(  # type: ignore[operator]
                input_ids=left_ids,
                attention_mask=left_mask,
                do_sample=True,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                use_cache=cache,
                pad_token_id=lm.pad_token_id,
                eos_token_id=lm.eos_token_id,
            )
        assert out.shape[1] == left_ids.shape[1] + n_new, out.shape
    return time.perf_counter() - start


def profile_env(envs: LMTokenVectorEnv, actions: list[np.ndarray], seed: int, top: int) -> str:
    profiler = cProfile.Profile()
    envs.reset(seed=seed)
    profiler.enable()
    for batch in actions:
        envs.step(batch)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default, gpt2-small, or a dir")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per timed run (≈)")
    parser.add_argument("--max-prompt-tokens", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-uncached", action="store_true", help="skip the no-cache runs")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest batch")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows: list[dict[str, Any]] = []
    profile_text = ""
    for batch in args.batches:
        row: dict[str, Any] = {"batch": batch}
        for key, (cache, table) in VARIANTS.items():
            if args.no_uncached and not cache:
                continue
            envs = make_envs(batch, cache, table, args)
            episodes = max(1, round(args.tokens / (batch * args.max_new_tokens)))
            steps = episodes * args.max_new_tokens
            actions = random_actions(envs, steps, args.seed)
            env_s = min(time_env(envs, actions, args.seed) for _ in range(args.repeats))
            gen_s = min(
                time_generate(envs, episodes, cache, args.seed) for _ in range(args.repeats)
            )
            tokens = steps * batch
            row[key] = {
                "tokens": tokens,
                "env_batch_steps_per_s": steps / env_s,
                "env_tokens_per_s": tokens / env_s,
                "generate_tokens_per_s": tokens / gen_s,
                "ratio_env_over_generate": gen_s / env_s,
            }
            if key == "cache" and args.profile and batch == max(args.batches):
                profile_text = profile_env(envs, actions, args.seed, top=25)
        if "no_cache" in row:
            row["cache_speedup_env"] = (
                row["cache"]["env_tokens_per_s"] / row["no_cache"]["env_tokens_per_s"]
            )
            row["cache_speedup_generate"] = (
                row["cache"]["generate_tokens_per_s"] / row["no_cache"]["generate_tokens_per_s"]
            )
        rows.append(row)

    print(
        f"LMToken-v0 make_vec vs generate, {args.model} model, prompt {args.max_prompt_tokens} + "
        f"{args.max_new_tokens} new tokens (torch threads={args.threads})"
    )
    print(
        "| batch | KV cache | prompt table | env batch steps/s | env tokens/s "
        "| generate tokens/s | env/generate |"
    )
    print(
        "|------:|:--------:|:------------:|------------------:|-------------:"
        "|------------------:|-------------:|"
    )
    labels = {"cache": ("on", "on"), "cache_no_prompt_table": ("on", "off"),
              "no_cache": ("off", "-")}  # fmt: skip
    for r in rows:
        for key, (label, table) in labels.items():
            if key not in r:
                continue
            c = r[key]
            print(
                f"| {r['batch']:>5} | {label:^8} | {table:^12} | "
                f"{c['env_batch_steps_per_s']:>17.0f} | "
                f"{c['env_tokens_per_s']:>12.0f} | {c['generate_tokens_per_s']:>17.0f} | "
                f"{c['ratio_env_over_generate']:>12.2f} |"
            )
    if any("no_cache" in r for r in rows):
        print("\nWhat the cache buys (tokens/s with / without):")
        for r in rows:
            print(
                f"- batch {r['batch']}: env {r['cache_speedup_env']:.2f}x, "
                f"generate {r['cache_speedup_generate']:.2f}x"
            )
    if profile_text:
        print(f"\ncProfile of the env at batch {max(args.batches)} (top by own time):")
        print(profile_text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "token_env_throughput",
            "machine": platform.platform(),
            "threads": args.threads,
            "model": args.model,
            "max_prompt_tokens": args.max_prompt_tokens,
            "max_new_tokens": args.max_new_tokens,
            "rows": rows,
            "profile": profile_text,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
