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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmgym.rlhf.config import (
    DPOConfig,
    PPOStageConfig,
    RewardModelConfig,
    SFTConfig,
    StageConfig,
    StageResult,
    checked,
    choice,
    integer,
    model_dir,
    number,
    path,
)
from lmgym.rlhf.data import check_data

__all__ = [
    "DPOCommandConfig",
    "PPORMCommandConfig",
    "RewardModelCommandConfig",
    "SFTCommandConfig",
    "render_metrics",
    "run_dpo_command",
    "run_ppo_rm_command",
    "run_reward_model_command",
    "run_sft_command",
]

logger = logging.getLogger(__name__)


def _check_out(out: Path | None, overwrite: bool) -> None:
    """Refuse an ``out`` that holds another model (unless ``overwrite``) or unrelated files.

    Saving a stage's model replaces the whole directory, so a directory of other files is never
    written to, even with ``overwrite``. A location lmgym cannot write to (a file, a read-only
    place) is refused here, before the stage's work, not when the model is saved.
    """
    if out is None:
        return
    from lmgym.training.rundir import check_out_location

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


@dataclass(frozen=True, kw_only=True)
class _CommandOptions(StageConfig):
    """Options every stage command has.

    Attributes:
        out: Directory the stage's model and metrics.json are saved to; None writes a new
            temporary directory.
        overwrite: Replace a model already saved in --out.
        threads: torch intra-op threads (1 is fastest for the tiny default model on 2 cores).
    """

    out: Path | None = path()
    overwrite: bool = False
    threads: int = integer(1)

    def _validate(self) -> None:
        _check_out(self.out, self.overwrite)


@dataclass(frozen=True, kw_only=True)
class _EvalOptions(StageConfig):
    """How the trained policy is measured.

    Attributes:
        eval_samples: Completions per held-out test prompt whose true score is reported before
            and after training; 0 skips the measurement.
    """

    eval_samples: int = integer(4, minimum=0)


@dataclass(frozen=True, kw_only=True)
class _PolicyOption(StageConfig):
    """The model a stage starts from.

    Attributes:
        policy: Directory of the policy the stage starts from and samples from, e.g. the --out
            of `lmgym sft`.
    """

    policy: Path = model_dir()


