"""``lmgym rlhf``: the whole RLHF recipe on the embedded default model, measured end to end.

pretrained (the embedded model) → SFT on simulated demonstrations → a reward model trained from
noisy rankings of the SFT model's samples → PPO against that reward model for several KL
coefficients β, PPO-ptx, and DPO on the same preference pairs. Every policy is then evaluated
on held-out prompts with the hidden true score (which the reward model never saw) and the reward
model's score, rated in an Elo table from head-to-head labeler comparisons, and the results go to
``results.md``, ``results.json`` and PNG plots in ``--out`` (see :mod:`lmgym.rlhf.report`).

The default run takes about 4 minutes on one CPU thread (35 s per PPO run); ``--quick``
shrinks every stage to a smoke run of about a minute (53 s measured, imports included, on two
busy CPU cores). Sizes left unset take the default run's value, or the quick one with
``--quick``; an explicit size always wins.

The run is a list of stages (:func:`stages`), each a function of the config and the run's state
so far, so a longer recipe is a longer list. This module imports nothing heavy at import time;
each stage imports what it runs.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmgym.rlhf.config import (
    DtypeName,
    StageConfig,
    check_device_dtype,
    check_positive,
    choice,
    device,
    dtype,
    integer,
    number,
    path,
)

__all__ = ["RLHFConfig", "Stage", "command_line", "render_rlhf", "run_rlhf", "stages"]

logger = logging.getLogger(__name__)

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
    "overoptimisation_steps": (4096, 384),
    "overoptimisation_samples": (64, 4),
}


@dataclass(frozen=True, kw_only=True)
class RLHFConfig(StageConfig):
    """Settings of ``lmgym rlhf``: the pipeline's options and the size of each stage.

    Attributes:
        out: Directory for results.md, results.json, the PNG plots and the trained models.
        quick: Shrink every stage for a smoke run of about a minute (53 s measured; explicit
            sizes still win).
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
        device: Where every stage trains and PPO's env and reward model run: auto (CUDA, else
            MPS, else CPU), cpu, cuda, cuda:N or mps. Sampling the simulated data and the
            evaluation run on the CPU.
        overoptimisation: Rankings per proxy reward model of the over-optimisation sweep,
            ascending, e.g. 100 400 1600 (empty: no sweep). Each proxy gets best-of-n and a PPO
            run with β = 0; the gold (true) and proxy scores against √KL go to
            overoptimisation.png, with Gao et al.'s fitted forms (docs/rlhf.md).
        overoptimisation_steps: Completions of each sweep PPO run (None: 4096, or 384 with
            --quick).
        overoptimisation_samples: Samples per held-out prompt for the sweep's best-of-n; n runs
            over the powers of 2 up to it (None: 64, or 4 with --quick).
        dtype: Precision of PPO's frozen models (the env's KL reference and the reward model);
            the trained models stay float32. auto: bfloat16 on a GPU that has it, else float32.
        rounds: Rounds of iterated online RLHF (Bai et al. 2022): round 1 is the pipeline's
            reward model and main PPO run; each later round ranks samples of the last round's
            PPO policy (as many rankings as round 1), trains a new reward model and continues
            PPO (β = kl_coef) from that policy, the KL still to the SFT model. Every round's
            policy joins the Elo table; results.md gets a round table and rounds.png
            (docs/iterated-rlhf.md). 3 rounds: about 7 minutes (7 min 8 s measured).
        rm_data: Rankings each later round's reward model trains on: accumulate (every round's
            so far) or latest (that round's only).
    """

    out: Path = path(Path("rlhf-output"))
    quick: bool = False
    seed: int = integer(0, minimum=0)
    threads: int = integer(1)
    progress: bool = True
    labeler_temperature: float = number(0.25, allow_zero=True)
    demo_candidates: int | None = integer(None, optional=True)
    demos_per_prompt: int | None = integer(None, optional=True)
    sft_epochs: int | None = integer(None, optional=True)
    rm_k: int | None = integer(None, optional=True)
    rankings_per_prompt: int | None = integer(None, optional=True)
    rm_epochs: int | None = integer(None, optional=True)
    ppo_steps: int | None = integer(None, optional=True)
    kl_coef: float = number(0.1, allow_zero=True)
    kl_sweep: list[float] = field(default_factory=lambda: [0.01, 0.5])
    ptx_coef: float = number(0.5)
    ppo_learning_rate: float = number(3e-4)
    dpo_beta: float = number(0.1)
    dpo_lr: float = number(5e-4)
    dpo_epochs: int | None = integer(None, optional=True)
    eval_samples: int | None = integer(None, optional=True)
    elo_bootstrap: int | None = integer(None, optional=True, minimum=0)
    overoptimisation: list[int] = field(default_factory=list)
    overoptimisation_steps: int | None = integer(None, optional=True)
    overoptimisation_samples: int | None = integer(None, optional=True, minimum=2)
    device: str = device()
    dtype: DtypeName = dtype()
    rounds: int = integer(1)
    rm_data: Literal["accumulate", "latest"] = choice("accumulate", "accumulate", "latest")

    def _validate(self) -> None:
        check_device_dtype(self.device, self.dtype)
        if self.rounds == 1 and self.rm_data == "latest":
            warnings.warn(
                "rm_data='latest' has no effect with rounds=1: only later rounds choose their "
                "reward model's rankings; pass rounds=2 or more to iterate.",
                stacklevel=4,
            )
        for name, (default, quick) in _SIZES.items():
            if getattr(self, name) is None:
                self._set(name, quick if self.quick else default)
        if not 2 <= int(self.rm_k or 0) <= 9:
            raise ValueError(
                f"rm_k={self.rm_k} is outside [2, 9]; a ranking needs K >= 2 completions "
                "(InstructGPT used K in [4, 9]), e.g. rm_k=6."
            )
        self._set("kl_sweep", list(self.kl_sweep))
        self._set("overoptimisation", list(self.overoptimisation))
        if self.overoptimisation:
            self.overoptimisation_config()  # its checks, before anything runs
        for index, beta in enumerate(self.kl_sweep):
            check_positive(f"kl_sweep[{index}]", beta, allow_zero=True, example=0.01)
        if self.kl_coef in self.kl_sweep:
            raise ValueError(
                f"kl_sweep={self.kl_sweep} repeats kl_coef={self.kl_coef}, which the main PPO "
                "run already uses; list only further β values."
            )

    def overoptimisation_config(self) -> Any:
        """The sweep's :class:`~lmgym.rlhf.overoptimisation.OveroptimisationConfig`."""
        from lmgym.rlhf.overoptimisation import OveroptimisationConfig

        return OveroptimisationConfig(
            rm_sizes=list(self.overoptimisation),
            rm_k=self.size("rm_k"),
            rm_epochs=self.size("rm_epochs"),
            ppo_steps=self.size("overoptimisation_steps"),
            learning_rate=self.ppo_learning_rate,
            bon_samples=self.size("overoptimisation_samples"),
            seed=self.seed,
            progress=self.progress,
        )

    def size(self, name: str) -> int:
        """A stage size, resolved (never None once the config is built)."""
        value = getattr(self, name)
        assert isinstance(value, int), f"{name}={value!r} was not resolved"
        return value


State = dict[str, Any]
"""What the stages have produced so far, by name: each stage reads its inputs and adds its own."""

Stage = tuple[str, Callable[[RLHFConfig, State], None]]
"""A named step of the recipe; the name labels its wall time."""


def _sft(config: RLHFConfig, state: State) -> None:
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.models.loading import DEFAULT_MODEL_DIR
    from lmgym.rlhf.config import SFTConfig
    from lmgym.rlhf.sft import make_demonstrations, run_sft

    state["demos"] = make_demonstrations(
        DEFAULT_MODEL_DIR,
        corpus_prompts("train") * config.size("demos_per_prompt"),
        state["labeler"],
        n_candidates=config.size("demo_candidates"),
        seed=config.seed,
    )
    sft_config = SFTConfig(epochs=config.size("sft_epochs"), seed=config.seed,
                           progress=config.progress, device=config.device)  # fmt: skip
    state["SFT"] = run_sft(sft_config, state["demos"], state["models"] / "sft").path


def _reward_model(config: RLHFConfig, state: State) -> None:
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.rlhf.config import RewardModelConfig
    from lmgym.rlhf.learned_reward import LearnedRewardModel
    from lmgym.rlhf.ppo_stage import NormalizedReward
    from lmgym.rlhf.rankings import collect_rankings
    from lmgym.rlhf.reward_model import train_reward_model

    sft, labeler, k = state["SFT"], state["labeler"], config.size("rm_k")
    train = corpus_prompts("train") * config.size("rankings_per_prompt")
    rankings = collect_rankings(sft, train, k, labeler, config.seed)
    heldout = collect_rankings(sft, corpus_prompts("test"), k, labeler, config.seed + 1)
    rm_config = RewardModelConfig(epochs=config.size("rm_epochs"), seed=config.seed,
                                  progress=config.progress, device=config.device)  # fmt: skip
    rm = train_reward_model(
        rm_config, rankings, state["models"] / "reward_model", model=sft, heldout=heldout
    )
    state["rankings"], state["rm"] = rankings, rm
    state["reward"] = NormalizedReward.fit(
        LearnedRewardModel(rm.path, policy_tokenizer=sft, device=config.device, dtype=config.dtype),
        [r.prompt for r in rankings for _ in r.completions],
        [c for r in rankings for c in r.completions],
    )


def _ppo(name: str, kl_coef: float, ptx_coef: float, directory: str) -> Stage:
    def stage(config: RLHFConfig, state: State) -> None:
        from lmgym.rlhf.config import PPOStageConfig
        from lmgym.rlhf.ppo_stage import run_ppo_stage

        ppo_config = PPOStageConfig(
            steps=config.size("ppo_steps"),
            kl_coef=kl_coef,
            ptx_coef=ptx_coef,
            learning_rate=config.ppo_learning_rate,
            seed=config.seed,
            progress=config.progress,
            device=config.device,
            dtype=config.dtype,
        )
        out = state["models"] / directory
        state["ppo"][name] = run_ppo_stage(ppo_config, state["reward"], out, model=state["SFT"])

    return (name if ptx_coef else f"PPO β={kl_coef:g}"), stage


def _dpo(config: RLHFConfig, state: State) -> None:
    from lmgym.rlhf.config import DPOConfig
    from lmgym.rlhf.dpo import run_dpo
    from lmgym.rlhf.rankings import preference_pairs

    state["pairs"] = preference_pairs(state["rankings"])
    dpo_config = DPOConfig(beta=config.dpo_beta, lr=config.dpo_lr, seed=config.seed,
                           epochs=config.size("dpo_epochs"), progress=config.progress,
                           device=config.device)  # fmt: skip
    state["DPO"] = run_dpo(dpo_config, state["pairs"], state["models"] / "dpo",
                           model=state["SFT"]).path  # fmt: skip


def _evaluation(config: RLHFConfig, state: State) -> None:
    from tqdm.auto import tqdm

    from lmgym.evaluation import PolicyEvaluator
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.models.loading import DEFAULT_MODEL_DIR

    evaluator = PolicyEvaluator(
        state["SFT"],
        state["reward"],
        corpus_prompts("test"),
        samples=config.size("eval_samples"),
        seed=config.seed + 2,
        corpus_docs=64 if config.quick else 256,
    )
    paths: dict[str, Path] = {"base": DEFAULT_MODEL_DIR, "SFT": state["SFT"]}
    paths |= {name: run.path for name, run in state["ppo"].items() if name.startswith("PPO")}
    paths["DPO"] = state["DPO"]
    order = ["base", "SFT", "PPO", "PPO-ptx", "DPO"]
    paths = {k: paths[k] for k in order + [k for k in paths if k not in order]}
    state["evaluator"] = evaluator
    state["policies"] = {
        name: evaluator(path)
        for name, path in tqdm(paths.items(), desc="evaluation", disable=not config.progress)
    }


def _elo(config: RLHFConfig, state: State) -> None:
    from lmgym.rlhf.elo import EloConfig, elo_table, play_games
    from lmgym.rlhf.labelers import BradleyTerryLabeler

    judge = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed + 3)
    completions = {name: row["completions"] for name, row in state["policies"].items()}
    state["games"] = play_games(state["evaluator"].prompts, completions, judge.prefers)
    elo = EloConfig(n_bootstrap=config.size("elo_bootstrap"), seed=config.seed)
    state["elo"] = elo_table(state["games"], elo)


