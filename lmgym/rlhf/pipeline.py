"""``lmgym rlhf``: the whole RLHF recipe on the embedded default model, measured end to end.

pretrained (the embedded model) → SFT on simulated demonstrations → a reward model trained from
noisy rankings of the SFT model's samples → PPO against that reward model for several KL
coefficients β, PPO-ptx, and DPO on the same preference pairs. Every policy is then evaluated
on held-out prompts with the hidden true score (which the reward model never saw) and the reward
model's score, rated in an Elo table from head-to-head labeler comparisons, and the results go to
``results.md``, ``results.json`` and PNG plots in ``--out`` (see :mod:`lmgym.rlhf.report`).

The default run takes about 4 minutes on one CPU thread (35 s per PPO run); ``--quick``
shrinks every stage to a smoke run of under a minute. Sizes left unset take the default run's
value, or the quick one with ``--quick``; an explicit size always wins.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.agents import lm_logprobs
from lmgym.envs.bandit import LMBanditEnv
from lmgym.models.corpus import generate_corpus, parses
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.lexicon import sentiment
from lmgym.models.loading import DEFAULT_MODEL_DIR, load_model
from lmgym.rlhf.dpo import DPOConfig, run_dpo
from lmgym.rlhf.elo import EloConfig, elo_table, format_elo_table, play_games
from lmgym.rlhf.labelers import BradleyTerryLabeler, true_score
from lmgym.rlhf.learned_reward import LearnedRewardModel
from lmgym.rlhf.ppo_stage import NormalizedReward, PPOStageConfig, PPOStageResult, run_ppo_stage
from lmgym.rlhf.ptx import CorpusBatches, corpus_lm_loss
from lmgym.rlhf.rankings import collect_rankings, preference_pairs
from lmgym.rlhf.report import (
    format_policy_table,
    plot_elo,
    plot_reward_vs_kl,
    plot_rm_vs_true,
    write_md,
)
from lmgym.rlhf.reward_model import RewardModelConfig, train_reward_model
from lmgym.rlhf.sft import SFTConfig, make_demonstrations, run_sft
from lmgym.rlhf.training import check_int, check_positive
from lmgym.seeding import set_seed
from lmgym.torch_threads import set_torch_threads

__all__ = ["RLHFConfig", "PolicyEvaluator", "run_rlhf"]

EVAL_CORPUS_SEED = 1
"""Seed of the held-out reviews the pre-training loss is measured on (pre-training's eval seed)."""

# Stage sizes of the default run and of --quick; RLHFConfig fields left at None take these.
_SIZES: dict[str, tuple[int, int]] = {  # name: (default, quick)
    "demo_candidates": (8, 4),
    "demos_per_prompt": (4, 1),
    "sft_epochs": (3, 1),
    "rm_k": (6, 4),
    "rankings_per_prompt": (8, 1),
    "rm_epochs": (4, 1),
    "ppo_steps": (2048, 128),
    "dpo_epochs": (2, 1),
    "eval_samples": (4, 1),
    "elo_bootstrap": (1000, 100),
}


@dataclass
class RLHFConfig:
    """Settings of ``lmgym rlhf``: the pipeline's options and the size of each stage.

    Attributes:
        out: Directory for results.md, results.json, the PNG plots and the trained models.
        quick: Shrink every stage for a smoke run of about 2 minutes (explicit sizes still win).
        seed: Seeds every stage (sampling, labelers, training) through lmgym.seeding.set_seed.
        threads: torch intra-op threads (1 is fastest for the tiny default model on 2 cores).
        progress: Show a progress bar per stage.
        labeler_temperature: Noise T of the simulated labelers: P(a beats b) = σ((s_a − s_b)/T).
        demo_candidates: SFT: best-of-n samples of the base model a demonstration is picked from
            (None: 8, or 4 with --quick).
        demos_per_prompt: SFT: demonstrations per training prompt (None: 4, or 1 with --quick).
        sft_epochs: SFT: epochs over the demonstrations (None: 3, or 1 with --quick).
        rm_k: Reward model: completions K the labeler ranks per prompt, 2 to 9 (None: 6, or
            4 with --quick).
        rankings_per_prompt: Reward model: rankings per training prompt (None: 8, or 1 with
            --quick).
        rm_epochs: Reward model: epochs over the rankings (None: 4, or 1 with --quick).
        ppo_steps: PPO: env steps (completions) of each PPO run (None: 2048, or 128 with
            --quick).
        kl_coef: PPO: β of the main PPO run and of PPO-ptx.
        kl_sweep: PPO: further β to run PPO with, for the over-optimisation and reward-vs-KL plots.
        ptx_coef: PPO-ptx: γ of the pre-training loss.
        ppo_learning_rate: PPO: Adam learning rate of the policy.
        dpo_beta: DPO: β of the DPO loss.
        dpo_lr: DPO: peak AdamW learning rate.
        dpo_epochs: DPO: epochs over the preference pairs (None: 2, or 1 with --quick).
        eval_samples: Completions per held-out prompt in the evaluation and the Elo games
            (None: 4, or 1 with --quick).
        elo_bootstrap: Bootstrap resamples of the Elo intervals (None: 1000, or 100 with --quick).
    """

    out: Path = Path("rlhf-output")
    quick: bool = False
    seed: int = 0
    threads: int = 1
    progress: bool = True
    labeler_temperature: float = 0.25
    demo_candidates: int | None = None
    demos_per_prompt: int | None = None
    sft_epochs: int | None = None
    rm_k: int | None = None
    rankings_per_prompt: int | None = None
    rm_epochs: int | None = None
    ppo_steps: int | None = None
    kl_coef: float = 0.1
    kl_sweep: list[float] = field(default_factory=lambda: [0.01, 0.5])
    ptx_coef: float = 0.5
    ppo_learning_rate: float = 3e-4
    dpo_beta: float = 0.1
    dpo_lr: float = 5e-4
    dpo_epochs: int | None = None
    eval_samples: int | None = None
    elo_bootstrap: int | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name, (default, quick) in _SIZES.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else default)
            minimum = 0 if name == "elo_bootstrap" else 1
            check_int(name, getattr(self, name), minimum=minimum)
        check_int("seed", self.seed, minimum=0)
        check_int("threads", self.threads, minimum=1)
        if not 2 <= int(self.rm_k or 0) <= 9:
            raise ValueError(
                f"rm_k={self.rm_k} is outside [2, 9]; a ranking needs K >= 2 completions "
                "(InstructGPT used K in [4, 9]), e.g. rm_k=6."
            )
        check_positive("labeler_temperature", self.labeler_temperature, allow_zero=True)
        check_positive("kl_coef", self.kl_coef, allow_zero=True)
        check_positive("ptx_coef", self.ptx_coef)
        check_positive("ppo_learning_rate", self.ppo_learning_rate)
        check_positive("dpo_beta", self.dpo_beta)
        check_positive("dpo_lr", self.dpo_lr)
        self.kl_sweep = list(self.kl_sweep)
        for index, beta in enumerate(self.kl_sweep):
            check_positive(f"kl_sweep[{index}]", beta, allow_zero=True)
        if self.kl_coef in self.kl_sweep:
            raise ValueError(
                f"kl_sweep={self.kl_sweep} repeats kl_coef={self.kl_coef}, which the main PPO "
                "run already uses; list only further β values."
            )


