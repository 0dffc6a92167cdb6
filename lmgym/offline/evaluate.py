"""Held-out evaluation of offline-RL policies with an LM env's own reward and KL.

Every policy (the behaviour LM, filtered BC, ILQL at each β) samples completions of the same
held-out prompts with the same seed, and the env scores them exactly as it scores a training
step: ``R = r_φ − kl_coef · KL``, with the KL between the policy's own distribution (for ILQL:
the LM's logits plus β·(Q − V), :func:`lmgym.offline.decoding.ilql_logprobs`) and the env's
reference, the base model. Nothing is stepped, and an adaptive β is left where it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from lmgym.envs.bandit import LMBanditEnv
from lmgym.evaluation import EvalResult, evaluate_actions_on_prompts
from lmgym.models.generation import DecodingConfig, generate
from lmgym.offline.decoding import ilql_logprobs
from lmgym.offline.model import ILQLModel
from lmgym.seeding import set_seed

__all__ = ["evaluate_policy"]


def evaluate_policy(
    env: LMBanditEnv,
    policy: PreTrainedModel | ILQLModel,
    prompts: Sequence[str],
    *,
    samples: int = 4,
    seed: int = 0,
    decoding: DecodingConfig | None = None,
) -> EvalResult:
    """Sample ``policy`` on ``prompts`` (``samples`` each) and score it with ``env``'s reward.

    ``policy`` is attached to the env as π_θ for the KL while it is scored; the policy
    attached before is put back. Use an env built with ``kl_estimator="full"`` for the exact
    KL along each sample.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0", kl_estimator="full").unwrapped
        >>> result = evaluate_policy(env, env.models.model, ["the soup was"], samples=2)
        >>> result.n, abs(result.kl) < 1e-6
        (2, True)
    """
    from lmgym.agents import lm_logprobs

    setup = env.models
    decoding = decoding or DecodingConfig(max_new_tokens=env.max_new_tokens)
    logprobs = (
        ilql_logprobs(policy, setup)
        if isinstance(policy, ILQLModel)
        else lm_logprobs(policy, setup)
    )

    def act(observations: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(observations).to(setup.device)
        set_seed(seed)  # every policy meets the same draws of the generator
        sampled = generate(
            policy,  # type: ignore[arg-type]  # an ILQLModel generates as an LM does
            ids,
            (ids != setup.pad_token_id).long(),
            decoding,
            eos_token_id=setup.eos_token_id,
            pad_token_id=setup.pad_token_id,
            vocab_size=setup.vocab_size,
        )
        return sampled.completion_ids.cpu().numpy()

    previous = env.rewarder.policy
    env.attach_policy(logprobs)
    try:
        return evaluate_actions_on_prompts(env, prompts, act, samples_per_prompt=samples)
    finally:
        env.attach_policy(previous)
