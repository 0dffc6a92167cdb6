"""PPO (and PPO-ptx) against the learned reward model, measured against the true score.

The RL stage of the InstructGPT recipe (Ouyang et al. 2022, section 3.5) on lmgym's own parts:
``gym.make_vec("LMBandit-v0", reward_fn=<the learned RM>, model=<the SFT model>)`` pays each
completion ``r_θ(x, y) − β · KL(π_φ ‖ π_SFT)`` (the env's frozen copy of the SFT model is the KL
reference), and SB3's PPO trains :class:`~lmgym.agents.LMActorCriticPolicy`, initialised from the
same SFT model, on it; :class:`~lmgym.rlhf.ptx.PPOPtx` when γ > 0.

While it trains, :class:`ScoreHistoryCallback` records, for every rollout, the mean reward-model
score of the completions the policy wrote *and* their hidden true score (which the RM never saw),
plus their KL to the SFT model and their fluency. Plotted against PPO steps, these show reward
over-optimisation (Gao et al. 2023): with a small β the RM score keeps rising while the true
score stalls or falls, because the policy finds completions the RM over-rates.

The learned RM's scale is arbitrary (the pairwise loss fixes only differences), so the stage
trains on :class:`NormalizedReward`: the RM standardised to mean 0 and standard deviation 1 on
the SFT model's own completions, so that β means the same thing for every RM (InstructGPT
normalised the RM's bias the same way).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

import lmgym  # noqa: F401  (registers LMBandit-v0)
from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
from lmgym.models.corpus import parses
from lmgym.models.corpus import prompts as corpus_prompts
from lmgym.models.device import resolve_device
from lmgym.rewards import RewardLike, as_reward_fn, call_reward_fn
from lmgym.rlhf.config import PPOStageConfig, StageResult
from lmgym.rlhf.fit import resolve_out
from lmgym.rlhf.labelers import true_score
from lmgym.rlhf.ptx import PPOPtx
from lmgym.seeding import set_seed

__all__ = [
    "NormalizedReward",
    "PPOStageConfig",
    "ScoreHistory",
    "ScoreHistoryCallback",
    "run_ppo_stage",
]

logger = logging.getLogger(__name__)

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


class NormalizedReward:
    """A reward function standardised as ``(r − mean) / std``: same ranking, fixed scale.

    Token ids the env passes are forwarded to the wrapped reward when it takes them.

    Args:
        reward_fn: Any reward :func:`lmgym.rewards.as_reward_fn` accepts (e.g. the learned RM).
        mean: Subtracted from every score.
        std: Divides every score (> 0).

    Example:
        >>> reward = NormalizedReward.fit(lambda text: len(text), ["p"] * 3, ["a", "bb", "ccc"])
        >>> reward(["p", "p"], ["bb", "dddd"]).round(3).tolist()
        [0.0, 2.449]
    """

    def __init__(self, reward_fn: RewardLike, mean: float, std: float) -> None:
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(
                f"mean={mean!r}, std={std!r}: expected finite numbers with std > 0; a reward "
                "that is constant on the fitting texts cannot be standardised."
            )
        self.reward_fn = as_reward_fn(reward_fn)
        self.mean = float(mean)
        self.std = float(std)

    @classmethod
    def fit(
        cls, reward_fn: RewardLike, prompts: Sequence[str], completions: Sequence[str]
    ) -> NormalizedReward:
        """Standardise ``reward_fn`` with the mean and std of its scores on these texts."""
        scores = call_reward_fn(as_reward_fn(reward_fn), prompts, completions)
        if scores.size < 2:
            raise ValueError(
                f"got {scores.size} text(s) to fit the normalisation on; expected at least 2."
            )
        return cls(reward_fn, float(scores.mean()), float(scores.std()))

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        prompt_ids: Sequence[Sequence[int]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Standardised scores (B,)."""
        raw = call_reward_fn(
            self.reward_fn,
            prompts,
            completions,
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
        )
        return (raw - self.mean) / self.std

    def __repr__(self) -> str:
        return f"NormalizedReward({self.reward_fn.name}, mean={self.mean:.4g}, std={self.std:.4g})"