def _check_k(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(
            f"{name}={value!r} is not an int >= 2: a ranking compares K >= 2 completions of a "
            "prompt (InstructGPT used K in [4, 9]); pass e.g. --k 4."
        )
    return value


@dataclass(frozen=True, kw_only=True)
class _RankingOptions(StageConfig):
    """How the simulated labeler ranks samples of the policy on the training prompts.

    Attributes:
        k: Completions K of a prompt the labeler ranks, >= 2 (InstructGPT used K in [4, 9]).
        rankings_per_prompt: Rankings collected per training prompt.
        labeler_temperature: Noise T of the labeler: P(a beats b) = σ((s_a − s_b)/T); 0 is
            noise-free.
    """

    k: int = checked(6, _check_k)
    rankings_per_prompt: int = integer(8)
    labeler_temperature: float = number(0.25, allow_zero=True)


def _rankings(config: Any, *, heldout: bool) -> tuple[list[Any], list[Any] | None]:
    """Rankings of K samples of ``config.policy`` on the training prompts by the labeler.

    With ``heldout``, the same labeler then ranks samples on the test prompts too.
    """
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.rlhf.labelers import BradleyTerryLabeler
    from lmgym.rlhf.rankings import collect_rankings

    labeler = BradleyTerryLabeler(temperature=config.labeler_temperature, seed=config.seed)
    train = corpus_prompts("train") * config.rankings_per_prompt
    rankings = collect_rankings(config.policy, train, config.k, labeler, config.seed)
    if not heldout:
        return rankings, None
    test = corpus_prompts("test")
    return rankings, collect_rankings(config.policy, test, config.k, labeler, config.seed + 1)


# What a stage command's body returns: the stage's result, the figures to add to metrics.json,
# the policy it started from and the reward to score held-out samples with (None: true score).
_Outcome = tuple[StageResult, dict[str, Any], Path, Any]


def _run_command(
    config: _CommandOptions, stage: Callable[[], _Outcome], *, eval_samples: int, seed: int
) -> dict[str, Any]:
    """Run ``stage``; measure before/after on the test prompts; write and return metrics.json."""
    from lmgym.evaluation import PolicyEvaluator
    from lmgym.models.corpus import prompts as corpus_prompts
    from lmgym.rlhf.labelers import true_score
    from lmgym.torch_threads import set_torch_threads

    started = time.perf_counter()
    set_torch_threads(config.threads)
    result, metrics, start, reward = stage()
    if eval_samples:
        evaluator = PolicyEvaluator(
            start,
            true_score if reward is None else reward,
            corpus_prompts("test"),
            samples=eval_samples,
            seed=seed + 1,  # every policy meets the same draws of the generator
            corpus_docs=0,
        )
        keys = ("true_score", "true_score_se") + (() if reward is None else ("rm_score",))
        for when, model in (("before", start), ("after", result.path)):
            row = evaluator(model)
            metrics |= {f"{key}_{when}": row[key] for key in keys}
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    metrics["config"] = config.as_dict()
    metrics["path"] = str(result.path)
    (result.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("wrote %s: the model and metrics.json", result.path)
    return metrics


# --- lmgym sft ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SFTCommandConfig(SFTConfig, _CommandOptions, _EvalOptions):
    """Settings of ``lmgym sft``: :class:`~lmgym.rlhf.config.SFTConfig` plus its inputs.

    Attributes:
        model: Directory of the LM to fine-tune; None: the embedded default model.
        data: JSONL file of your demonstrations, {"prompt": ..., "completion": ...} a line, to
            train on instead of the simulated ones; the records of 10% of its distinct prompts
            (chosen by --seed) are held out, and their per-token loss is measured before and
            after training (in place of the true score on the test prompts).
        demos_per_prompt: Demonstrations per training prompt (each a fresh best-of-n draw).
        n_candidates: Samples of the LM per demonstration; the best under the hidden true score
            (among those that end with EOS) is the demonstration.

    Example:
        >>> SFTCommandConfig(n_candidates=0)
        Traceback (most recent call last):
        ...
        ValueError: n_candidates=0 is not an int >= 1; pass one, e.g. n_candidates=1.
    """

    model: Path | None = model_dir(None)
    data: Path | None = checked(None, check_data("demonstrations"))
    demos_per_prompt: int = integer(4)
    n_candidates: int = integer(8)


def run_sft_command(config: SFTCommandConfig) -> dict[str, Any]:
    """``lmgym sft``: simulated demonstrations, then SFT; returns what metrics.json holds.

    Example:
        >>> import tempfile
        >>> config = SFTCommandConfig(out=Path(tempfile.mkdtemp()) / "sft", epochs=1,
        ...     demos_per_prompt=1, n_candidates=1, eval_samples=0, progress=False)
        >>> metrics = run_sft_command(config)
        >>> metrics["n_demonstrations"], (config.out / "metrics.json").is_file()
        (45, True)
    """

    def stage() -> _Outcome:
        from lmgym.models.corpus import prompts as corpus_prompts
        from lmgym.models.loading import DEFAULT_MODEL_DIR
        from lmgym.rlhf.labelers import BradleyTerryLabeler
        from lmgym.rlhf.sft import make_demonstrations, run_sft

        model = config.model or DEFAULT_MODEL_DIR
        if config.data is not None:
            return _sft_on_data(config, model)
        labeler = BradleyTerryLabeler(seed=config.seed)  # only its noise-free score picks demos
        prompts = corpus_prompts("train") * config.demos_per_prompt
        demos = make_demonstrations(model, prompts, labeler, config.n_candidates, config.seed)
        result = run_sft(config, demos, config.out, model=model)
        metrics = {
            "n_demonstrations": len(demos),
            "demonstration_true_score": float(labeler.score(*zip(*demos, strict=True)).mean()),
            "first_epoch_loss": result.metrics["first_epoch_loss"],
            "final_epoch_loss": result.metrics["final_epoch_loss"],
        }
        return result, metrics, model, None

    eval_samples = 0 if config.data is not None else config.eval_samples
    return _run_command(config, stage, eval_samples=eval_samples, seed=config.seed)


def _sft_on_data(config: SFTCommandConfig, model: Path) -> _Outcome:
    """SFT on the --data file, less its held-out prompts, whose loss is measured."""
    from lmgym.rlhf.data import heldout_split, read_demonstrations
    from lmgym.rlhf.sft import response_loss, run_sft

    assert config.data is not None
    train, heldout = heldout_split(read_demonstrations(config.data), _prompt, config.seed)
    result = run_sft(config, train, config.out, model=model)
    metrics: dict[str, Any] = {
        "n_demonstrations": len(train),
        "n_heldout_demonstrations": len(heldout),
        "first_epoch_loss": result.metrics["first_epoch_loss"],
        "final_epoch_loss": result.metrics["final_epoch_loss"],
    }
    if heldout:
        for when, lm in (("before", model), ("after", result.path)):
            metrics[f"heldout_loss_{when}"] = response_loss(
                lm, heldout, append_eos=config.append_eos
            )
    return result, metrics, model, None


def _prompt(item: tuple[str, Any]) -> str:
    return item[0]


def _data_rankings(path: Path) -> list[Any]:
    """The --data file's pairs and rankings as rankings, completions in the file's order."""
    from lmgym.rlhf.data import read_preferences
    from lmgym.rlhf.rankings import Ranking

    return [Ranking(prompt, texts, list(range(len(texts)))) for prompt, texts in
            read_preferences(path)]  # fmt: skip


# --- lmgym reward-model ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RewardModelCommandConfig(RewardModelConfig, _CommandOptions, _RankingOptions, _PolicyOption):
    """Settings of ``lmgym reward-model``: the RM stage's config plus its inputs.

    The reward model starts from --policy (its transformer, with a scalar head).

    Attributes:
        data: JSONL file of your preferences to train on instead of the simulated labeler's
            rankings: pairs {"prompt", "chosen", "rejected"} and/or rankings {"prompt",
            "completions": [best, ..., worst]}, one a line; the rankings of heldout_fraction
            of its distinct prompts (chosen by --seed) are held out to measure accuracy on.
        heldout_prompts: Where held-out rankings come from: ``test`` ranks samples on the test
            prompts; ``split`` holds out heldout_fraction of the training prompts (always,
            with --data).

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> RewardModelCommandConfig(policy=DEFAULT_MODEL_DIR, k=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: k=1 is not an int >= 2: a ranking compares K >= 2 completions ...
    """

    data: Path | None = checked(None, check_data("preferences", min_prompts=2))
    heldout_prompts: Literal["test", "split"] = choice("test", "test", "split")


def run_reward_model_command(config: RewardModelCommandConfig) -> dict[str, Any]:
    """``lmgym reward-model``: rank samples of the policy, train the RM, measure it.

    Returns what metrics.json holds: held-out pairwise accuracy against the noisy labeler and
    against the noise-free true order, the labeler's own ceiling, and the correlation of RM
    score and true score.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> config = RewardModelCommandConfig(policy=DEFAULT_MODEL_DIR, k=2,
        ...     rankings_per_prompt=1, epochs=1, out=Path(tempfile.mkdtemp()) / "rm",
        ...     progress=False)
        >>> metrics = run_reward_model_command(config)
        >>> 0 <= metrics["heldout_accuracy"] <= 1
        True
    """

    def stage() -> _Outcome:
        from lmgym.rlhf.reward_model import train_reward_model

        if config.data is None:
            rankings, heldout = _rankings(config, heldout=config.heldout_prompts == "test")
        else:
            rankings, heldout = _data_rankings(config.data), None
        result = train_reward_model(
            config, rankings, config.out, model=config.policy, heldout=heldout
        )
        metrics = dict(result.metrics)
        metrics["training_wall_time_s"] = metrics.pop("wall_time_s")
        if config.data is not None:  # the embedded task's hidden score says nothing of them
            for key in ("heldout_true_accuracy", "oracle_accuracy", "true_score_correlation"):
                metrics.pop(key)
        return result, metrics, config.policy, None

    # The RM is measured on held-out rankings instead.
    return _run_command(config, stage, eval_samples=0, seed=config.seed)


# --- lmgym ppo-rm ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PPORMCommandConfig(PPOStageConfig, _CommandOptions, _EvalOptions, _PolicyOption):
    """Settings of ``lmgym ppo-rm``: :class:`~lmgym.rlhf.config.PPOStageConfig` plus inputs.

    The policy is also the KL reference. The RM is standardised (mean 0, std 1) on samples of
    the policy, so β means the same for every RM, as in ``lmgym rlhf``.

    Attributes:
        reward_model: Directory of the reward model PPO is paid by (`lmgym reward-model`).
        norm_samples: Samples of the policy per training prompt that the RM is standardised on.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> PPORMCommandConfig(policy=DEFAULT_MODEL_DIR, reward_model=Path("no/such/rm"))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.error.ModelLoadError: reward_model='no/such/rm' does not exist; expected a local ...
    """

    reward_model: Path = model_dir()
    norm_samples: int = integer(4)


def run_ppo_rm_command(config: PPORMCommandConfig) -> dict[str, Any]:
    """``lmgym ppo-rm``: PPO on ``LMBandit-v0`` paid by the learned reward model.

    Returns what metrics.json holds: RM score and true score per rollout, and on the held-out
    prompts before and after training.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> from lmgym.rlhf.learned_reward import init_reward_model
        >>> from lmgym.rlhf.fit import save_model_dir
        >>> rm_dir = save_model_dir(Path(tempfile.mkdtemp()) / "rm",
        ...                         *init_reward_model(DEFAULT_MODEL_DIR), {})  # untrained RM
        >>> config = PPORMCommandConfig(policy=DEFAULT_MODEL_DIR, reward_model=rm_dir,
        ...     steps=16, n_envs=4, n_steps=4, batch_size=16, n_epochs=1, norm_samples=1,
        ...     eval_samples=0, out=Path(tempfile.mkdtemp()) / "ppo", progress=False)
        >>> metrics = run_ppo_rm_command(config)
        >>> metrics["history"]["timesteps"]
        [16]
    """

    def stage() -> _Outcome:
        from lmgym.models.corpus import prompts as corpus_prompts
        from lmgym.models.device import resolve_device
        from lmgym.models.generation import DecodingConfig
        from lmgym.models.loading import load_model
        from lmgym.rlhf.learned_reward import LearnedRewardModel
        from lmgym.rlhf.ppo_stage import NormalizedReward, run_ppo_stage
        from lmgym.rlhf.rankings import sample_completions
        from lmgym.seeding import set_seed

        # auto resolved once, so the policy's samples, the RM and PPO share one device.
        device = resolve_device(config.device)
        model, tokenizer = load_model(config.policy, device=device)
        prompts = corpus_prompts("train") * config.norm_samples
        set_seed(config.seed)
        texts, _ = sample_completions(model, tokenizer, prompts, DecodingConfig())
        rm = LearnedRewardModel(
            config.reward_model,
            policy_tokenizer=config.policy,
            device=device,
            dtype=config.dtype,
        )
        reward = NormalizedReward.fit(rm, prompts, texts)
        result = run_ppo_stage(config, reward, config.out, model=config.policy)
        metrics: dict[str, Any] = {
            "normalisation_mean": reward.mean,
            "normalisation_std": reward.std,
            "training_wall_time_s": result.metrics["wall_time_s"],
            "history": result.history,
        }
        return result, metrics, config.policy, reward

    return _run_command(config, stage, eval_samples=config.eval_samples, seed=config.seed)


# --- lmgym dpo ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DPOCommandConfig(DPOConfig, _CommandOptions, _EvalOptions, _RankingOptions, _PolicyOption):
    """Settings of ``lmgym dpo``: :class:`~lmgym.rlhf.config.DPOConfig` plus its inputs.

    Attributes:
        reference: Directory of the frozen reference π_ref; None: a frozen copy of --policy.
        data: JSONL file of your preferences to train on instead of the simulated labeler's
            rankings: pairs {"prompt", "chosen", "rejected"} and/or rankings {"prompt",
            "completions": [best, ..., worst]} (each ranking gives all its pairs), one a line;
            the records of 10% of its distinct prompts (chosen by --seed) are held out, and
            the DPO loss and implicit-reward accuracy on their pairs are measured after
            training (in place of the true score on the test prompts).

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> DPOCommandConfig(policy=DEFAULT_MODEL_DIR, beta=0)
        Traceback (most recent call last):
        ...
        ValueError: beta=0 must be a finite number > 0; pass one, e.g. beta=0.1.
    """

    reference: Path | None = model_dir(None)
    data: Path | None = checked(None, check_data("preferences"))


def run_dpo_command(config: DPOCommandConfig) -> dict[str, Any]:
    """``lmgym dpo``: rank samples of the policy, then DPO on the preference pairs.

    Returns what metrics.json holds: the final loss and implicit-reward accuracy, and the true
    score on the held-out prompts before and after training.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> config = DPOCommandConfig(policy=DEFAULT_MODEL_DIR, k=2, rankings_per_prompt=1,
        ...     epochs=1, eval_samples=0, out=Path(tempfile.mkdtemp()) / "dpo", progress=False)
        >>> run_dpo_command(config)["n_rankings"]
        45
    """

    def stage() -> _Outcome:
        from lmgym.rlhf.data import heldout_split
        from lmgym.rlhf.dpo import evaluate_dpo, run_dpo
        from lmgym.rlhf.rankings import preference_pairs

        heldout: list[Any] = []
        if config.data is None:
            rankings, _ = _rankings(config, heldout=False)
        else:
            rankings, heldout = heldout_split(
                _data_rankings(config.data), lambda r: r.prompt, config.seed
            )
        result = run_dpo(
            config, rankings, config.out, model=config.policy, reference=config.reference
        )
        metrics: dict[str, Any] = {"n_rankings": len(rankings)}
        keys = ("n_pairs", "final_epoch_loss", "final_epoch_reward_accuracy")
        metrics |= {key: result.metrics[key] for key in keys}
        if heldout:
            pairs = preference_pairs(heldout)
            scores = evaluate_dpo(
                result.path, config.reference or config.policy, pairs, config.beta
            )
            metrics |= {"n_heldout_pairs": len(pairs), "heldout_loss": scores["loss"],
                        "heldout_reward_accuracy": scores["reward_accuracy"]}  # fmt: skip
        return result, metrics, config.policy, None

    eval_samples = 0 if config.data is not None else config.eval_samples
    return _run_command(config, stage, eval_samples=eval_samples, seed=config.seed)


# --- what the lmgym command shows --------------------------------------------------------------


def render_metrics(config: StageConfig, metrics: dict[str, Any]) -> str:
    """What a stage command prints: its figures, one a line, and where it wrote them.

    Example:
        >>> print(render_metrics(SFTConfig(), {"final_epoch_loss": 1.23456, "path": "runs/sft"}))
          final_epoch_loss             1.235
        wrote runs/sft: the model and metrics.json
    """
    lines = [
        f"  {key:<28} {value:.4g}" if isinstance(value, float) else f"  {key:<28} {value}"
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return "\n".join([*lines, f"wrote {metrics['path']}: the model and metrics.json"])