def _overoptimisation(config: RLHFConfig, state: State) -> None:
    from lmgym.rlhf.overoptimisation import run_overoptimisation

    sweep = config.overoptimisation_config()
    out = state["models"] / "overoptimisation"
    state["overoptimisation"] = run_overoptimisation(sweep, state["SFT"], state["labeler"], out)


def _report(config: RLHFConfig, state: State) -> None:
    from lmgym.rlhf.overoptimisation import plot_overoptimisation
    from lmgym.rlhf.report import plot_elo, plot_reward_vs_kl, plot_rm_vs_true

    runs = state["ppo"].values()
    label = {id(r): f"β={r.metrics['kl_coef']:g}" + (" ptx" if r.metrics["ptx_coef"] else "")
             + (f" round {r.metrics['round']}" if "round" in r.metrics else "")
             for r in runs}  # fmt: skip
    state["plots"] = {
        "rm_vs_true": plot_rm_vs_true(
            {label[id(r)]: r.history for r in runs}, config.out / "rm_vs_true.png"
        ),
        "reward_vs_kl": plot_reward_vs_kl(
            {k: v for k, v in state["policies"].items() if k != "base"},
            {label[id(r)]: r.history for r in runs if not r.metrics["ptx_coef"]},
            config.out / "reward_vs_kl.png",
        ),
        "elo": plot_elo(state["elo"], config.out / "elo.png"),
    }
    if "overoptimisation" in state:
        state["plots"]["overoptimisation"] = plot_overoptimisation(
            state["overoptimisation"], config.out / "overoptimisation.png"
        )
    if "round_table" in state:
        from lmgym.rlhf.rounds import plot_rounds

        state["plots"]["rounds"] = plot_rounds(state["round_table"], config.out / "rounds.png")


