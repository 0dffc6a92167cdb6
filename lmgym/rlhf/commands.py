"""One RLHF stage per command: ``lmgym sft``, ``reward-model``, ``ppo-rm`` and ``dpo``.

Each command runs one stage of lmgym.rlhf on its own, reading and writing model
directories, so the recipe can be run (and re-run, or swapped) one stage at a time:

    lmgym sft --out runs/sft
    lmgym reward-model --policy runs/sft --out runs/rm
    lmgym ppo-rm --policy runs/sft --reward-model runs/rm --out runs/ppo
    lmgym dpo --policy runs/sft --out runs/dpo

Simulated labelers (lmgym.rlhf.labelers) stand in for people: SFT's demonstrations are the
best of n samples of --model under the hidden true score, and the reward model and DPO learn
from noisy rankings of K samples of --policy on the training prompts. Held-out figures come from
the test prompts, scored with the true score the models never see. Each command saves the
model directory (with the stage's training_summary.json) plus a metrics.json of the figures it
prints. One --seed seeds every draw: sampling, the labeler and training. An --out that already
holds a model is replaced only with --overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.generation import DecodingConfig
from lmgym.models.loading import DEFAULT_MODEL_DIR, load_model, require_model_dir
from lmgym.rlhf.dpo import DPOConfig, run_dpo
from lmgym.rlhf.labelers import BradleyTerryLabeler, true_score
from lmgym.rlhf.ppo_stage import NormalizedReward, PPOStageConfig, run_ppo_stage
from lmgym.rlhf.rankings import collect_rankings, preference_pairs, sample_completions
from lmgym.rlhf.reward_model import LearnedRewardModel, RewardModelConfig, train_reward_model
from lmgym.rlhf.sft import SFTConfig, make_demonstrations, run_sft
from lmgym.rlhf.training import check_int, check_positive
from lmgym.seeding import set_seed
from lmgym.torch_threads import set_torch_threads
from lmgym.training.rundir import check_out_location

__all__ = [
    "DPOCommandConfig",
    "PPORMCommandConfig",
    "RewardModelCommandConfig",
    "SFTCommandConfig",
    "run_dpo_command",
    "run_ppo_rm_command",
    "run_reward_model_command",
    "run_sft_command",
]

S = TypeVar("S")


def _check_out(out: Path | None, overwrite: bool) -> None:
    """Refuse an ``out`` that holds another model (unless ``overwrite``) or unrelated files.

    Saving a stage's model replaces the whole directory, so a directory of other files is never
    written to, even with ``overwrite``. A location lmgym cannot write to (a file, a read-only
    place) is refused here, before the stage's work, not when the model is saved.
    """
    if out is None:
        return
    check_out_location(out)
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "config.json").is_file():
        raise ValueError(
            f"out={str(out)!r} holds files but no saved model (no config.json); saving replaces "
            "the whole directory, so lmgym will not write there. Choose a new or empty --out."
        )
    if not overwrite:
        raise ValueError(
            f"out={str(out)!r} already holds a model; pass --overwrite (overwrite=True) to "
            "replace it, or choose another --out."
        )


def _check_model_dir(name: str, path: Path) -> Path:
    """``path`` as a Path after checking it holds a saved model; errors name ``name``."""
    path = Path(path)
    require_model_dir(path, name)
    return path


@dataclass(kw_only=True)
class _CommandOptions:
    """Options every stage command has.

    Attributes:
        overwrite: Replace a model already saved in --out.
        threads: torch intra-op threads (1 is fastest for the tiny default model on 2 cores).
    """

    overwrite: bool = False
    threads: int = 1

    def __post_init__(self) -> None:
        check_int("threads", self.threads, minimum=1)


@dataclass(kw_only=True)
class _PolicyOption:
    """The model a stage starts from.

    Attributes:
        policy: Directory of the policy the stage starts from and samples from, e.g. the --out
            of `lmgym sft`.
    """

    policy: Path

    def __post_init__(self) -> None:
        self.policy = _check_model_dir("policy", self.policy)


@dataclass(kw_only=True)
class _RankingOptions:
    """How the simulated labeler ranks samples of the policy on the training prompts.

    Attributes:
        k: Completions K of a prompt the labeler ranks, >= 2 (InstructGPT used K in [4, 9]).
        rankings_per_prompt: Rankings collected per training prompt.
        labeler_temperature: Noise T of the labeler: P(a beats b) = σ((s_a − s_b)/T); 0 is
            noise-free.
    """

    k: int = 6
    rankings_per_prompt: int = 8
    labeler_temperature: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(
                f"k={self.k!r} is not an int >= 2: a ranking compares K >= 2 completions of a "
                "prompt (InstructGPT used K in [4, 9]); pass e.g. --k 4."
            )
        check_int("rankings_per_prompt", self.rankings_per_prompt, minimum=1)
        check_positive("labeler_temperature", self.labeler_temperature, allow_zero=True)


@dataclass(kw_only=True)
class _EvalOptions:
    """How the trained policy is measured.

    Attributes:
        eval_samples: Completions per held-out test prompt whose true score is reported before
            and after training; 0 skips the measurement.
    """

    eval_samples: int = 4

    def __post_init__(self) -> None:
        check_int("eval_samples", self.eval_samples, minimum=0)


def _stage_config(config: Any, stage: type[S]) -> S:
    """The stage's own config with ``config``'s values of its fields (a plain, JSON-ready one)."""
    names = [f.name for f in dataclasses.fields(stage) if f.init]  # type: ignore[arg-type]
    return stage(**{name: getattr(config, name) for name in names})


def _heldout_scores(
    model_dir: Path, samples: int, seed: int, reward_fn: Any = None
) -> dict[str, float]:
    """Mean true score (and ``reward_fn`` score) of samples of the policy on the test prompts."""
    model, tokenizer = load_model(model_dir)
    prompts = [p for p in corpus_prompts("test") for _ in range(samples)]
    set_seed(seed)  # every policy meets the same draws of the generator
    texts, _ = sample_completions(model, tokenizer, prompts, DecodingConfig())
    truth = true_score(prompts, texts)
    scores = {
        "true_score": float(truth.mean()),
        "true_score_se": float(truth.std(ddof=1) / np.sqrt(len(truth))),
    }
    if reward_fn is not None:
        scores["rm_score"] = float(np.mean(reward_fn(prompts, texts)))
    return scores


def _finish(out: Path, config: Any, metrics: dict[str, Any], started: float) -> dict[str, Any]:
    """Add the config and wall time to ``metrics``, write ``out/metrics.json`` and print it."""
    metrics = {
        **metrics,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "config": {k: v if isinstance(v, (bool, int, float)) or v is None else str(v)
                   for k, v in dataclasses.asdict(config).items()},
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<28} {value:.4g}")
        elif isinstance(value, int):
            print(f"  {key:<28} {value}")
    print(f"wrote {out}: the model and metrics.json")
    return metrics


# --- lmgym sft ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SFTCommandConfig(SFTConfig, _CommandOptions, _EvalOptions):
    """Settings of ``lmgym sft``: :class:`~lmgym.rlhf.sft.SFTConfig` plus its inputs.

    Attributes:
        model: Directory of the LM to fine-tune; None: the embedded default model.
        demos_per_prompt: Demonstrations per training prompt (each a fresh best-of-n draw).
        n_candidates: Samples of the LM per demonstration; the best under the hidden true score
            (among those that end with EOS) is the demonstration.

    Example:
        >>> SFTCommandConfig(n_candidates=0)
        Traceback (most recent call last):
        ...
        ValueError: n_candidates=0 is not an int >= 1; pass one, e.g. n_candidates=1.
    """

    model: Path | None = None
    demos_per_prompt: int = 4
    n_candidates: int = 8

    def __post_init__(self) -> None:
        SFTConfig.__post_init__(self)
        _EvalOptions.__post_init__(self)
        _CommandOptions.__post_init__(self)
        if self.model is not None:
            self.model = _check_model_dir("model", self.model)
        check_int("demos_per_prompt", self.demos_per_prompt, minimum=1)
        check_int("n_candidates", self.n_candidates, minimum=1)
        _check_out(self.out, self.overwrite)


def run_sft_command(config: SFTCommandConfig) -> dict[str, Any]:
    """``lmgym sft``: simulated demonstrations, then SFT; returns what metrics.json holds.

    Example:
        >>> import tempfile
        >>> config = SFTCommandConfig(out=Path(tempfile.mkdtemp()) / "sft", epochs=1,
        ...     demos_per_prompt=1, n_candidates=1, eval_samples=0, progress=False)
        >>> metrics = run_sft_command(config)  # doctest: +ELLIPSIS
          n_demonstrations ...
        >>> metrics["n_demonstrations"], (config.out / "metrics.json").is_file()
        (45, True)
    """
    started = time.perf_counter()
    set_torch_threads(config.threads)
    model = config.model or DEFAULT_MODEL_DIR
    labeler = BradleyTerryLabeler(seed=config.seed)  # only its noise-free score picks demos
    prompts = corpus_prompts("train") * config.demos_per_prompt
    demos = make_demonstrations(model, prompts, labeler, config.n_candidates, config.seed)
    out = run_sft(_stage_config(config, SFTConfig), demos, model)
    summary = json.loads((out / "training_summary.json").read_text())
    metrics: dict[str, Any] = {
        "n_demonstrations": len(demos),
        "demonstration_true_score": float(labeler.score(*zip(*demos, strict=True)).mean()),
        "first_epoch_loss": summary["first_epoch_loss"],
        "final_epoch_loss": summary["final_epoch_loss"],
    }
    if config.eval_samples:
        before = _heldout_scores(model, config.eval_samples, config.seed + 1)
        after = _heldout_scores(out, config.eval_samples, config.seed + 1)
        metrics |= {f"{k}_before": v for k, v in before.items()}
        metrics |= {f"{k}_after": v for k, v in after.items()}
    return _finish(out, config, metrics, started)


# --- lmgym reward-model ------------------------------------------------------------------------


@dataclass(kw_only=True)
class RewardModelCommandConfig(RewardModelConfig, _CommandOptions, _RankingOptions, _PolicyOption):
    """Settings of ``lmgym reward-model``: the RM stage's config plus its inputs.

    The reward model starts from --policy (its transformer, with a scalar head).

    Attributes:
        heldout_prompts: Where held-out rankings come from: ``test`` ranks samples on the test
            prompts; ``split`` holds out heldout_fraction of the training prompts.

    Example:
        >>> RewardModelCommandConfig(policy=DEFAULT_MODEL_DIR, k=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: k=1 is not an int >= 2: a ranking compares K >= 2 completions ...
    """

    heldout_prompts: Literal["test", "split"] = "test"

    def __post_init__(self) -> None:
        RewardModelConfig.__post_init__(self)
        _PolicyOption.__post_init__(self)
        _RankingOptions.__post_init__(self)
        _CommandOptions.__post_init__(self)
        if self.heldout_prompts not in ("test", "split"):
            raise ValueError(
                f"heldout_prompts={self.heldout_prompts!r} is unknown; expected 'test' or 'split'."
            )
        _check_out(self.out, self.overwrite)


def run_reward_model_command(config: RewardModelCommandConfig) -> dict[str, Any]:
    """``lmgym reward-model``: rank samples of the policy, train the RM, measure it.

    Returns what metrics.json holds: held-out pairwise accuracy against the noisy labeler and
    against the noise-free true order, the labeler's own ceiling, and the correlation of RM
    score and true score.

    Example:
        >>> import tempfile
        >>> config = RewardModelCommandConfig(policy=DEFAULT_MODEL_DIR, k=2,
        ...     rankings_per_prompt=1, epochs=1, out=Path(tempfile.mkdtemp()) / "rm",
        ...     progress=False)
        >>> metrics = run_reward_model_command(config)  # doctest: +ELLIPSIS
          heldout_accuracy ...
        >>> 0 <= metrics["heldout_accuracy"] <= 1
        True
    """
    started = time.perf_counter()
    set_torch_threads(config.threads)
    labeler = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed)
    prompts = corpus_prompts("train") * config.rankings_per_prompt
    rankings = collect_rankings(config.policy, prompts, config.k, labeler, config.seed)
    heldout = None
    if config.heldout_prompts == "test":
        test = corpus_prompts("test")
        heldout = collect_rankings(config.policy, test, config.k, labeler, config.seed + 1)
    result = train_reward_model(
        _stage_config(config, RewardModelConfig), rankings, config.policy, heldout=heldout
    )
    metrics = result.as_dict()
    metrics["training_wall_time_s"] = metrics.pop("wall_time_s")
    del metrics["path"]
    return _finish(result.path, config, metrics, started)


# --- lmgym ppo-rm ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PPORMCommandConfig(PPOStageConfig, _CommandOptions, _EvalOptions, _PolicyOption):
    """Settings of ``lmgym ppo-rm``: :class:`~lmgym.rlhf.ppo_stage.PPOStageConfig` plus inputs.

    The policy is also the KL reference. The RM is standardised (mean 0, std 1) on samples of
    the policy, so β means the same for every RM, as in ``lmgym rlhf``.

    Attributes:
        reward_model: Directory of the reward model PPO is paid by (`lmgym reward-model`).
        norm_samples: Samples of the policy per training prompt that the RM is standardised on.

    Example:
        >>> PPORMCommandConfig(policy=DEFAULT_MODEL_DIR, reward_model=Path("no/such/rm"))
        Traceback (most recent call last):
        ...
        lmgym.error.ModelLoadError: reward_model='no/such/rm' does not exist; expected a local directory saved with save_pretrained (config.json + weights). lmgym never downloads from a hub: save the model to disk first, or omit the argument to use the embedded default model.
    """  # noqa: E501 - a doctest traceback line cannot be wrapped

    reward_model: Path
    norm_samples: int = 4

    def __post_init__(self) -> None:
        PPOStageConfig.__post_init__(self)
        _PolicyOption.__post_init__(self)
        _EvalOptions.__post_init__(self)
        _CommandOptions.__post_init__(self)
        self.reward_model = _check_model_dir("reward_model", self.reward_model)
        check_int("norm_samples", self.norm_samples, minimum=1)
        _check_out(self.out, self.overwrite)


def run_ppo_rm_command(config: PPORMCommandConfig) -> dict[str, Any]:
    """``lmgym ppo-rm``: PPO on ``LMBandit-v0`` paid by the learned reward model.

    Returns what metrics.json holds: RM score and true score per rollout, and on the held-out
    prompts before and after training.

    Example:
        >>> import tempfile
        >>> from lmgym.rlhf.learned_reward import init_reward_model
        >>> from lmgym.rlhf.training import save_model_dir
        >>> rm_dir = save_model_dir(Path(tempfile.mkdtemp()) / "rm",
        ...                         *init_reward_model(DEFAULT_MODEL_DIR), {})  # untrained RM
        >>> config = PPORMCommandConfig(policy=DEFAULT_MODEL_DIR, reward_model=rm_dir,
        ...     steps=16, n_envs=4, n_steps=4, batch_size=16, n_epochs=1, norm_samples=1,
        ...     eval_samples=0, out=Path(tempfile.mkdtemp()) / "ppo", progress=False)
        >>> metrics = run_ppo_rm_command(config)  # doctest: +ELLIPSIS
          normalisation_mean ...
        >>> metrics["history"]["timesteps"]
        [16]
    """
    started = time.perf_counter()
    set_torch_threads(config.threads)
    model, tokenizer = load_model(config.policy)
    prompts = corpus_prompts("train") * config.norm_samples
    set_seed(config.seed)
    texts, _ = sample_completions(model, tokenizer, prompts, DecodingConfig())
    reward = NormalizedReward.fit(
        LearnedRewardModel(config.reward_model, policy_tokenizer=config.policy), prompts, texts
    )
    result = run_ppo_stage(_stage_config(config, PPOStageConfig), reward, config.policy)
    metrics: dict[str, Any] = {
        "normalisation_mean": reward.mean,
        "normalisation_std": reward.std,
        "training_wall_time_s": result.wall_time_s,
    }
    if config.eval_samples:
        before = _heldout_scores(config.policy, config.eval_samples, config.seed + 1, reward)
        after = _heldout_scores(result.path, config.eval_samples, config.seed + 1, reward)
        metrics |= {f"{k}_before": v for k, v in before.items()}
        metrics |= {f"{k}_after": v for k, v in after.items()}
    metrics["history"] = result.history.as_dict()
    return _finish(result.path, config, metrics, started)


# --- lmgym dpo ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DPOCommandConfig(DPOConfig, _CommandOptions, _EvalOptions, _RankingOptions, _PolicyOption):
    """Settings of ``lmgym dpo``: :class:`~lmgym.rlhf.dpo.DPOConfig` plus its inputs.

    Attributes:
        reference: Directory of the frozen reference π_ref; None: a frozen copy of --policy.

    Example:
        >>> DPOCommandConfig(policy=DEFAULT_MODEL_DIR, beta=0)
        Traceback (most recent call last):
        ...
        ValueError: beta=0 must be a finite number > 0.
    """

    reference: Path | None = None

    def __post_init__(self) -> None:
        DPOConfig.__post_init__(self)
        _PolicyOption.__post_init__(self)
        _RankingOptions.__post_init__(self)
        _EvalOptions.__post_init__(self)
        _CommandOptions.__post_init__(self)
        if self.reference is not None:
            self.reference = _check_model_dir("reference", self.reference)
        _check_out(self.out, self.overwrite)


def run_dpo_command(config: DPOCommandConfig) -> dict[str, Any]:
    """``lmgym dpo``: rank samples of the policy, then DPO on the preference pairs.

    Returns what metrics.json holds: the final loss and implicit-reward accuracy, and the true
    score on the held-out prompts before and after training.

    Example:
        >>> import tempfile
        >>> config = DPOCommandConfig(policy=DEFAULT_MODEL_DIR, k=2, rankings_per_prompt=1,
        ...     epochs=1, eval_samples=0, out=Path(tempfile.mkdtemp()) / "dpo", progress=False)
        >>> metrics = run_dpo_command(config)  # doctest: +ELLIPSIS
          n_rankings ...
        >>> metrics["n_rankings"]
        45
    """
    started = time.perf_counter()
    set_torch_threads(config.threads)
    labeler = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed)
    prompts = corpus_prompts("train") * config.rankings_per_prompt
    rankings = collect_rankings(config.policy, prompts, config.k, labeler, config.seed)
    pairs = preference_pairs(rankings)
    out = run_dpo(_stage_config(config, DPOConfig), pairs, config.policy, config.reference)
    summary = json.loads((out / "training_summary.json").read_text())
    metrics: dict[str, Any] = {
        "n_rankings": len(rankings),
        "n_pairs": summary["n_pairs"],
        "final_epoch_loss": summary["final_epoch_loss"],
        "final_epoch_reward_accuracy": summary["final_epoch_reward_accuracy"],
    }
    if config.eval_samples:
        before = _heldout_scores(config.policy, config.eval_samples, config.seed + 1)
        after = _heldout_scores(out, config.eval_samples, config.seed + 1)
        metrics |= {f"{k}_before": v for k, v in before.items()}
        metrics |= {f"{k}_after": v for k, v in after.items()}
    return _finish(out, config, metrics, started)