class PolicyEvaluator:
    """Scores policies on fixed held-out prompts: true score, RM score, KL, fluency, LM loss.

    Each policy samples ``samples`` completions per prompt (seeded, so every policy meets the
    same draws of torch's generator). The reward-model score and the KL to the reference come
    from an ``LMBandit-v0`` env built on the reference with the reward model as its reward, so
    they are computed exactly as in PPO training; the env is only scored, never stepped.

    Args:
        reference_dir: The KL reference (the SFT model).
        reward_fn: The reward-model score to report (the standardised RM PPO trains on).
        prompts: Held-out prompts.
        samples: Completions per prompt.
        max_new_tokens: Length limit of a completion.
        seed: Seeds the sampling of every policy.
        true_score_fn: The hidden true score.
        corpus_docs: Held-out pre-training reviews the LM loss is measured on.

    Example:
        >>> evaluator = PolicyEvaluator(DEFAULT_MODEL_DIR, lambda t: t.count("great"),
        ...                             ["the soup was"], samples=2, corpus_docs=8)
        >>> row = evaluator(DEFAULT_MODEL_DIR)
        >>> round(row["kl"], 6), len(row["completions"])
        (0.0, 2)
    """

    def __init__(
        self,
        reference_dir: str | Path,
        reward_fn: Any,
        prompts: Sequence[str],
        *,
        samples: int = 1,
        max_new_tokens: int = 16,
        seed: int = 0,
        true_score_fn: Any = true_score,
        corpus_docs: int = 256,
    ) -> None:
        check_int("samples", samples, minimum=1)
        env = gym.make(
            "LMBandit-v0",
            model=Path(reference_dir),
            reward_fn=reward_fn,
            prompts=list(prompts),
            max_new_tokens=max_new_tokens,
            kl_estimator="full",  # exact per-position KL along the sample: >= 0, low variance
        ).unwrapped
        assert isinstance(env, LMBanditEnv)
        self.env = env
        self.prompts = [p for p in prompts for _ in range(samples)]
        source, pad = self.env.prompt_source, self.env.lm.pad_token_id
        self.observations = np.stack([source.pad(source.encode(p), pad) for p in self.prompts])
        self.decoding = DecodingConfig(max_new_tokens=max_new_tokens)
        self.seed = seed
        self.true_score_fn = true_score_fn
        docs = generate_corpus(corpus_docs, EVAL_CORPUS_SEED)
        tokenizer = self.env.lm.tokenizer
        self.corpus = CorpusBatches(docs, tokenizer, batch_size=len(docs)).next()

    def __call__(self, model_dir: str | Path) -> dict[str, Any]:
        """Means over the prompts' samples, plus the completions themselves (for Elo games)."""
        setup = self.env.lm
        model, tokenizer = load_model(model_dir)
        if tokenizer.get_vocab() != setup.tokenizer.get_vocab():
            raise ValueError(
                f"the policy in {str(model_dir)!r} has another tokenizer than the reference "
                "model; its token ids would mean other words to the reference. Evaluate "
                "policies fine-tuned from the same base model."
            )
        ids = torch.from_numpy(self.observations)
        set_seed(self.seed)
        sampled = generate(
            model,
            ids,
            (ids != setup.pad_token_id).long(),
            self.decoding,
            eos_token_id=setup.eos_token_id,
            pad_token_id=setup.pad_token_id,
        )
        self.env.attach_policy(lm_logprobs(model, setup))
        batch = self.env.rewarder(
            self.prompts, self.observations, sampled.completion_ids.numpy(), update_controller=False
        )
        self.env.attach_policy(None)
        completions = batch.completions
        truth = np.asarray(self.true_score_fn(self.prompts, completions), dtype=float)
        fluent = [
            parses(f"{p} {c}".strip(), allow_incomplete=True)
            for p, c in zip(self.prompts, completions, strict=True)
        ]
        with torch.inference_mode():
            corpus_loss = float(corpus_lm_loss(model, *self.corpus))
        n = len(self.prompts)
        return {
            "true_score": float(truth.mean()),
            "true_score_se": float(truth.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "rm_score": float(batch.reward_model.mean()),
            "rm_score_se": float(batch.reward_model.std(ddof=1) / np.sqrt(n))
            if n > 1
            else float("nan"),
            "sentiment": float(np.mean([sentiment(c) for c in completions])),
            "fluency": float(np.mean(fluent)),
            "kl": float(batch.kl.mean()),
            "corpus_loss": corpus_loss,
            "completions": list(completions),
        }


class _Timer:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - started, 2)
        print(f"[lmgym rlhf] {stage}: {self.seconds[stage]:.1f} s", flush=True)