def stages(config: RLHFConfig) -> list[Stage]:
    """The recipe as a list: SFT, reward model, PPO per β, PPO-ptx, DPO, evaluation, Elo, plots.

    With ``overoptimisation`` set, the sweep runs after Elo (it trains its own reward models and
    PPO runs from the same SFT model; nothing before it changes).

    Example:
        >>> [name for name, _ in stages(RLHFConfig(kl_sweep=[0.5]))][:4]
        ['SFT', 'reward model', 'PPO β=0.1', 'PPO β=0.5']
    """
    ppo = [_ppo("PPO", config.kl_coef, 0.0, f"ppo_kl{config.kl_coef:g}")]
    ppo += [_ppo(f"PPO β={beta:g}", beta, 0.0, f"ppo_kl{beta:g}") for beta in config.kl_sweep]
    ppo.append(_ppo("PPO-ptx", config.kl_coef, config.ptx_coef, "ppo_ptx"))
    rounds: list[Stage] = []
    if config.rounds > 1:  # iterated RLHF: rounds 2..N after round 1's PPO, a table after Elo
        from lmgym.rlhf.rounds import round_table, training_stages

        ppo += training_stages(config)
        rounds.append(("round table", round_table))
    return [
        ("SFT", _sft),
        ("reward model", _reward_model),
        *ppo,
        ("DPO", _dpo),
        ("evaluation", _evaluation),
        ("Elo", _elo),
        *rounds,
        *([("over-optimisation", _overoptimisation)] if config.overoptimisation else []),
        ("report", _report),
    ]


