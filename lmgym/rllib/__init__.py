"""RLlib support: train an lmgym env's causal LM with RLlib's PPO on many EnvRunners.

- :class:`LMRLModule`: an RLlib RL module whose policy is the Hugging Face causal LM
  (``LMBandit-v0``: whole completions; ``LMToken-v0``: the next token).
- :class:`CompletionLogits`: the action distribution PPO scores a completion with.
- :func:`ppo_config`: a small ``PPOConfig`` for an lmgym env (registers it for the workers,
  picks the module, guards LM envs against RLlib's default module with
  :func:`check_lm_module`).

Ray is an optional dependency: ``pip install 'lmgym[ray]'``.
"""

from __future__ import annotations

try:
    import ray.rllib  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "lmgym.rllib needs Ray RLlib, which is not installed; run: pip install 'lmgym[ray]'"
    ) from err

from lmgym.rllib.config import (
    LM_ENV_IDS,
    RLlibConfigError,
    check_lm_module,
    env_name,
    make_env,
    ppo_config,
)
from lmgym.rllib.distribution import CompletionLogits, completion_dist_inputs
from lmgym.rllib.module import LMRLModule

__all__ = [
    "LM_ENV_IDS",
    "CompletionLogits",
    "LMRLModule",
    "RLlibConfigError",
    "check_lm_module",
    "completion_dist_inputs",
    "env_name",
    "make_env",
    "ppo_config",
]
