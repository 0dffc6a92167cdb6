"""Evaluate completions on fixed prompts with an LM env's own reward, without stepping it.

Evaluation scores a whole prompt set in one batch through the env's
:class:`~lmgym.envs.sequence_reward.SequenceRewarder`, so it uses exactly the reward the agent
trains on, leaves the env's episode state and its adaptive β untouched, and adds the fluency
measure (the corpus grammar check) that exposes reward hacking.

:func:`evaluate_actions_on_prompts` scores any ``act`` function with a given env;
:class:`PolicyEvaluator` is the held-out evaluation of the RLHF stages and of ``lmgym rlhf``:
it samples saved policies on fixed prompts and adds the hidden true score, the sentiment and
the pre-training loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lmgym.envs.bandit import LMBanditEnv
from lmgym.envs.bandit_vector import LMBanditVectorEnv
from lmgym.envs.prompts import Prompt
from lmgym.models.corpus import generate_corpus, parses
from lmgym.models.generation import DecodingConfig, generate
from lmgym.models.lexicon import sentiment
from lmgym.models.loading import load_model
from lmgym.rewards import RewardLike
from lmgym.seeding import set_seed

__all__ = [
    "EVAL_CORPUS_SEED",
    "EvalResult",
    "PolicyEvaluator",
    "evaluate_actions_on_prompts",
    "lm_sampler",
    "prompt_observations",
]

EVAL_CORPUS_SEED = 1
"""Seed of the held-out reviews the pre-training loss is measured on (pre-training's eval seed)."""

ScoreFn = Callable[[Sequence[str], Sequence[str]], Any]


@dataclass
class EvalResult:
    """Means over the evaluated prompts.

    Attributes:
        reward: Env reward ``reward_model - kl_coef * kl``.
        reward_model: The reward model's score (the default task: lexicon sentiment).
        kl: KL summed over the completion, in the env's current form.
        fluency: Fraction of prompt + completion texts that pass the grammar check.
        n: Number of prompts.
        examples: A few (prompt, completion) pairs.
    """

    reward: float
    reward_model: float
    kl: float
    fluency: float
    n: int
    examples: list[tuple[str, str]]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return asdict(self)


def evaluate_actions_on_prompts(
    env: LMBanditEnv | LMBanditVectorEnv,
    prompts: Sequence[Prompt],
    act: Callable[[np.ndarray], np.ndarray],
    *,
    samples_per_prompt: int = 1,
    n_examples: int = 3,
) -> EvalResult:
    """Score ``act(observations) -> actions`` on ``prompts`` with ``env``'s reward.

    ``samples_per_prompt`` repeats every prompt, so a stochastic policy's means rest on more
    than one completion per prompt (all of them scored in one batch). A prompt may be a chat;
    the reward, the fluency check and the examples see its user text, as in the env.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> r = evaluate_actions_on_prompts(env, ["the soup was"],
        ...                                 lambda obs: np.zeros((len(obs), 16), dtype=np.int64))
        >>> r.n
        1
    """
    if samples_per_prompt < 1:
        raise ValueError(
            f"samples_per_prompt={samples_per_prompt} must be >= 1; pass e.g. samples_per_prompt=1."
        )
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    observations = prompt_observations(env, repeated)
    texts = [env.prompt_source.prepare(p)[0] for p in repeated]  # a chat's user text (cached)
    actions = np.asarray(act(observations), dtype=np.int64)
    batch = env.rewarder(texts, observations, actions, update_controller=False)
    fluency = float(np.mean(_fluent(texts, batch.completions)))
    return EvalResult(
        reward=float(batch.reward.mean()),
        reward_model=float(batch.reward_model.mean()),
        kl=float(batch.kl.mean()),
        fluency=fluency,
        n=len(texts),
        examples=list(zip(texts, batch.completions, strict=True))[::samples_per_prompt][
            :n_examples
        ],
    )


def lm_sampler(
    env: LMBanditEnv | LMBanditVectorEnv, decoding: DecodingConfig
) -> Callable[[np.ndarray], np.ndarray]:
    """``act`` function that samples completions from the env's (initial) LM.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> act = lm_sampler(env, DecodingConfig(max_new_tokens=16))
    """
    lm = env.models

    def act(observations: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(observations).to(lm.device)  # where the env's models run
        out = generate(
            lm.model,
            ids,
            (ids != lm.pad_token_id).long(),
            decoding,
            eos_token_id=lm.eos_token_id,
            pad_token_id=lm.pad_token_id,
            vocab_size=lm.vocab_size,  # a padded embedding's extra ids are no tokens
        )
        return out.completion_ids.cpu().numpy()

    return act


def prompt_observations(
    env: LMBanditEnv | LMBanditVectorEnv, prompts: Sequence[Prompt]
) -> np.ndarray:
    """The env's padded observation of each prompt (N, max_prompt_tokens).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> prompt_observations(env, ["the soup was", "the staff were"]).shape[0]
        2
    """
    source, pad = env.prompt_source, env.models.pad_token_id
    return np.stack([source.pad(source.encode(p), pad) for p in prompts])


def _fluent(prompts: Sequence[str], completions: Sequence[str]) -> list[bool]:
    """Whether each prompt + completion passes the corpus grammar check."""
    return [
        parses(f"{p} {c}".strip(), allow_incomplete=True)
        for p, c in zip(prompts, completions, strict=True)
    ]


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), se


class PolicyEvaluator:
    """Scores saved policies on fixed prompts: true score, RM score, KL, fluency, LM loss.

    Each policy samples ``samples`` completions per prompt (seeded, so every policy meets the
    same draws of torch's generator). The reward-model score and the KL to the reference come
    from an ``LMBandit-v0`` env built on the reference with ``reward_fn`` as its reward, so
    they are computed exactly as in PPO training; the env is only scored, never stepped.

    Args:
        reference_dir: The KL reference (the SFT model, or the policy a stage started from).
        reward_fn: The reward-model score to report (e.g. the standardised RM PPO trains on).
        prompts: Held-out prompts.
        samples: Completions per prompt.
        max_new_tokens: Length limit of a completion.
        seed: Seeds the sampling of every policy.
        true_score_fn: The hidden true score.
        corpus_docs: Held-out pre-training reviews the LM loss is measured on; 0 skips it.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR
        >>> evaluator = PolicyEvaluator(DEFAULT_MODEL_DIR, lambda t: t.count("great"),
        ...                             ["the soup was"], samples=2, corpus_docs=8)
        >>> row = evaluator(DEFAULT_MODEL_DIR)
        >>> abs(row["kl"]) < 1e-6, len(row["completions"])
        (True, 2)
    """

    def __init__(
        self,
        reference_dir: str | Path,
        reward_fn: RewardLike,
        prompts: Sequence[str],
        *,
        samples: int = 1,
        max_new_tokens: int = 16,
        seed: int = 0,
        true_score_fn: ScoreFn | None = None,
        corpus_docs: int = 256,
    ) -> None:
        from lmgym.rlhf.config import check_int
        from lmgym.rlhf.labelers import true_score

        check_int("samples", samples, minimum=1)
        check_int("corpus_docs", corpus_docs, minimum=0)
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
        self.observations = prompt_observations(env, self.prompts)
        self.decoding = DecodingConfig(max_new_tokens=max_new_tokens)
        self.seed = seed
        self.true_score_fn = true_score_fn or true_score
        self.corpus: tuple[torch.Tensor, torch.Tensor] | None = None
        if corpus_docs:
            from lmgym.rlhf.ptx import CorpusBatches

            docs = generate_corpus(corpus_docs, EVAL_CORPUS_SEED)
            self.corpus = CorpusBatches(docs, env.models.tokenizer, batch_size=len(docs)).next()

    def __call__(self, model_dir: str | Path) -> dict[str, Any]:
        """Means (and standard errors) over the prompts' samples, plus the completions."""
        setup = self.env.models
        model, tokenizer = load_model(model_dir)
        if tokenizer.get_vocab() != setup.tokenizer.get_vocab():
            raise ValueError(
                f"the policy in {str(model_dir)!r} has another tokenizer than the reference "
                "model; its token ids would mean other words to the reference. Evaluate "
                "policies fine-tuned from the same base model."
            )
        from lmgym.agents import lm_logprobs
        from lmgym.rlhf.ptx import corpus_lm_loss

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
        true_mean, true_se = _mean_se(truth)
        rm_mean, rm_se = _mean_se(np.asarray(batch.reward_model, dtype=float))
        row: dict[str, Any] = {
            "true_score": true_mean,
            "true_score_se": true_se,
            "rm_score": rm_mean,
            "rm_score_se": rm_se,
            "sentiment": float(np.mean([sentiment(c) for c in completions])),
            "fluency": float(np.mean(_fluent(self.prompts, completions))),
            "kl": float(batch.kl.mean()),
        }
        if self.corpus is not None:
            with torch.inference_mode():
                row["corpus_loss"] = float(corpus_lm_loss(model, *self.corpus))
        row["completions"] = list(completions)
        return row