def _checks(config: RLHFConfig, state: State) -> list[Any]:
    """The report's checks; those whose stages ran below the default run's sizes are not judged."""
    import numpy as np

    from lmgym.rlhf.checks import accuracy_check, gain_check, lower_loss_check, shortfall

    rm, policies = state["rm"].metrics, state["policies"]

    def short(*names: str) -> str | None:
        sizes = {name: config.size(name) for name in names}
        return shortfall(sizes, {name: _SIZES[name][0] for name in names}, quick=config.quick)

    def gain(a: str, b: str, key: str, *sizes: str) -> Any:
        diff = policies[a][key] - policies[b][key]
        se = float(np.hypot(policies[a][f"{key}_se"], policies[b][f"{key}_se"]))
        score = {"true_score": "true score", "rm_score": "RM score"}[key]
        return gain_check(a, b, score, diff=diff, se=se, not_judged=short(*sizes, "eval_samples"))

    rm_sizes = ("rankings_per_prompt", "rm_epochs")
    return [
        accuracy_check(rm["heldout_accuracy"], rm["oracle_accuracy"], not_judged=short(*rm_sizes)),
        gain("PPO", "SFT", "true_score", "ppo_steps", *rm_sizes),
        gain("PPO", "SFT", "rm_score", "ppo_steps"),
        gain("DPO", "SFT", "true_score", "rankings_per_prompt", "dpo_epochs"),
        lower_loss_check(
            policies["PPO-ptx"]["corpus_loss"],
            policies["PPO"]["corpus_loss"],
            not_judged=short("ppo_steps"),
        ),  # fmt: skip
    ]


