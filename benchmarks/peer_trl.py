"""lmgym's PPO and A2C with the LM policy against TRL's GRPO and RLOO, on the same work.

Every system fine-tunes the embedded default model on the default task: the 45 training prompts,
the lexicon sentiment reward, completions of up to 16 tokens sampled at temperature 1.0, a
budget of 4,096 completions, the same β (``--kl-coef``), one torch thread, each run in its own
process. Runs are interleaved (A B C D, then A B C D again with the next seed) so a change in
the machine's load hits every system alike. Measured per run:

- completions per CPU-second with the policy held still (learning rate 0: every pass of a
  training step still runs, but the completions keep the base model's lengths, so the figure
  compares the systems' cost and not how their policies happen to move);
- completions per CPU-second while learning, and the CPU-seconds until the held-out reward
  first reaches ``--target`` (0.3);
- after training: the held-out reward r_φ, its KL to the base model and its fluency;
- the process's peak resident memory.

Time is the process's CPU time (``time.process_time``), which sharing the machine with other
jobs disturbs far less than wall time; evaluation is excluded from it.

One evaluator serves every system (:class:`Evaluator`): it samples the trained LM itself at
temperature 1 on the 36 held-out prompts × ``--eval-samples`` and scores the completions with
the env's own reward (:func:`lmgym.evaluation.evaluate_actions_on_prompts`), so reward, KL and
fluency are measured identically. It runs every ``--eval-every`` completions, on its own random
stream, so it never changes a run's training draws.

What β means in each system (one number, ``--kl-coef``, is handed to all four):

- lmgym (PPO, A2C): in the env's reward, ``R = r_φ − β · Σ_t k1_t``, with
  ``k1_t = log π_θ(y_t | ·) − log π_ref(y_t | ·)`` summed over the completion's tokens.
- TRL RLOO: the same sequence-level k1 penalty, subtracted from the reward before the
  leave-one-out baseline.
- TRL GRPO: not in the reward but in the loss: ``β · k3_t`` per token,
  ``k3 = exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1``, averaged over tokens like the policy term
  (``loss_type="dapo"``). The same β therefore weighs a per-token mean in GRPO against a
  per-sequence sum in the other three.

The rollout shapes. lmgym's PPO collects ``n_envs=256, n_steps=1`` from
``gym.make_vec("LMBandit-v0", 256)``: a bandit episode is one step, so this rollout is the same
256 samples as ``n_envs=16, n_steps=16`` (GAE is trivial on one-step episodes), but the policy
samples all of them in one ``generate`` call and the env scores them in one reference forward.
It updates in minibatches of 64 with ``--ppo-epochs`` passes (1 by default: every completion is
used in one gradient step, as in GRPO with its default μ = 1). A2C steps on every 64 completions
(``n_envs=64, n_steps=1``), as GRPO and RLOO do (``per_device_train_batch_size=64``, 8
completions per prompt). ``--systems ppo_2ep`` adds PPO with two passes.

lmgym's own GRPO and RLOO (``lmgym.algorithms``) are set up as TRL's: groups of 8 from
``make_vec(..., group_size=8)``, 64 completions per step, one pass, TRL's learning rates.
``lmgym_grpo`` keeps the KL in the env's reward (lmgym's default); ``lmgym_grpo_k3`` uses
TRL's GRPO objective instead (per-token ratios, the token mean, ``β · k3`` per token in the
loss, the env's β at 0), so the two lmgym curves show what the KL's place alone changes. A
table of learning curves per completion (mean ± 95% t-interval over seeds) pairs each with its
TRL counterpart.

TRL is optional. Install it next to lmgym (after torch)::

    pip install -e '.[peers]'
    python benchmarks/peer_trl.py --json bench-results/peer_trl.json

Without TRL the script says so and exits with status 0. ``--systems ppo a2c`` runs lmgym only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEMS = ("ppo", "a2c", "grpo", "rloo", "ppo_2ep", "lmgym_grpo", "lmgym_grpo_k3", "lmgym_rloo")
TRL_SYSTEMS = ("grpo", "rloo")
DEFAULT_LR = {
    "ppo": 3e-4,
    "ppo_2ep": 3e-4,
    "a2c": 3e-4,
    "grpo": 3e-4,
    "rloo": 1e-3,
    "lmgym_grpo": 3e-4,  # TRL's GRPO rate, as the two are compared per completion
    "lmgym_grpo_k3": 3e-4,
    "lmgym_rloo": 1e-3,  # TRL's RLOO rate
}
# lmgym's GRPO / RLOO set up as TRL's are: TRL's counterpart of each, for the curve table.
TRL_COUNTERPART = {"lmgym_grpo": "grpo", "lmgym_grpo_k3": "grpo", "lmgym_rloo": "rloo"}
TRL_BATCH = 64  # completions per optimizer step of GRPO / RLOO (8 prompts x 8 completions)
TRL_GENERATIONS = 8


@dataclass(frozen=True)
class Work:
    """What every system is asked to do (the same for all)."""

    completions: int
    still_completions: int
    kl_coef: float
    max_new_tokens: int
    temperature: float
    eval_every: int
    eval_samples: int
    target: float
    trl_lr_schedule: str = "linear"


# ----------------------------------------------------------------------------- evaluation


class Evaluator:
    """Held-out reward, KL and fluency of an LM, identical for every system.

    The LM is sampled at temperature 1 (``generate`` with the model itself) on the held-out
    prompts, and the completions are scored by an ``LMBandit-v0`` env with the run's β whose
    reference is the base model and whose π_θ is the LM being evaluated. Its CPU time is kept
    in :attr:`cpu_s`, so training time can leave it out.
    """

    def __init__(self, work: Work, seed: int) -> None:
        import gymnasium as gym

        from lmgym.models.corpus import prompts

        self.work = work
        self.seed = seed
        self.env = gym.make_vec("LMBandit-v0", num_envs=1, kl_coef=work.kl_coef).unwrapped
        self.prompts = prompts("test")
        self.cpu_s = 0.0
        self.curve: list[dict[str, float]] = []

    def __call__(self, lm: Any, completions: int, train_cpu_s: float) -> dict[str, float]:
        import numpy as np
        import torch

        from lmgym.agents import lm_logprobs
        from lmgym.evaluation import evaluate_actions_on_prompts
        from lmgym.models.generation import DecodingConfig, generate

        started = time.process_time()
        models = self.env.models
        decoding = DecodingConfig(
            max_new_tokens=self.work.max_new_tokens, temperature=self.work.temperature
        )

        def act(observations: np.ndarray) -> np.ndarray:
            ids = torch.from_numpy(observations)
            out = generate(
                lm, ids, (ids != models.pad_token_id).long(), decoding,
                eos_token_id=models.eos_token_id, pad_token_id=models.pad_token_id,
            )  # fmt: skip
            return out.completion_ids.numpy()

        was_training = lm.training
        lm.eval()
        with torch.random.fork_rng():  # the evaluation's draws never move training's
            torch.manual_seed(self.seed + 10_000)
            self.env.attach_policy(lm_logprobs(lm, models))
            result = evaluate_actions_on_prompts(
                self.env, self.prompts, act, samples_per_prompt=self.work.eval_samples
            )
        lm.train(was_training)
        point = {
            "completions": completions,
            "train_cpu_s": train_cpu_s,
            "reward_model": result.reward_model,
            "kl": result.kl,
            "fluency": result.fluency,
        }
        self.curve.append(point)
        self.cpu_s += time.process_time() - started
        return point


class Clock:
    """Training CPU-seconds: process CPU time since start, less the evaluator's."""

    def __init__(self, evaluator: Evaluator | None) -> None:
        self.evaluator = evaluator
        self.started = time.process_time()

    def train_cpu_s(self) -> float:
        spent = time.process_time() - self.started
        return spent - (self.evaluator.cpu_s if self.evaluator is not None else 0.0)


