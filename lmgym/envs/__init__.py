"""Gymnasium environments; importing :mod:`lmgym` registers them with the Gymnasium registry.

``CatGrid-v0`` is the gridworld that introduces the RL terms; ``LMBandit-v0`` and ``LMToken-v0``
are the language-model envs (a whole completion per step, or one token per step), each with a
batched vector env for ``gym.make_vec``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

if TYPE_CHECKING:
    from lmgym.envs.bandit import LMBanditEnv
    from lmgym.envs.bandit_vector import LMBanditVectorEnv
    from lmgym.envs.catgrid import CatGridEnv
    from lmgym.envs.text_game import TextGameEnv
    from lmgym.envs.token import LMTokenEnv
    from lmgym.envs.token_vector import LMTokenVectorEnv

__all__ = [
    "CatGridEnv",
    "LMBanditEnv",
    "LMBanditVectorEnv",
    "LMTokenEnv",
    "LMTokenVectorEnv",
    "TextGameEnv",
    "register_envs",
]


def __getattr__(name: str) -> Any:
    """Import an env class on first use (PEP 562).

    The LM envs import torch and transformers, which take seconds; registering needs neither,
    so ``import lmgym`` stays quick.
    """
    module = {
        "CatGridEnv": "catgrid",
        "LMBanditEnv": "bandit",
        "LMBanditVectorEnv": "bandit_vector",
        "LMTokenEnv": "token",
        "LMTokenVectorEnv": "token_vector",
        "TextGameEnv": "text_game",
    }.get(name)
    if module is None:
        raise AttributeError(f"module 'lmgym.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmgym.envs.{module}"), name)


def register_envs() -> None:
    """Register lmgym's environment ids with Gymnasium (idempotent).

    Example:
        >>> import gymnasium as gym
        >>> register_envs()
        >>> "LMToken-v0" in gym.registry
        True
    """
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
    # Multi-turn text games (issue 21): any discrete game as a conversation with an LM.
    if "LMText-v0" not in registry:
        register(id="LMText-v0", entry_point="lmgym.envs.text_games:make_text_game")
    if "TextCatGrid-v0" not in registry:
        register(id="TextCatGrid-v0", entry_point="lmgym.envs.text_games:make_text_catgrid")
