"""lmgym: RL fine-tuning of language models as ordinary Gymnasium environments.

Importing the package registers ``LMBandit-v0`` and ``CatGrid-v0`` with Gymnasium, so
``gym.make("LMBandit-v0")`` works offline on the embedded default model.

Example:
    >>> import gymnasium as gym
    >>> import lmgym
    >>> env = gym.make("CatGrid-v0")
    >>> obs, info = env.reset(seed=0)
"""

from __future__ import annotations

from lmgym.envs import register_envs
from lmgym.models.loading import load_default_model, load_model
from lmgym.seeding import set_seed

__all__ = ["load_default_model", "load_model", "register_envs", "set_seed"]
__version__ = "0.1.0"

register_envs()