# ----------------------------------------------------------------------------- lmgym


def run_lmgym(system: str, work: Work, seed: int, still: bool, lr: float) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback

    import lmgym  # noqa: F401  (registers LMBandit-v0)
    from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
    from lmgym.algorithms import GRPO, RLOO
    from lmgym.seeding import set_seed

    set_seed(seed)
    grouped = system in TRL_COUNTERPART
    n_envs = 64 if system == "a2c" or grouped else 256
    group_size = TRL_GENERATIONS if grouped else 1
    # lmgym_grpo_k3 puts the KL in the loss, as TRL's GRPO does: the env's own β is then 0.
    env_beta = 0.0 if system == "lmgym_grpo_k3" else work.kl_coef
    vec = SB3VecEnv(
        gym.make_vec("LMBandit-v0", num_envs=n_envs, kl_coef=env_beta, group_size=group_size)
    )
    vec.seed(seed)
    kwargs = lm_policy_kwargs(vec, optimizer_class=torch.optim.Adam)
    common: dict[str, Any] = dict(seed=seed, learning_rate=0.0 if still else lr)
    if system == "a2c":
        model = A2C(LMActorCriticPolicy, vec, n_steps=1, gamma=1.0, policy_kwargs=kwargs, **common)
    elif system == "lmgym_grpo":  # TRL's defaults: one pass (μ = 1), ε = 0.2, std scaling
        model = GRPO(LMActorCriticPolicy, vec, n_steps=1, batch_size=TRL_BATCH, n_epochs=1,
                     clip_range=0.2, policy_kwargs=kwargs, **common)  # fmt: skip
    elif system == "lmgym_grpo_k3":  # TRL's GRPO objective: per-token ratios, token mean, β·k3
        model = GRPO(LMActorCriticPolicy, vec, n_steps=1, batch_size=TRL_BATCH, n_epochs=1,
                     clip_range=0.2, ratio="token", loss_aggregation="token", kl_in_loss=True,
                     kl_coef=work.kl_coef, policy_kwargs=kwargs, **common)  # fmt: skip
    elif system == "lmgym_rloo":  # TRL's defaults: one pass, REINFORCE with the LOO baseline
        model = RLOO(LMActorCriticPolicy, vec, n_steps=1, batch_size=TRL_BATCH, n_epochs=1,
                     policy_kwargs=kwargs, **common)  # fmt: skip
    else:
        epochs = 2 if system == "ppo_2ep" else 1
        model = PPO(LMActorCriticPolicy, vec, n_steps=1, batch_size=64, n_epochs=epochs,
                    gamma=1.0, policy_kwargs=kwargs, **common)  # fmt: skip
    model.policy.attach_to(vec)
    lm = model.policy.lm
    evaluator = None if still else Evaluator(work, seed)

    class EvalEvery(BaseCallback):
        """Evaluate between rollouts, once per ``eval_every`` completions trained on."""

        def __init__(self, clock: Clock) -> None:
            super().__init__()
            self.clock = clock
            self.next_at = work.eval_every

        def _on_rollout_start(self) -> None:
            if evaluator is not None and self.num_timesteps >= self.next_at:
                evaluator(lm, self.num_timesteps, self.clock.train_cpu_s())
                self.next_at += work.eval_every

        def _on_step(self) -> bool:
            return True

    budget = work.still_completions if still else work.completions
    if evaluator is not None:
        evaluator(lm, 0, 0.0)
    clock = Clock(evaluator)
    model.learn(budget, callback=EvalEvery(clock))
    train_cpu = clock.train_cpu_s()
    if evaluator is not None:
        evaluator(lm, int(model.num_timesteps), train_cpu)
    return finish(int(model.num_timesteps), train_cpu, evaluator)


