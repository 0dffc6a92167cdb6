"""Build the envs and the SB3 model of one training run from its :class:`TrainConfig`.

LM envs run batched (``gym.make_vec`` under :class:`~lmgym.agents.SB3VecEnv`: the reference and
reward models run once per batch); ``CatGrid-v0`` runs as SB3's ``DummyVecEnv``. The LM policy
gets the env's model *directory* (``model=None`` is the embedded default), not the env's model
object: the policy loads its own copy, and a saved checkpoint pickles a path, not a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, MaskableLMActorCriticPolicy, SB3VecEnv, attach_sb3
from lmgym.training.algorithms import ALGORITHMS, env_spec, hyperparameters

if TYPE_CHECKING:
    from lmgym.training.train import TrainConfig


def env_kwargs(config: TrainConfig, *, evaluation: bool = False) -> dict[str, Any]:
    """``gym.make`` keyword arguments of the run's env (LM envs: model and KL settings).

    The evaluation env keeps β fixed at ``kl_coef`` (no adaptive controller), so the rewards
    before and after training are measured with the same penalty.
    """
    if not env_spec(config.env).lm:
        return {}
    kwargs: dict[str, Any] = {"kl_coef": config.kl_coef}
    if config.model is not None:
        kwargs["model"] = str(config.model)
    if not evaluation:
        kwargs.update(kl_target=config.kl_target, kl_horizon=config.steps)
    return kwargs


def make_env(config: TrainConfig, n_envs: int, *, evaluation: bool = False) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of ``config.env`` (not yet seeded).

    Example:
        >>> from lmgym.training.train import TrainConfig
        >>> make_env(TrainConfig(env="CatGrid-v0", algo="ppo"), 2).num_envs
        2
    """
    if env_spec(config.env).lm:
        kwargs = env_kwargs(config, evaluation=evaluation)
        return SB3VecEnv(gym.make_vec(config.env, num_envs=n_envs, **kwargs))
    return make_vec_env(config.env, n_envs=n_envs)


def lm_rewarder(env: VecEnv) -> Any:
    """The sequence rewarder of an LM run's batched env (its adaptive β lives there), or None."""
    if isinstance(env, SB3VecEnv):
        return env.venv.rewarder  # type: ignore[attr-defined]
    return None


def build_model(config: TrainConfig, env: VecEnv) -> BaseAlgorithm:
    """The algorithm, its policy and its default hyper-parameters on ``env``.

    Example:
        >>> from lmgym.training.train import TrainConfig
        >>> config = TrainConfig(env="CatGrid-v0", algo="a2c")
        >>> type(build_model(config, make_env(config, 2))).__name__
        'A2C'
    """
    assert config.policy is not None  # TrainConfig.__post_init__ resolves it
    spec = ALGORITHMS[config.algo]
    kwargs = hyperparameters(
        config.env, config.algo, config.policy, learning_rate=config.learning_rate
    )
    policy: Any = spec.mlp_policy
    if config.policy == "lm":
        maskable = config.algo == "maskable_ppo"
        policy = MaskableLMActorCriticPolicy if maskable else LMActorCriticPolicy
        model_dir = None if config.model is None else str(config.model)
        kwargs["policy_kwargs"] = {"model": model_dir, **kwargs.get("policy_kwargs", {})}
    return spec.cls(
        policy, env, seed=config.seed, tensorboard_log=str(config.out / "tb"), verbose=0, **kwargs
    )


def attach_policy(model: BaseAlgorithm, env: VecEnv, config: TrainConfig) -> str:
    """Make ``model``'s policy π_θ of ``env``'s KL penalty; returns the KL form it gets.

    ``"policy"``: the agent's own log-probs. ``"reference"``: the env's reference-only form, for
    algorithms whose policy cannot serve log-probs (RecurrentPPO, DQN). ``"none"``: no KL
    (CatGrid-v0).
    """
    if not env_spec(config.env).lm:
        return "none"
    if not ALGORITHMS[config.algo].serves_logprobs:
        return "reference"
    if isinstance(model.policy, LMActorCriticPolicy | MaskableLMActorCriticPolicy):
        model.policy.attach_to(env)  # serves the log-probs it sampled with: no 2nd forward
    else:
        attach_sb3(model, env)
    return "policy"
