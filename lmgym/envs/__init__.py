"""Gymnasium environments; importing :mod:`lmgym` registers them with the Gymnasium registry."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry


def register_envs() -> None:
    """Register lmgym's environment ids with Gymnasium (idempotent)."""
    if "CatGrid-v0" not in registry:
        register(
            id="CatGrid-v0", entry_point="lmgym.envs.catgrid:CatGridEnv", max_episode_steps=100
        )
    if "LMBandit-v0" not in registry:
        register(
            id="LMBandit-v0",
            entry_point="lmgym.envs.bandit:LMBanditEnv",
            vector_entry_point="lmgym.envs.bandit_vector:LMBanditVectorEnv",
        )
    if "LMToken-v0" not in registry:
        register(
            id="LMToken-v0",
            entry_point="lmgym.envs.token:LMTokenEnv",
            vector_entry_point="lmgym.envs.token_vector:LMTokenVectorEnv",
        )