# ----------------------------------------------------------------------------- TRL


def run_trl(system: str, work: Work, seed: int, still: bool, lr: float) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from lmgym.models.corpus import prompts
    from lmgym.models.loading import DEFAULT_MODEL_DIR
    from lmgym.rewards import LexiconSentimentReward

    lexicon = LexiconSentimentReward()

    def lexicon_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return lexicon(prompts, completions)

    budget = work.still_completions if still else work.completions
    config_class, trainer_class = (
        (GRPOConfig, GRPOTrainer) if system == "grpo" else (RLOOConfig, RLOOTrainer)
    )
    out = tempfile.mkdtemp(prefix=f"peer-{system}-")
    config = config_class(
        output_dir=out,
        use_cpu=True,
        seed=seed,
        learning_rate=0.0 if still else lr,
        beta=work.kl_coef,
        per_device_train_batch_size=TRL_BATCH,
        num_generations=TRL_GENERATIONS,
        max_completion_length=work.max_new_tokens,
        temperature=work.temperature,
        max_steps=budget // TRL_BATCH,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        dataloader_num_workers=0,
        lr_scheduler_type=work.trl_lr_schedule,
    )
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    dataset = Dataset.from_dict({"prompt": prompts("train")})
    trainer = trainer_class(
        model=str(DEFAULT_MODEL_DIR),
        reward_funcs=[lexicon_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    evaluator = None if still else Evaluator(work, seed)
    clock_box: list[Clock] = []

    class EvalEvery(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            done = state.global_step * TRL_BATCH
            if evaluator is not None and done % work.eval_every == 0 and done < budget:
                evaluator(trainer.model, done, clock_box[0].train_cpu_s())

    trainer.add_callback(EvalEvery())
    if evaluator is not None:
        evaluator(trainer.model, 0, 0.0)
    clock_box.append(Clock(evaluator))
    trainer.train()
    train_cpu = clock_box[0].train_cpu_s()
    completions = trainer.state.global_step * TRL_BATCH
    if evaluator is not None:
        evaluator(trainer.model, completions, train_cpu)
    return finish(completions, train_cpu, evaluator)


# ----------------------------------------------------------------------------- one run


def finish(completions: int, train_cpu: float, evaluator: Evaluator | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "completions": completions,
        "train_cpu_s": train_cpu,
        "completions_per_cpu_s": completions / train_cpu,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if evaluator is not None:
        result["curve"] = evaluator.curve
        result["after"] = evaluator.curve[-1]
    return result


def worker(args: argparse.Namespace, work: Work) -> None:
    import torch

    torch.set_num_threads(1)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.worker]
    run = run_trl if args.worker in TRL_SYSTEMS else run_lmgym
    result = run(args.worker, work, args.seed, args.phase == "still", lr)
    result.update(system=args.worker, seed=args.seed, phase=args.phase, lr=lr)
    Path(args.out).write_text(json.dumps(result))


def spawn(args: argparse.Namespace, system: str, seed: int, phase: str) -> dict[str, Any]:
    """Run one (system, seed, phase) in a fresh process with one thread; return its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, __file__, "--worker", system, "--seed", str(seed), "--phase", phase,
            "--out", str(out), "--completions", str(args.completions),
            "--still-completions", str(args.still_completions), "--kl-coef", str(args.kl_coef),
            "--eval-every", str(args.eval_every), "--eval-samples", str(args.eval_samples),
            "--target", str(args.target), "--trl-lr-schedule", args.trl_lr_schedule,
        ]  # fmt: skip
        lr = args.lr_overrides.get(system)
        if lr is not None:
            command += ["--lr", str(lr)]
        thread_env = {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env = {**os.environ, **thread_env}
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"{system} seed {seed} ({phase}) failed with status {done.returncode}")
        return json.loads(out.read_text())


# ----------------------------------------------------------------------------- summary


def cpu_to_target(curve: list[dict[str, float]], target: float) -> float | None:
    """Training CPU-seconds at the first evaluation whose reward reached ``target``."""
    for point in curve:
        if point["reward_model"] >= target:
            return point["train_cpu_s"]
    return None


def mean(values: list[float | None]) -> float | None:
    """Mean of the values, or None if any run never got there (reported as not reached)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def summarise(runs: list[dict[str, Any]], systems: list[str], target: float) -> list[dict]:
    rows = []
    for system in systems:
        still = [r for r in runs if r["system"] == system and r["phase"] == "still"]
        learn = [r for r in runs if r["system"] == system and r["phase"] == "learn"]
        rows.append(
            {
                "system": system,
                "lr": learn[0]["lr"] if learn else None,
                "still_completions_per_cpu_s": mean([r["completions_per_cpu_s"] for r in still]),
                "learn_completions_per_cpu_s": mean([r["completions_per_cpu_s"] for r in learn]),
                "cpu_s_to_target": mean([cpu_to_target(r["curve"], target) for r in learn]),
                "cpu_s_to_target_per_seed": [cpu_to_target(r["curve"], target) for r in learn],
                "after_reward_model": mean([r["after"]["reward_model"] for r in learn]),
                "after_kl": mean([r["after"]["kl"] for r in learn]),
                "after_fluency": mean([r["after"]["fluency"] for r in learn]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in still + learn),
            }
        )
    grpo = next((r for r in rows if r["system"] == "grpo"), None)
    for row in rows:
        for key in ("still_completions_per_cpu_s", "learn_completions_per_cpu_s"):
            ok = grpo is not None and row[key] is not None and grpo[key]
            row[f"{key}_vs_grpo"] = row[key] / grpo[key] if ok else None
        ok = grpo is not None and row["cpu_s_to_target"] and grpo["cpu_s_to_target"]
        # > 1: reaches the target in fewer CPU-seconds than GRPO.
        row["speedup_to_target_vs_grpo"] = (
            grpo["cpu_s_to_target"] / row["cpu_s_to_target"] if ok else None
        )
    return rows


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "not reached" if value is None else f"{value:{spec}}{suffix}"


def print_table(rows: list[dict], target: float) -> None:
    print(
        f"| system | lr | compl/CPU-s held still (×GRPO) | compl/CPU-s learning (×GRPO) | "
        f"CPU-s to r_φ ≥ {target} (GRPO/this) | r_φ after | KL after | fluency | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['system']} | {r['lr']:g} | "
            f"{fmt(r['still_completions_per_cpu_s'], '.1f')} "
            f"({fmt(r['still_completions_per_cpu_s_vs_grpo'], '.2f', '×')}) | "
            f"{fmt(r['learn_completions_per_cpu_s'], '.1f')} "
            f"({fmt(r['learn_completions_per_cpu_s_vs_grpo'], '.2f', '×')}) | "
            f"{fmt(r['cpu_s_to_target'], '.1f')} "
            f"({fmt(r['speedup_to_target_vs_grpo'], '.2f', '×')}) | "
            f"{fmt(r['after_reward_model'], '+.3f')} | {fmt(r['after_kl'], '.2f')} | "
            f"{fmt(r['after_fluency'], '.0%')} | {r['peak_rss_mb']:.0f} |"
        )


def curve_rows(runs: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    """Held-out r_φ per completion of each lmgym GRPO/RLOO run next to TRL's, over seeds.

    One row per (pair, evaluation point): each system's mean over seeds and the half-width of
    its 95% t-interval, and whether the two intervals overlap ("agree within the seed CI").
    """
    from scipy.stats import t as student_t

    def mean_ci(values: list[float]) -> tuple[float, float]:
        n = len(values)
        centre = sum(values) / n
        if n < 2:
            return centre, float("nan")
        spread = (sum((v - centre) ** 2 for v in values) / (n - 1)) ** 0.5
        return centre, float(student_t.ppf(0.975, n - 1)) * spread / n**0.5

    def curves(system: str) -> dict[int, list[float]]:
        points: dict[int, list[float]] = {}
        for run in runs:
            if run["system"] == system and run["phase"] == "learn":
                for point in run["curve"]:
                    points.setdefault(int(point["completions"]), []).append(point["reward_model"])
        return points

    rows = []
    for ours, theirs in TRL_COUNTERPART.items():
        if ours not in systems or theirs not in systems:
            continue
        mine, peer = curves(ours), curves(theirs)
        for completions in sorted(set(mine) & set(peer)):
            (m, m_ci), (p, p_ci) = mean_ci(mine[completions]), mean_ci(peer[completions])
            rows.append(
                {
                    "pair": f"{ours} vs {theirs}",
                    "completions": completions,
                    "lmgym": m,
                    "lmgym_ci": m_ci,
                    "trl": p,
                    "trl_ci": p_ci,
                    "agree": abs(m - p) <= m_ci + p_ci,
                }
            )
    return rows


def print_curves(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\nHeld-out r_φ per completion (mean ± 95% CI over seeds)")
    print("| pair | completions | lmgym | TRL | intervals overlap |")
    print("|---|---:|---:|---:|:---:|")
    for r in rows:
        print(
            f"| {r['pair']} | {r['completions']} | {r['lmgym']:+.3f} ± {r['lmgym_ci']:.3f} | "
            f"{r['trl']:+.3f} ± {r['trl_ci']:.3f} | {'yes' if r['agree'] else 'no'} |"
        )


def parse_lr_overrides(items: list[str]) -> dict[str, float]:
    overrides = {}
    for item in items:
        system, _, value = item.partition("=")
        if system not in SYSTEMS or not value:
            raise SystemExit(f"--lr-for {item!r}: expected SYSTEM=LR with SYSTEM in {SYSTEMS}")
        overrides[system] = float(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["ppo", "a2c", "grpo", "rloo"],
                        choices=SYSTEMS)  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--completions", type=int, default=4096, help="training budget")
    parser.add_argument("--still-completions", type=int, default=1024,
                        help="completions of the held-still (learning rate 0) run")  # fmt: skip
    parser.add_argument("--kl-coef", type=float, default=0.05, help="β, handed to every system")
    parser.add_argument("--eval-every", type=int, default=256, help="completions between evals")
    parser.add_argument("--eval-samples", type=int, default=8, help="samples per held-out prompt")
    parser.add_argument("--target", type=float, default=0.3, help="held-out r_φ to reach")
    parser.add_argument("--lr-for", nargs="*", default=[], metavar="SYSTEM=LR",
                        help=f"learning rates other than the defaults {DEFAULT_LR}")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--trl-lr-schedule", choices=["linear", "constant"], default="linear",
                        help="TRL's learning-rate schedule: its default, linear decay to 0 over "
                        "the run, or constant, as lmgym's algorithms keep it")  # fmt: skip
    # One run, in this process (what the parent spawns).
    parser.add_argument("--worker", choices=SYSTEMS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["still", "learn"], default="learn",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Work(
        completions=args.completions,
        still_completions=args.still_completions,
        kl_coef=args.kl_coef,
        max_new_tokens=16,
        temperature=1.0,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        target=args.target,
        trl_lr_schedule=args.trl_lr_schedule,
    )
    if args.worker is not None:
        worker(args, work)
        return

    if any(s in TRL_SYSTEMS for s in args.systems) and importlib.util.find_spec("trl") is None:
        print(
            "TRL is not installed, so GRPO and RLOO cannot run. Install the peers extra next to "
            "lmgym (after torch): pip install -e '.[peers]'. Or run lmgym alone: "
            "--systems ppo a2c."
        )
        return
    for budget in (args.completions, args.still_completions):
        if budget % 256:
            raise SystemExit(f"budgets must be multiples of 256 completions; got {budget}")
    args.lr_overrides = parse_lr_overrides(args.lr_for)
    runs = []
    started = time.perf_counter()
    for seed in args.seeds:  # interleaved: every system once per seed, in turn
        for system in args.systems:
            for phase in ("still", "learn"):
                runs.append(spawn(args, system, seed, phase))
                r = runs[-1]
                print(
                    f"[{time.perf_counter() - started:6.0f}s] {system} seed {seed} {phase}: "
                    f"{r['completions_per_cpu_s']:.1f} completions/CPU-s, "
                    f"RSS {r['peak_rss_mb']:.0f} MB"
                    + (f", r_φ after {r['after']['reward_model']:+.3f}" if "after" in r else ""),
                    flush=True,
                )
    rows = summarise(runs, args.systems, args.target)
    print(f"\n{args.completions} completions, β={args.kl_coef}, seeds {args.seeds}, 1 thread each")
    print_table(rows, args.target)
    curves = curve_rows(runs, args.systems)
    print_curves(curves)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "peer_trl",
            "machine": platform.platform(),
            "work": vars(work),
            "seeds": args.seeds,
            "rows": rows,
            "curves": curves,
            "runs": runs,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