def _gain_check(policies: dict[str, dict[str, Any]], a: str, b: str, key: str) -> tuple[str, bool]:
    """``(text, passed)``: does ``a`` beat ``b`` on ``key`` by more than 2 standard errors?"""
    diff = policies[a][key] - policies[b][key]
    se = float(np.hypot(policies[a][f"{key}_se"], policies[b][f"{key}_se"]))
    name = {"true_score": "true score", "rm_score": "RM score"}[key]
    text = f"{a} raises the {name} over {b}: {diff:+.3f} (2 SE = {2 * se:.3f})"
    return text, bool(diff > 2 * se)


def run_rlhf(config: RLHFConfig) -> dict[str, Any]:
    """Run pretrained → SFT → RM → PPO (several β), PPO-ptx, DPO; evaluate, rate, report.

    Returns the dict that is also written to ``results.json``.
    """
    started = time.perf_counter()
    set_torch_threads(config.threads)
    set_seed(config.seed)
    out = config.out
    models = out / "models"
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    labeler = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed)
    train_prompts, test_prompts = corpus_prompts("train"), corpus_prompts("test")
    assert config.demos_per_prompt and config.demo_candidates and config.sft_epochs
    assert config.rm_k and config.rankings_per_prompt and config.rm_epochs and config.ppo_steps
    assert config.dpo_epochs and config.eval_samples and config.elo_bootstrap is not None

    with timer("SFT"):
        demos = make_demonstrations(
            DEFAULT_MODEL_DIR,
            train_prompts * config.demos_per_prompt,
            labeler,
            n_candidates=config.demo_candidates,
            seed=config.seed,
        )
        sft_config = SFTConfig(
            out=models / "sft", epochs=config.sft_epochs, seed=config.seed, progress=config.progress
        )
        sft_dir = run_sft(sft_config, demos, DEFAULT_MODEL_DIR)

    with timer("reward model"):
        rankings = collect_rankings(
            sft_dir, train_prompts * config.rankings_per_prompt, config.rm_k, labeler, config.seed
        )
        heldout = collect_rankings(sft_dir, test_prompts, config.rm_k, labeler, config.seed + 1)
        rm_config = RewardModelConfig(
            out=models / "reward_model",
            epochs=config.rm_epochs,
            seed=config.seed,
            progress=config.progress,
        )
        rm_result = train_reward_model(rm_config, rankings, sft_dir, heldout=heldout)
        reward = NormalizedReward.fit(
            LearnedRewardModel(rm_result.path, policy_tokenizer=sft_dir),
            [r.prompt for r in rankings for _ in r.completions],
            [c for r in rankings for c in r.completions],
        )

    runs: dict[str, PPOStageResult] = {}
    for index, beta in enumerate([config.kl_coef, *config.kl_sweep]):
        name = "PPO" if index == 0 else f"PPO β={beta:g}"
        with timer(f"PPO β={beta:g}"):
            ppo_config = PPOStageConfig(
                steps=config.ppo_steps,
                kl_coef=beta,
                learning_rate=config.ppo_learning_rate,
                out=models / f"ppo_kl{beta:g}",
                seed=config.seed,
                progress=config.progress,
            )
            runs[name] = run_ppo_stage(ppo_config, reward, sft_dir)
    with timer("PPO-ptx"):
        ptx_config = PPOStageConfig(
            steps=config.ppo_steps,
            kl_coef=config.kl_coef,
            ptx_coef=config.ptx_coef,
            learning_rate=config.ppo_learning_rate,
            out=models / "ppo_ptx",
            seed=config.seed,
            progress=config.progress,
        )
        runs["PPO-ptx"] = run_ppo_stage(ptx_config, reward, sft_dir)

    with timer("DPO"):
        pairs = preference_pairs(rankings)
        dpo_config = DPOConfig(
            beta=config.dpo_beta,
            lr=config.dpo_lr,
            epochs=config.dpo_epochs,
            out=models / "dpo",
            seed=config.seed,
            progress=config.progress,
        )
        dpo_dir = run_dpo(dpo_config, pairs, sft_dir)

    with timer("evaluation"):
        evaluator = PolicyEvaluator(
            sft_dir,
            reward,
            test_prompts,
            samples=config.eval_samples,
            seed=config.seed + 2,
            corpus_docs=64 if config.quick else 256,
        )
        paths: dict[str, Path] = {"base": DEFAULT_MODEL_DIR, "SFT": sft_dir}
        paths.update({name: run.path for name, run in runs.items() if name.startswith("PPO")})
        paths["DPO"] = dpo_dir
        order = ["base", "SFT", "PPO", "PPO-ptx", "DPO"]
        paths = {k: paths[k] for k in order + [k for k in paths if k not in order]}
        policies = {
            name: evaluator(path)
            for name, path in tqdm(paths.items(), desc="evaluation", disable=not config.progress)
        }

    with timer("Elo"):
        judge = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed + 3)
        games = play_games(
            evaluator.prompts, {n: p["completions"] for n, p in policies.items()}, judge.prefers
        )
        table = elo_table(games, EloConfig(n_bootstrap=config.elo_bootstrap, seed=config.seed))

    with timer("report"):
        plots = {
            "rm_vs_true": plot_rm_vs_true(
                {
                    f"β={r.kl_coef:g}" + (" ptx" if r.ptx_coef else ""): r.history
                    for r in runs.values()
                },
                out / "rm_vs_true.png",
            ),  # fmt: skip
            "reward_vs_kl": plot_reward_vs_kl(
                {k: v for k, v in policies.items() if k != "base"},
                {f"β={r.kl_coef:g}": r.history for r in runs.values() if not r.ptx_coef},
                out / "reward_vs_kl.png",
            ),
            "elo": plot_elo(table, out / "elo.png"),
        }
    checks = dict(
        [
            (
                f"RM held-out pairwise accuracy {rm_result.heldout_accuracy:.1%} is well above "
                f"chance (>= 60%; the noisy labeler's own ceiling is "
                f"{rm_result.oracle_accuracy:.1%})",
                rm_result.heldout_accuracy >= 0.6,
            ),
            _gain_check(policies, "PPO", "SFT", "true_score"),
            _gain_check(policies, "PPO", "SFT", "rm_score"),
            _gain_check(policies, "DPO", "SFT", "true_score"),
            (
                f"PPO-ptx keeps a lower pre-training loss than PPO: "
                f"{policies['PPO-ptx']['corpus_loss']:.3f} vs {policies['PPO']['corpus_loss']:.3f}",
                policies["PPO-ptx"]["corpus_loss"] < policies["PPO"]["corpus_loss"],
            ),
        ]
    )
    timer.seconds["total"] = round(time.perf_counter() - started, 2)
    for row in policies.values():
        row["examples"] = list(zip(evaluator.prompts, row.pop("completions"), strict=True))[
            :: config.eval_samples
        ][:3]
    results: dict[str, Any] = {
        "command": "lmgym rlhf " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["rlhf"]
        else "run_rlhf(RLHFConfig(...))",
        "config": {
            k: v if isinstance(v, (int, float, list)) else str(v) for k, v in asdict(config).items()
        },  # fmt: skip
        "wall_time_s": timer.seconds,
        "n_demonstrations": len(demos),
        "n_preference_pairs": len(pairs),
        "reward_model": {**rm_result.as_dict(), "normalisation": [reward.mean, reward.std]},
        "eval_prompts": len(test_prompts),
        "policies": policies,
        "elo": [row.as_dict() for row in table],
        "elo_games": len(games),
        "ppo_runs": {name: run.as_dict() for name, run in runs.items()},
        "checks": checks,
        "plots": {k: str(v) for k, v in plots.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    write_md(results, out / "results.md")
    print("\nHeld-out prompts (true score = sentiment + fluency; RM score standardised):")
    print(format_policy_table(policies))
    print(f"\nReward model: held-out pairwise accuracy {rm_result.heldout_accuracy:.1%} "
          f"(ceiling {rm_result.oracle_accuracy:.1%}), correlation with the true score "
          f"{rm_result.true_score_correlation:.3f}")  # fmt: skip
    print("\nElo (" + str(len(games)) + " games):")
    print(format_elo_table(table))
    print("\nChecks:")
    for text, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(
        "\nWall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timer.seconds.items())
    )
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and the plots")
    return results
