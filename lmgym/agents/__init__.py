"""Agents: adapters between lmgym's envs and stable-baselines3 (and, later, the LM policy)."""

from __future__ import annotations

from lmgym.agents.attach import (
    attach_sb3,
    lm_logprobs,
    lm_token_logprobs,
    sb3_policy_logprobs,
    sb3_token_logprobs,
)
from lmgym.agents.completion_distribution import CompletionDistribution
from lmgym.agents.lm_policy import LMActorCriticPolicy, lm_policy_kwargs
from lmgym.agents.vec_env import SB3VecEnv

__all__ = [
    "CompletionDistribution",
    "LMActorCriticPolicy",
    "SB3VecEnv",
    "attach_sb3",
    "lm_logprobs",
    "lm_token_logprobs",
    "lm_policy_kwargs",
    "sb3_policy_logprobs",
    "sb3_token_logprobs",
]
