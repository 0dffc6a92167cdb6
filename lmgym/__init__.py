"""lmgym: RL fine-tuning of language models as ordinary Gymnasium environments.

Importing the package registers ``LMBandit-v0``, ``LMToken-v0`` and ``CatGrid-v0`` with
Gymnasium, so ``gym.make("LMBandit-v0")`` works offline on the embedded default model.

Example:
    >>> import gymnasium as gym
    >>> import lmgym
    >>> env = gym.make("CatGrid-v0")
    >>> obs, info = env.reset(seed=0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmgym.dependencies import check_dependency_versions

# Before anything else: a transformers or Gymnasium release outside the tested range must stop
# here with one line that says how to fix it, not deep inside a forward pass later.
check_dependency_versions()

from lmgym.envs import register_envs  # noqa: E402
from lmgym.torch_threads import install_fork_hook  # noqa: E402

if TYPE_CHECKING:
    from lmgym.models.loading import load_default_model, load_model
    from lmgym.seeding import set_seed

__all__ = ["load_default_model", "load_model", "register_envs", "set_seed"]
__version__ = "0.2.0"

# torch and transformers take seconds to import; registering the envs needs neither, so the
# model helpers load on first use (PEP 562) and `import lmgym` / `lmgym --help` stay quick.
_LAZY = {
    "load_default_model": "lmgym.models.loading",
    "load_model": "lmgym.models.loading",
    "set_seed": "lmgym.seeding",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmgym' has no attribute {name!r}")


install_fork_hook()  # Gymnasium's async vector env forks workers; see lmgym.torch_threads
register_envs()
