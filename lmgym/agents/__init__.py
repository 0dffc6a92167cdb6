"""Agents: the LM actor-critic policy (optionally with LoRA) and adapters to stable-baselines3.

The public names are the policies, their kwargs helper, the vector-env adapter and the ways to
make a policy π_θ of an env's KL penalty (``attach_sb3`` for an SB3 model,
``attach_lora_reference`` to make a LoRA policy's base π_ref, ``lm_logprobs`` /
``lm_token_logprobs`` for a Hugging Face causal LM). The building blocks behind them stay in
their modules (``lmgym.agents.attach``, ``lmgym.agents.lora``, ...).
"""

from __future__ import annotations

from lmgym.agents.attach import attach_lora_reference, attach_sb3, lm_logprobs, lm_token_logprobs
from lmgym.agents.lm_policy import LMActorCriticPolicy, MaskableLMActorCriticPolicy
from lmgym.agents.lm_policy_setup import lm_policy_kwargs
from lmgym.agents.vec_env import SB3VecEnv

__all__ = [
    "LMActorCriticPolicy",
    "MaskableLMActorCriticPolicy",
    "SB3VecEnv",
    "attach_lora_reference",
    "attach_sb3",
    "lm_logprobs",
    "lm_policy_kwargs",
    "lm_token_logprobs",
]