def _notes(config: RLHFConfig, identical: list[list[str]]) -> list[str]:
    """What a reader needs before the tables: a --quick run's limits, policies that are one."""
    from lmgym.rlhf.config import PPOStageConfig

    notes = []
    if config.quick:
        notes.append(
            "--quick is a smoke run: it shows every stage working end to end, but its budgets "
            "are too small for the stages to learn measurably, so the checks set for the default "
            "run's sizes are not judged. Run without --quick (about 4 minutes) to judge them."
        )
    defaults = PPOStageConfig()
    rollout = defaults.n_envs * defaults.n_steps
    for group in identical:
        note = (
            f"{', '.join(group)} wrote the same completion for every held-out sample: they are "
            "one policy as far as this evaluation can tell, their rows match, and the gaps "
            "between their Elo ratings are the judge's noise."
        )
        if sum(name.startswith("PPO") and name != "PPO-ptx" for name in group) > 1:
            rollouts = config.size("ppo_steps") // rollout
            count = "one rollout" if rollouts == 1 else f"{rollouts} rollouts"
            note += (
                f" PPO ran {config.size('ppo_steps')} steps: {count} of {rollout} completions. "
                "On the first rollout the policy is still the SFT model, so its KL to it is 0 "
                "(up to float rounding) and so is the penalty β·KL, whatever β is; β only acts "
                "from the second rollout "
                + (
                    "on, so with one rollout the β values cannot differ"
                    if rollouts == 1
                    else f"on, and {count} left it too little to act on"
                )
                + " (the default run has 2048 steps, 16 rollouts)."
            )
        notes.append(note)
    return notes


