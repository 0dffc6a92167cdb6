"""Evaluate completions on fixed prompts with an LM env's own reward, without stepping it.

Evaluation scores a whole prompt set in one batch through the env's
:class:`~lmgym.envs.sequence_reward.SequenceRewarder`, so it uses exactly the reward the agent
trains on, leaves the env's episode state and its adaptive β untouched, and adds the fluency
measure (the corpus grammar check) that exposes reward hacking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lmgym.envs.bandit import LMBanditEnv
from lmgym.envs.bandit_vector import LMBanditVectorEnv
from lmgym.models.corpus import parses
from lmgym.models.generation import DecodingConfig, generate


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
    prompts: list[str],
    act: Callable[[np.ndarray], np.ndarray],
    *,
    samples_per_prompt: int = 1,
    n_examples: int = 3,
) -> EvalResult:
    """Score ``act(observations) -> actions`` on ``prompts`` with ``env``'s reward.

    ``samples_per_prompt`` repeats every prompt, so a stochastic policy's means rest on more
    than one completion per prompt (all of them scored in one batch).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> r = evaluate_actions_on_prompts(env, ["the food was"],
        ...                                 lambda obs: np.zeros((len(obs), 16), dtype=np.int64))
        >>> r.n
        1
    """
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt={samples_per_prompt} must be >= 1.")
    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    source, pad = env.prompt_source, env.lm.pad_token_id
    observations = np.stack([source.pad(source.encode(p), pad) for p in prompts])
    actions = np.asarray(act(observations), dtype=np.int64)
    batch = env.rewarder(prompts, observations, actions, update_controller=False)
    texts = [f"{p} {c}".strip() for p, c in zip(prompts, batch.completions, strict=True)]
    fluency = float(np.mean([parses(t, allow_incomplete=True) for t in texts]))
    return EvalResult(
        reward=float(batch.reward.mean()),
        reward_model=float(batch.reward_model.mean()),
        kl=float(batch.kl.mean()),
        fluency=fluency,
        n=len(prompts),
        examples=list(zip(prompts, batch.completions, strict=True))[::samples_per_prompt][
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
    lm = env.lm

    def act(observations: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(observations)
        out = generate(
            lm.model,
            ids,
            (ids != lm.pad_token_id).long(),
            decoding,
            eos_token_id=lm.eos_token_id,
            pad_token_id=lm.pad_token_id,
        )
        return out.completion_ids.numpy()

    return act