@dataclass
class ScoreHistory:
    """Per-rollout means of the completions the policy wrote while it trained.

    Attributes:
        timesteps: Env steps taken at the end of the rollout.
        reward_model: Mean score of the reward the policy trains on (the normalised RM).
        true_score: Mean hidden true score (never seen by the RM or the policy).
        kl: Mean KL to the reference, summed over a completion (k1 estimate).
        fluency: Fraction of prompt + completion that pass the grammar check.
    """

    timesteps: list[int] = field(default_factory=list)
    reward_model: list[float] = field(default_factory=list)
    true_score: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    fluency: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        """JSON-ready copy."""
        return asdict(self)


class ScoreHistoryCallback(BaseCallback):
    """Record RM score, true score, KL and fluency of every rollout's completions.

    It reads ``prompt``, ``completion``, ``reward_model`` and ``kl`` from the infos of ended
    episodes (``LMBandit-v0``'s infos) and scores the rollout's texts with ``true_score_fn`` in
    one batch at the rollout's end. With ``progress`` it also shows a progress bar.

    Args:
        true_score_fn: ``f(prompts, completions) -> (B,)``: the hidden true score.
        total: Steps the bar counts to (its total).
        desc: Label of the progress bar.
        progress: Show the bar.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from lmgym.agents import LMActorCriticPolicy, lm_policy_kwargs
        >>> env = gym.make("LMBandit-v0")
        >>> model = PPO(LMActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1,
        ...             policy_kwargs=lm_policy_kwargs(env))
        >>> callback = ScoreHistoryCallback(progress=False)
        >>> _ = model.learn(8, callback=callback)
        >>> callback.history.timesteps
        [8]
    """

    def __init__(
        self,
        true_score_fn: ScoreFn = true_score,
        *,
        total: int | None = None,
        desc: str = "PPO",
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.true_score_fn = true_score_fn
        self.history = ScoreHistory()
        self._total, self._desc, self._progress = total, desc, progress
        self._bar: Any = None
        self._rows: list[tuple[str, str, float, float]] = []

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self._total, desc=self._desc, disable=not self._progress)

    def _on_step(self) -> bool:
        dones = np.asarray(self.locals["dones"], dtype=bool)
        for done, info in zip(dones, self.locals["infos"], strict=True):
            if done and "completion" in info:
                self._rows.append(
                    (info["prompt"], info["completion"], info["reward_model"], info["kl"])
                )
        if self._bar is not None:
            self._bar.update(len(dones))
        return True

    def _on_rollout_end(self) -> None:
        if not self._rows:
            return
        prompts, completions, rm, kl = zip(*self._rows, strict=True)
        self._rows = []
        truth = np.asarray(self.true_score_fn(list(prompts), list(completions)), dtype=float)
        fluent = [
            parses(f"{p} {c}".strip(), allow_incomplete=True)
            for p, c in zip(prompts, completions, strict=True)
        ]
        h = self.history
        h.timesteps.append(int(self.num_timesteps))
        h.reward_model.append(float(np.mean(rm)))
        h.true_score.append(float(truth.mean()))
        h.kl.append(float(np.mean(kl)))
        h.fluency.append(float(np.mean(fluent)))
        self.logger.record("rlhf/reward_model", h.reward_model[-1])
        self.logger.record("rlhf/true_score", h.true_score[-1])
        self.logger.record("rlhf/kl", h.kl[-1])
        if self._bar is not None:
            self._bar.set_postfix(
                rm=f"{h.reward_model[-1]:+.2f}", true=f"{h.true_score[-1]:+.2f}", refresh=False
            )

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_ppo_stage(
    config: PPOStageConfig,
    reward_fn: RewardLike,
    out: str | Path | None = None,
    *,
    model: str | Path,
    reference: str | Path | None = None,
    prompts: Sequence[str] | None = None,
    true_score_fn: ScoreFn = true_score,
    desc: str | None = None,
) -> StageResult:
    """Fine-tune the model in ``model`` with PPO (PPO-ptx when γ > 0) on ``reward_fn``.

    Args:
        config: The run's settings.
        reward_fn: The reward the policy is paid (the learned RM, usually a
            :class:`NormalizedReward` of a :class:`~lmgym.rlhf.reward_model.LearnedRewardModel`).
        out: Directory the trained policy is saved to; ``None``: a new temporary directory.
        model: The initial policy, and the KL reference unless ``reference`` is given (the SFT
            model's directory).
        reference: The KL reference's directory when the policy starts elsewhere, e.g. a later
            round of iterated RLHF continues from the last round's policy with the KL still to
            the SFT model (:mod:`lmgym.rlhf.rounds`); ``None``: ``model``.
        prompts: Training prompts; ``None``: ``lmgym.models.corpus.prompts("train")``.
        true_score_fn: The hidden true score, only recorded (never trained on).
        desc: Label of the progress bar; ``None``: from β and γ.

    Returns:
        A :class:`~lmgym.rlhf.config.StageResult`: the policy's directory, β, γ and the wall
        time as metrics, and the :class:`ScoreHistory` (RM score, true score, KL and fluency
        per rollout) as history.

    Example:
        >>> import tempfile
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> config = PPOStageConfig(steps=16, n_envs=4, n_steps=4, batch_size=16, progress=False)
        >>> result = run_ppo_stage(config, lambda text: text.count("great"), tempfile.mkdtemp(),
        ...                        model=DEFAULT_MODEL_DIR)
        >>> result.history["timesteps"]
        [16]
    """
    started = time.perf_counter()
    set_seed(config.seed)
    vec = SB3VecEnv(
        gym.make_vec(
            "LMBandit-v0",
            num_envs=config.n_envs,
            model=Path(model),
            ref_model=None if reference is None else Path(reference),
            reward_fn=reward_fn,
            prompts=corpus_prompts("train") if prompts is None else list(prompts),
            kl_coef=config.kl_coef,
            max_new_tokens=config.max_new_tokens,
            device=resolve_device(config.device),
            dtype=config.dtype,
        )
    )
    vec.seed(config.seed)
    common: dict[str, Any] = dict(
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=config.learning_rate,
        gamma=1.0,  # one-step episodes: nothing to discount
        seed=config.seed,
        # The policy loads its own float32 copy from the directory (the env's model is the
        # reference, in config.dtype).
        policy_kwargs=lm_policy_kwargs(vec),
        device=str(resolve_device(config.device)),
    )
    if config.ptx_coef > 0:
        agent: PPO = PPOPtx(
            LMActorCriticPolicy,
            vec,
            ptx_coef=config.ptx_coef,
            ptx_batch_size=config.ptx_batch_size,
            **common,
        )
    else:
        agent = PPO(LMActorCriticPolicy, vec, **common)
    assert isinstance(agent.policy, LMActorCriticPolicy)
    agent.policy.attach_to(vec)  # π_θ of the KL term: the log-probs it sampled with
    label = desc or (
        f"PPO-ptx β={config.kl_coef:g} γ={config.ptx_coef:g}"
        if config.ptx_coef > 0
        else f"PPO β={config.kl_coef:g}"
    )
    callback = ScoreHistoryCallback(
        true_score_fn, total=config.steps, desc=label, progress=config.progress
    )
    agent.learn(config.steps, callback=callback)
    path = resolve_out(out, "ppo")
    path.parent.mkdir(parents=True, exist_ok=True)
    agent.policy.save_pretrained(path)
    vec.close()
    metrics = {
        "kl_coef": config.kl_coef,
        "ptx_coef": config.ptx_coef,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    logger.info("%s: saved %s", label, path)
    return StageResult(path, metrics, callback.history.as_dict())
