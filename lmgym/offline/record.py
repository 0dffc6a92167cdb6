"""Record logged episodes of a policy on ``LMBandit-v0``: the input of offline RL.

The vector env does the work a rollout does: it draws the prompts, and scores a whole batch of
completions with one reward call and one reference pass. Each batch's completions come from one
``generate`` call, so recording N episodes takes ``ceil(N / num_envs)`` env steps.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from transformers import PreTrainedModel

from lmgym.envs.bandit_vector import LMBanditVectorEnv
from lmgym.models.generation import DecodingConfig, generate
from lmgym.offline.dataset import Episode, EpisodeDataset, tokenizer_fingerprint

__all__ = ["record_episodes"]

logger = logging.getLogger(__name__)


def record_episodes(
    env: LMBanditVectorEnv,
    n: int,
    *,
    model: PreTrainedModel | None = None,
    seed: int = 0,
    decoding: DecodingConfig | None = None,
) -> EpisodeDataset:
    """Sample ``n`` episodes of ``model`` on ``env`` and log them with the env's rewards.

    ``model`` is attached to the env as π_θ while it records, so the KL part of the reward is
    the KL between ``model`` and the env's reference (0 when ``model`` is the reference itself,
    the default); the policy attached before is put back afterwards. Every episode ends at
    its last token (``LMBandit-v0`` terminates after one step), and its one reward is paid there.
    The completion is cut where the env cuts it: after the first EOS or pad id.

    Args:
        env: A bandit vector env, ``gym.make_vec("LMBandit-v0", num_envs=B)``; B completions
            are sampled and scored per step.
        n: Episodes to record (>= 1).
        model: The behaviour policy; ``None``: the env's initial LM.
        seed: Seeds the env's prompts and the sampling.
        decoding: How to sample; ``None``: temperature 1, the env's ``max_new_tokens``.

    Returns:
        An :class:`~lmgym.offline.dataset.EpisodeDataset` of ``n`` episodes.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make_vec("LMBandit-v0", num_envs=8)
        >>> data = record_episodes(env, 10)
        >>> len(data), data.episodes[0].dones[-1]
        (10, 1)
    """
    from lmgym.agents import lm_logprobs
    from lmgym.seeding import set_seed

    if not isinstance(env, LMBanditVectorEnv):
        raise TypeError(
            f"env={type(env).__name__} is not an LMBandit-v0 vector env; expected "
            'gym.make_vec("LMBandit-v0", num_envs=64), which scores a batch per step.'
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not an int >= 1; pass the episodes to record, e.g. n=2000.")
    setup = env.models
    policy = setup.model if model is None else model
    decoding = decoding or DecodingConfig(max_new_tokens=env.max_new_tokens)
    if decoding.max_new_tokens > env.max_new_tokens:
        raise ValueError(
            f"decoding.max_new_tokens={decoding.max_new_tokens} exceeds the env's "
            f"max_new_tokens={env.max_new_tokens}; the action space has no room for it."
        )
    fingerprint = tokenizer_fingerprint(setup.tokenizer)
    previous = env.rewarder.policy
    env.attach_policy(lm_logprobs(policy, setup))
    episodes: list[Episode] = []
    try:
        set_seed(seed)
        observations, info = env.reset(seed=seed)
        prompts = list(info["prompt"])
        for _ in range(math.ceil(n / env.num_envs)):
            ids = torch.from_numpy(observations).to(setup.device)
            mask = (ids != setup.pad_token_id).long()
            sampled = generate(
                policy, ids, mask, decoding, eos_token_id=setup.eos_token_id,
                pad_token_id=setup.pad_token_id, vocab_size=setup.vocab_size,
            )  # fmt: skip
            actions = sampled.completion_ids.cpu().numpy()
            missing = env.max_new_tokens - actions.shape[1]
            if missing > 0:  # a shorter decoding limit: pad the action to the env's width
                pad = setup.pad_token_id
                actions = np.pad(actions, ((0, 0), (0, missing)), constant_values=pad)
            next_obs, rewards, _, _, step_info = env.step(actions)
            # The env's own count: its text ends at the first EOS or pad id (a model may
            # sample the pad id), which is the episode's last token.
            lengths = step_info["final_info"]["completion_length"].tolist()
            for i, length in enumerate(lengths):
                prompt_ids = observations[i][observations[i] != setup.pad_token_id].tolist()
                episodes.append(
                    Episode(
                        prompt=str(prompts[i]),
                        prompt_ids=prompt_ids,
                        completion_ids=actions[i, :length].tolist(),
                        rewards=[0.0] * (length - 1) + [float(rewards[i])],
                    )
                )
            observations, prompts = next_obs, list(step_info["prompt"])
    finally:
        env.attach_policy(previous)
    logger.info("recorded %d episodes", min(n, len(episodes)))
    return EpisodeDataset(episodes[:n], fingerprint, source=f"{n} recorded episodes")
