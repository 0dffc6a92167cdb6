"""Build the envs and the SB3 model of one training run from its :class:`TrainConfig`.

LM envs run batched (``gym.make_vec`` under :class:`~lmgym.agents.SB3VecEnv`: the reference and
reward models run once per batch); ``CatGrid-v0`` runs as SB3's ``DummyVecEnv``. The LM policy
gets the env's model *directory* (``model=None`` is the embedded default), not the env's model
object: the policy loads its own copy, so a resumed run rebuilds the same policy from the run's
settings and loads the checkpoint's weights into it.

An LM run trains on the corpus's ``train`` prompts and is evaluated on its held-out ``test``
prompts, whose nouns no training prompt uses (:func:`lmgym.models.corpus.prompts`): a score on
prompts the agent trained on would reward memorising them. With ``--prompts`` the split is the
user's (:func:`lmgym.training.task_options.split_prompts`), held out the same way. The splits,
the task's options and the adaptive β's default horizon are decided in modules that load no
torch (:mod:`lmgym.training.algorithms`, :mod:`lmgym.training.task_options`), so the configs
can check them while the CLI parses options.

The task's ``device`` places the env's models and the SB3 agent (resolved once, by
:func:`lmgym.models.device.resolve_device`, so ``auto`` means the same device for both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import LMActorCriticPolicy, MaskableLMActorCriticPolicy, SB3VecEnv, attach_sb3
from lmgym.models.device import resolve_device
from lmgym.rewards import RewardLike
from lmgym.training.algorithms import ALGORITHMS, algorithm_class, env_spec, hyperparameters
from lmgym.training.task_options import load_reward

if TYPE_CHECKING:
    from lmgym.training.train import TrainConfig

__all__ = ["attach_policy", "build_model", "env_kwargs", "lm_rewarder", "make_env"]


def env_kwargs(
    config: TrainConfig, *, evaluation: bool = False, reward_fn: RewardLike | None = None
) -> dict[str, Any]:
    """``gym.make`` keyword arguments of the run's env (LM envs: the task, the KL settings).

    The training env draws the training prompts, the evaluation env the held-out ones
    (:meth:`TrainConfig.prompt_split`). The evaluation env keeps β fixed at ``kl_coef`` (no
    adaptive controller), so the rewards before and after training are measured with the same
    penalty. ``reward_fn`` is the loaded ``--reward`` when the caller shares one between envs;
    None loads it here (or leaves the env's built-in reward).
    """
    if not env_spec(config.env).lm:
        return {}
    split = config.prompt_split()
    kwargs: dict[str, Any] = {
        "kl_coef": config.kl_coef,
        "prompts": split.eval if evaluation else split.train,
        "device": config.device,
        "dtype": config.dtype,
    }
    if config.model is not None:
        kwargs["model"] = config.model
    if reward_fn is None:
        reward_fn = load_reward(config.reward, config.device)
    if reward_fn is not None:
        kwargs["reward_fn"] = reward_fn
    if not evaluation and config.kl_target is not None:
        kwargs.update(kl_target=config.kl_target, kl_horizon=config.kl_horizon)
    return kwargs


def make_env(
    config: TrainConfig,
    n_envs: int,
    *,
    evaluation: bool = False,
    reward_fn: RewardLike | None = None,
) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of ``config.env`` (not yet seeded).

    ``reward_fn``: see :func:`env_kwargs`.

    Example:
        >>> from lmgym.training.train import TrainConfig
        >>> make_env(TrainConfig(env="CatGrid-v0", algo="ppo"), 2).num_envs
        2
    """
    if env_spec(config.env).lm:
        kwargs = env_kwargs(config, evaluation=evaluation, reward_fn=reward_fn)
        group_size = ALGORITHMS[config.algo].group_size
        if group_size > 1 and not evaluation:  # GRPO/RLOO: G completions of each prompt
            kwargs["group_size"] = group_size
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
    algorithm = algorithm_class(config.algo)
    kwargs = hyperparameters(
        config.env, config.algo, config.policy, learning_rate=config.learning_rate
    )
    policy: Any = spec.mlp_policy
    if config.policy == "lm":
        maskable = config.algo == "maskable_ppo"
        policy = MaskableLMActorCriticPolicy if maskable else LMActorCriticPolicy
        kwargs["policy_kwargs"] = {"model": config.model, **kwargs.get("policy_kwargs", {})}
    return algorithm(
        policy,
        env,
        seed=config.seed,
        device=str(resolve_device(config.device)),
        tensorboard_log=str(config.out / "tb"),
        verbose=0,
        **kwargs,
    )


def attach_policy(model: BaseAlgorithm, env: VecEnv, config: TrainConfig) -> str:
    """Make ``model``'s policy π_θ of ``env``'s KL penalty; returns the KL form it gets.

    ``"policy"``: the agent's own log-probs. ``"cross_entropy"``: the env's form with no policy
    attached (−log π_ref, not a KL), for algorithms whose policy cannot serve log-probs
    (RecurrentPPO, DQN). The same names as the env's ``info["kl_form"]``. ``"none"``: no KL
    (CatGrid-v0).
    """
    if not env_spec(config.env).lm:
        return "none"
    if not ALGORITHMS[config.algo].serves_logprobs:
        return "cross_entropy"
    if isinstance(model.policy, LMActorCriticPolicy | MaskableLMActorCriticPolicy):
        model.policy.attach_to(env)  # serves the log-probs it sampled with: no 2nd forward
    else:
        attach_sb3(model, env)
    return "policy"