def command_line(config: RLHFConfig) -> str:
    """The ``lmgym rlhf`` command that gives ``config``: its options that differ from the default.

    Example:
        >>> command_line(RLHFConfig(quick=True, seed=3, out=Path("runs/q")))
        'lmgym rlhf --out runs/q --quick --seed 3'
    """
    default = {**RLHFConfig(quick=config.quick).as_dict(), "quick": False}  # sizes: as resolved
    words = ["lmgym", "rlhf"]
    for name, value in config.as_dict().items():
        if value == default[name]:
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else "--no-" + option[2:])
        else:
            values = value if isinstance(value, list) else [value]
            words += [option, *(str(v) for v in values)]
    return " ".join(words)


def run_rlhf(config: RLHFConfig) -> dict[str, Any]:
    """Run pretrained → SFT → RM → PPO (several β), PPO-ptx, DPO; evaluate, rate, report.

    Writes ``results.json``, ``results.md`` and the plots to ``config.out`` (the models to
    ``config.out / "models"``) and returns the dict written to ``results.json``. Each stage's
    wall time is logged (logger ``lmgym.rlhf.pipeline``, INFO).
    """
    from lmgym.rlhf.checks import identical_policies
    from lmgym.rlhf.labelers import BradleyTerryLabeler
    from lmgym.rlhf.report import write_md
    from lmgym.seeding import set_seed
    from lmgym.torch_threads import set_torch_threads

    started = time.perf_counter()
    set_torch_threads(config.threads)
    set_seed(config.seed)
    config.out.mkdir(parents=True, exist_ok=True)
    state: State = {
        "models": config.out / "models",
        "labeler": BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed),
        "ppo": {},
    }
    seconds: dict[str, float] = {}
    for name, stage in stages(config):
        begun = time.perf_counter()
        stage(config, state)
        seconds[name] = round(time.perf_counter() - begun, 2)
        logger.info("%s: %.1f s", name, seconds[name])
    checks = _checks(config, state)
    seconds["total"] = round(time.perf_counter() - started, 2)
    samples = config.size("eval_samples")
    prompts = state["evaluator"].prompts
    identical = identical_policies({k: v["completions"] for k, v in state["policies"].items()})
    for row in state["policies"].values():
        row["examples"] = list(zip(prompts, row.pop("completions"), strict=True))[::samples][:3]
    rm, reward = state["rm"], state["reward"]
    results: dict[str, Any] = {
        "command": command_line(config),
        "config": config.as_dict(),
        "wall_time_s": seconds,
        "n_demonstrations": len(state["demos"]),
        "n_preference_pairs": len(state["pairs"]),
        "reward_model": {
            "path": str(rm.path),
            **rm.metrics,
            "normalisation": [reward.mean, reward.std],
        },  # fmt: skip
        "eval_prompts": len(prompts) // samples,
        "policies": state["policies"],
        "elo": [row.as_dict() for row in state["elo"]],
        "elo_games": len(state["games"]),
        "ppo_runs": {
            name: {"path": str(run.path), **run.metrics, "history": run.history}
            for name, run in state["ppo"].items()
        },  # fmt: skip
        "notes": _notes(config, identical),
        "identical_policies": identical,
        "checks": [check.as_dict() for check in checks],
        "plots": {k: str(v) for k, v in state["plots"].items()},
    }
    if "overoptimisation" in state:
        results["overoptimisation"] = state["overoptimisation"]
    if "round_table" in state:
        results["rounds"] = state["round_table"]
    (config.out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    write_md(results, config.out / "results.md")
    logger.info(
        "wrote %s, %s and the plots", config.out / "results.md", config.out / "results.json"
    )
    return results


def render_rlhf(config: RLHFConfig, results: dict[str, Any]) -> str:
    """What ``lmgym rlhf`` prints: the held-out table, the RM, Elo, the checks, wall times."""
    from lmgym.rlhf.report import format_summary

    return format_summary(results)
