"""Attach a stable-baselines3 model as π_θ of an env's KL penalty, in one line.

The KL term ``log π_θ(y_t) − log π_ref(y_t)`` needs the log-probs of the policy being trained.
An LM policy attaches itself; for any other SB3 policy this module reads them off the policy's
action distribution.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from torch import nn
from transformers import PreTrainedModel

from lmgym.agents.token_head import next_token_outputs
from lmgym.agents.vec_env import SB3VecEnv
from lmgym.envs.lm_env_parts import LMModels
from lmgym.envs.sequence_reward import PolicyLogProbFn
from lmgym.envs.token_batch import TokenPolicyLogProbFn
from lmgym.models.loading import check_vocab_fits
from lmgym.models.scoring import completion_logprobs

__all__ = [
    "attach_logprobs",
    "attach_lora_reference",
    "attach_sb3",
    "lm_envs",
    "lm_logprobs",
    "lm_token_logprobs",
    "sb3_policy_logprobs",
    "sb3_token_logprobs",
]


def sb3_policy_logprobs(model: BaseAlgorithm) -> PolicyLogProbFn:
    """Build ``f(observations, actions) -> log π_θ`` from an SB3 model's policy.

    For a ``MultiDiscrete`` completion (``MlpPolicy`` on ``LMBandit-v0``), SB3's distribution is
    one categorical per position, so this returns the full (B, T, V) log-distributions; the env
    gathers the chosen tokens' log-probs and can also use the exact ``full`` estimator.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> env = gym.make("LMBandit-v0")
        >>> f = sb3_policy_logprobs(PPO("MlpPolicy", env))
    """
    policy = model.policy

    def logprobs(observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            obs_tensor, _ = policy.obs_to_tensor(observations)
            distribution = policy.get_distribution(obs_tensor)  # type: ignore[operator]
            if isinstance(distribution, MultiCategoricalDistribution):
                # torch's Categorical.logits are normalised log-probs: (B, V) per position.
                per_position = [d.logits for d in distribution.distribution]
                return torch.stack(per_position, dim=1).cpu()  # (B, T, V)
            if isinstance(distribution, CategoricalDistribution):
                return distribution.distribution.logits.unsqueeze(1).cpu()  # (B, 1, V)
            raise TypeError(
                f"{type(policy).__name__} has a {type(distribution).__name__}; expected a "
                "categorical distribution over token ids (MlpPolicy on LMBandit-v0)."
            )

    return logprobs


def sb3_token_logprobs(model: BaseAlgorithm) -> TokenPolicyLogProbFn:
    """Build ``f(observations) -> (B, V) log π_θ`` (``LMToken-v0``'s protocol) from an SB3 model.

    Works for any policy whose action distribution is a categorical over token ids: SB3's
    ``MlpPolicy`` and sb3-contrib's maskable one (whose log-probs are then those of the
    unmasked distribution: the env's mask is not applied here).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> env = gym.make("LMToken-v0")
        >>> f = sb3_token_logprobs(PPO("MlpPolicy", env))
    """
    policy = model.policy

    def logprobs(observations: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            obs_tensor, _ = policy.obs_to_tensor(observations)
            distribution = policy.get_distribution(obs_tensor)  # type: ignore[operator]
            categorical = distribution.distribution
            if not isinstance(categorical, torch.distributions.Categorical):
                raise TypeError(
                    f"{type(policy).__name__} has a {type(distribution).__name__}; expected a "
                    "categorical distribution over token ids (MlpPolicy on LMToken-v0)."
                )
            return categorical.logits.cpu()  # (B, V): torch normalises them to log-probs

    return logprobs


def lm_token_logprobs(lm: PreTrainedModel, setup: LMModels) -> TokenPolicyLogProbFn:
    """``f(observations) -> (B, V) log π_θ`` for a Hugging Face causal LM on ``LMToken-v0``.

    One forward over each observation's prompt and completion so far (no cache: meant for
    checks and small runs). Attaching the env's own initial model gives a KL of exactly 0.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0").unwrapped
        >>> env.attach_policy(lm_token_logprobs(env.models.model, env.models))
    """

    def logprobs(observations: np.ndarray) -> torch.Tensor:
        obs = torch.as_tensor(observations, dtype=torch.long)
        with torch.inference_mode():
            out = next_token_outputs(
                lm, obs, pad_token_id=setup.pad_token_id, n_actions=setup.vocab_size
            )
        return torch.log_softmax(out.logits.float(), dim=-1)

    return logprobs


def lm_logprobs(lm: PreTrainedModel, setup: LMModels) -> PolicyLogProbFn:
    """``f(observations, actions) -> log π_θ`` for a Hugging Face causal LM as π_θ.

    One teacher-forced forward per batch returns the (B, T, V) log-distributions, so every
    estimator works. Attaching the env's own initial model gives a KL of exactly 0.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> env.attach_policy(lm_logprobs(env.models.model, env.models))
    """

    def logprobs(observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        return completion_logprobs(
            lm,
            torch.as_tensor(observations, dtype=torch.long),
            torch.as_tensor(actions, dtype=torch.long),
            pad_token_id=setup.pad_token_id,
            eos_token_id=setup.eos_token_id,
            full=True,
        )

    return logprobs


def attach_sb3(model: BaseAlgorithm, env: Any = None) -> PolicyLogProbFn | TokenPolicyLogProbFn:
    """Attach ``model``'s policy as π_θ of the KL penalty of ``env`` (default: the model's env).

    Works for a single env (``gym.make``), lmgym's vector env (``gym.make_vec``), and SB3's
    ``DummyVecEnv`` / :class:`~lmgym.agents.SB3VecEnv` around them. ``SubprocVecEnv`` is not
    supported: the policy would be copied into each worker and go stale as it trains.

    Returns:
        The attached log-prob function (to reuse or to detach with ``attach_policy(None)``).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from lmgym.agents import attach_sb3
        >>> env = gym.make("LMBandit-v0", kl_estimator="k3")
        >>> model = PPO("MlpPolicy", env, n_steps=8, batch_size=8)
        >>> _ = attach_sb3(model)
        >>> _ = env.reset(seed=0)
        >>> env.step(env.action_space.sample())[-1]["kl_form"]
        'policy'
    """
    # One token per step (LMToken-v0, Discrete) or a whole completion (LMBandit-v0).
    token_env = isinstance(model.action_space, spaces.Discrete)
    fn: Any = sb3_token_logprobs(model) if token_env else sb3_policy_logprobs(model)
    target = model.get_env() if env is None else env
    if target is None:
        raise ValueError(
            "attach_sb3(model) found no env on the model; pass the env: attach_sb3(model, env)."
        )
    attach_logprobs(target, fn)
    return fn


def attach_logprobs(env: Any, fn: PolicyLogProbFn | TokenPolicyLogProbFn) -> None:
    """Attach ``fn`` as π_θ of the KL penalty of every env inside ``env``.

    ``env`` is a Gymnasium env, lmgym's vector env, or SB3's ``DummyVecEnv`` /
    :class:`~lmgym.agents.SB3VecEnv` around them (what :func:`attach_sb3` and the LM policy's
    ``attach_to`` accept).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0")
        >>> attach_logprobs(env, lm_logprobs(env.unwrapped.models.model, env.unwrapped.models))
    """
    for lm_env in lm_envs(env):
        lm_env.attach_policy(fn)


def attach_lora_reference(model: BaseAlgorithm | Any, env: Any = None) -> nn.Module:
    """Make a LoRA policy's base, adapters off, π_ref of ``env`` (default: the model's env).

    The env drops the model it loaded, so the policy's frozen base weights are the only copy
    left (LoRA never changes them, so with its adapters off the base *is* the initial model).
    No second env is built to pass the reference: the env the policy was built on takes it.
    Then attach π_θ as usual (``model.policy.attach_to(env)``).

    Args:
        model: An SB3 model whose policy is an LM policy with LoRA adapters
            (``policy_kwargs=lm_policy_kwargs(env, lora=dict(r=8))``), or that policy.
        env: See :func:`attach_logprobs`; ``None`` takes the model's env.

    Returns:
        The reference (an :class:`~lmgym.agents.lora.AdapterDisabledReference`).

    Raises:
        ValueError: The policy has no LoRA adapters, or no env is given or set on the model.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> from lmgym.agents import LMActorCriticPolicy, SB3VecEnv, lm_policy_kwargs
        >>> env = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=2))
        >>> model = PPO(LMActorCriticPolicy, env, n_steps=4, batch_size=8,
        ...             policy_kwargs=lm_policy_kwargs(env, lora=dict(r=4)))
        >>> reference = attach_lora_reference(model)
        >>> _ = model.policy.attach_to(env)
        >>> env.venv.models.ref_model is reference
        True
    """
    policy: Any = model.policy if isinstance(model, BaseAlgorithm) else model
    target = model.get_env() if env is None and isinstance(model, BaseAlgorithm) else env
    if target is None:
        raise ValueError(
            "attach_lora_reference(model) found no env on the model; pass the env: "
            "attach_lora_reference(model, env)."
        )
    reference = policy.reference_model()  # raises ValueError without LoRA adapters
    lm_env_list = lm_envs(target)
    for lm_env in lm_env_list:  # checked for every env before any changes
        check_vocab_fits(cast(PreTrainedModel, reference), lm_env.models.tokenizer)
    for lm_env in lm_env_list:
        lm_env.use_reference(reference)
    return reference  # type: ignore[no-any-return]


def lm_envs(env: Any) -> list[Any]:
    """The lmgym LM envs inside ``env`` (unwrapped single envs, or one vector env).

    ``env`` is a Gymnasium env, lmgym's vector env, or SB3's ``DummyVecEnv`` /
    :class:`~lmgym.agents.SB3VecEnv` around them; a ``SubprocVecEnv`` is refused (its envs run
    in other processes and cannot share the policy).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> [type(e).__name__ for e in lm_envs(gym.make("LMBandit-v0"))]
        ['LMBanditEnv']
    """
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    if isinstance(env, SB3VecEnv):
        env = env.venv
    if isinstance(env, DummyVecEnv):
        return [found for sub_env in env.envs for found in lm_envs(sub_env)]
    if isinstance(env, VecEnv):
        raise TypeError(
            f"{type(env).__name__} is not supported by attach_sb3: its envs run in other "
            "processes, so they cannot see the policy as it trains. Use DummyVecEnv or "
            "lmgym.agents.SB3VecEnv(gym.make_vec(...))."
        )
    if isinstance(env, VectorEnv):
        return [env]
    if isinstance(env, gym.Env):
        return [env.unwrapped]
    raise TypeError(f"env={env!r} is not a Gymnasium env, vector env or SB3 VecEnv.")
