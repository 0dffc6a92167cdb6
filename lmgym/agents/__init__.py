"""Agents: the LM actor-critic policy (optionally with LoRA) and adapters to stable-baselines3."""

from __future__ import annotations

from lmgym.agents.attach import (
    attach_sb3,
    lm_logprobs,
    lm_token_logprobs,
    sb3_policy_logprobs,
    sb3_token_logprobs,
)
from lmgym.agents.lm_policy import LMActorCriticPolicy, MaskableLMActorCriticPolicy
from lmgym.agents.lm_policy_setup import lm_policy_kwargs
from lmgym.agents.lora import AdapterDisabledReference
from lmgym.agents.vec_env import SB3VecEnv

__all__ = [
    "AdapterDisabledReference",
    "LMActorCriticPolicy",
    "MaskableLMActorCriticPolicy",
    "SB3VecEnv",
    "attach_sb3",
    "lm_logprobs",
    "lm_token_logprobs",
    "lm_policy_kwargs",
    "sb3_policy_logprobs",
    "sb3_token_logprobs",
]
