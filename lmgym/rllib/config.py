"""``ppo_config``: an RLlib ``PPOConfig`` for an lmgym env, and the guard on LM envs.

RLlib's EnvRunners are separate processes: a Gymnasium id registered by ``import lmgym`` in the
driver is unknown there, so the env is registered with ``ray.tune.registry.register_env`` under
``"lmgym/<id>"`` with a creator that imports lmgym itself (:func:`make_env`).

RLlib's default module must never see an LM env: on its int64 token ``Box`` it fails without a
message (``train()`` reports 0 env steps after about a minute). :func:`check_lm_module` refuses
such a config up front; :func:`ppo_config` always passes it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import gymnasium as gym
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.env_to_module import FlattenObservations
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from lmgym.error import Error
from lmgym.rllib.module import LMRLModule

__all__ = [
    "LM_ENV_IDS",
    "RLlibConfigError",
    "check_lm_module",
    "env_name",
    "flatten_observations",
    "make_env",
    "ppo_config",
]

LM_ENV_IDS = ("LMBandit-v0", "LMToken-v0", "LMText-v0", "TextCatGrid-v0")
"""lmgym envs whose observations are token ids: they need :class:`~lmgym.rllib.LMRLModule`."""


class RLlibConfigError(Error, ValueError):
    """An RLlib config would run an lmgym env in a way known to fail."""


def env_name(env_id: str) -> str:
    """The name :func:`ppo_config` registers ``env_id`` under with Ray Tune.

    Example:
        >>> env_name("LMBandit-v0")
        'lmgym/LMBandit-v0'
    """
    return f"lmgym/{env_id}"


def make_env(env_id: str, env_config: dict[str, Any] | None = None) -> gym.Env:
    """Build ``env_id`` with ``env_config`` as keyword arguments, importing lmgym first.

    The env creator of :func:`ppo_config`: it runs in each EnvRunner process, where only this
    import registers lmgym's ids.
    """
    import lmgym  # noqa: F401  (registers the ids in this process)

    return gym.make(env_id, **dict(env_config or {}))


def flatten_observations(
    env: Any = None, spaces: Any = None, device: Any = None
) -> FlattenObservations:
    """RLlib's env-to-module connector that one-hot encodes discrete observations (CatGrid-v0).

    The signature is RLlib's ``env_to_module_connector(env, spaces, device)``.
    """
    return FlattenObservations()


def _is_lm_env(env: object) -> bool:
    name = env if isinstance(env, str) else getattr(env, "__name__", "")
    return isinstance(name, str) and any(name.endswith(env_id) for env_id in LM_ENV_IDS)


def check_lm_module(config: PPOConfig) -> None:
    """Raise :class:`RLlibConfigError` if ``config`` runs an lmgym LM env without LMRLModule.

    Call it on a config you built yourself, before ``config.build_algo()``.
    """
    if not _is_lm_env(config.env):
        return
    spec = config.rl_module_spec
    module_class = spec.module_class if isinstance(spec, RLModuleSpec) else None
    if not (isinstance(module_class, type) and issubclass(module_class, LMRLModule)):
        raise RLlibConfigError(
            f"config.env={config.env!r} is an lmgym LM env but the RL module is "
            f"{getattr(module_class, '__name__', None) or 'RLlib default'}; expected "
            "lmgym.rllib.LMRLModule (RLlib's default module fails without a message on "
            "token-id observations: 0 env steps). Fix: build the config with "
            "lmgym.rllib.ppo_config(env_id), or .rl_module(rl_module_spec=RLModuleSpec("
            "module_class=LMRLModule, model_config={'model': ...}))."
        )


def ppo_config(
    env_id: str = "LMBandit-v0",
    env_config: dict[str, Any] | None = None,
    num_env_runners: int = 2,
    *,
    train_batch_size: int = 32,
    minibatch_size: int = 16,
    num_epochs: int = 1,
    lr: float = 1e-4,
) -> PPOConfig:
    """A small RLlib ``PPOConfig`` for an lmgym env, ready for ``.build_algo()``.

    LM envs (:data:`LM_ENV_IDS`) get :class:`~lmgym.rllib.LMRLModule` on the env's own model
    (``env_config["model"]``, or the embedded default when it has none), and
    no PPO KL loss (the env's reward already has the KL penalty to the reference). Other envs
    (``CatGrid-v0``) get RLlib's default module, with discrete observations one-hot encoded by
    RLlib's ``FlattenObservations`` connector.

    Args:
        env_id: A Gymnasium id that ``import lmgym`` registers.
        env_config: Keyword arguments of ``gym.make(env_id, ...)``; its ``model`` must be a
            directory or hub id (the workers load it), not a model object.
        num_env_runners: Sampling processes (0: sample in the driver).
        train_batch_size: Env steps per training iteration (one per episode on the bandit).
        minibatch_size: Rows per gradient step.
        num_epochs: Passes over each batch.
        lr: Adam's learning rate.

    Returns:
        The config; adjust it further with RLlib's own methods.
    """
    env_config = dict(env_config or {})
    model = env_config.get("model")
    if isinstance(model, os.PathLike):
        model = env_config["model"] = os.fspath(model)
    if model is not None and not isinstance(model, str):
        raise RLlibConfigError(
            f"env_config['model'] is a {type(model).__name__} object; expected a directory or a "
            "hub id (str or Path): each EnvRunner and the learner load the model themselves, so "
            "an object cannot reach them. Fix: model.save_pretrained(DIR) (and the tokenizer), "
            "then env_config={'model': DIR}."
        )
    name = env_name(env_id)
    register_env(name, functools.partial(make_env, env_id))
    config = (
        PPOConfig()
        .environment(name, env_config=env_config)
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=1)
        .training(
            train_batch_size_per_learner=train_batch_size,
            minibatch_size=minibatch_size,
            num_epochs=num_epochs,
            lr=lr,
        )
    )
    if env_id in LM_ENV_IDS:
        model_config = {"model": model}
        config = config.rl_module(
            rl_module_spec=RLModuleSpec(module_class=LMRLModule, model_config=model_config)
        ).training(use_kl_loss=False, kl_coeff=0.0, vf_clip_param=100.0)
    else:
        config = config.env_runners(env_to_module_connector=flatten_observations).rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[64, 64])
        )
    check_lm_module(config)
    return config
