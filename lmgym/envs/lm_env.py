"""What ``LMBandit-v0`` and ``LMToken-v0`` share as single envs: construction, reset, rendering.

The subclasses differ in the action and in what a step pays; everything around it (the shared
arguments and their checks, the models, reward and prompts, how ``reset`` draws a prompt, the
render modes) is here once.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.lm_env_parts import (
    ModelSpec,
    UsesLMEnvParts,
    build_lm_env_parts,
    check_render_mode,
)
from lmgym.envs.prompts import PromptSpec
from lmgym.envs.rendering import show_human
from lmgym.envs.resets import check_seed, forced_prompt, rng_restored_on_error
from lmgym.rewards import RewardLike

__all__ = ["LMEnv"]

ActType = TypeVar("ActType")


class LMEnv(UsesLMEnvParts, gym.Env[np.ndarray, ActType]):
    """Base of :class:`~lmgym.envs.bandit.LMBanditEnv` and :class:`~lmgym.envs.token.LMTokenEnv`.

    Not registered by itself. It holds the env's three parts side by side:

    - ``models`` (:class:`~lmgym.envs.lm_env_parts.LMModels`): the initial policy LM, the frozen
      reference LM of the KL penalty and the tokenizer;
    - ``rewarder`` (:class:`~lmgym.envs.sequence_reward.SequenceRewarder`): the task reward and
      the KL penalty;
    - ``prompt_source`` (:class:`~lmgym.envs.prompts.PromptSource`): the prompts.

    ``parts`` (:class:`~lmgym.envs.lm_env_parts.LMEnvParts`) holds the three together, with the
    sizes ``max_prompt_tokens`` and ``max_new_tokens``.

    The arguments are documented on :class:`~lmgym.envs.bandit.LMBanditEnv`.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMBandit-v0").unwrapped
        >>> isinstance(env, LMEnv), env.models.vocab_size == len(env.models.tokenizer)
        (True, True)
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        model: ModelSpec | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        ref_model: str | Path | PreTrainedModel | None = None,
        prompts: PromptSpec | None = None,
        reward_fn: RewardLike | None = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        kl_batch_size: int | None = None,
        max_prompt_tokens: int = 16,
        max_new_tokens: int = 16,
        truncate_prompts: bool = False,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        minibatch_size: int | None = None,
    ) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        parts = build_lm_env_parts(
            model=model,
            tokenizer=tokenizer,
            ref_model=ref_model,
            prompts=prompts,
            reward_fn=reward_fn,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
            kl_target=kl_target,
            kl_horizon=kl_horizon,
            kl_batch_size=kl_batch_size,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            truncate_prompts=truncate_prompts,
            trust_remote_code=trust_remote_code,
            device=device,
            dtype=dtype,
            minibatch_size=minibatch_size,
        )
        self.parts = parts
        self.observation_space, self.action_space = self._spaces()
        self._done = True

    @abstractmethod
    def _spaces(self) -> tuple[spaces.Box, spaces.Space[ActType]]:
        """The observation and action spaces, from the sizes the parts settled on."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a prompt from ``np_random``; ``options={"prompt": text}`` forces one.

        A seeded reset also puts an adaptive β back to its initial value, so the same seed and
        the same actions give the same rewards (Gymnasium's determinism contract). Bad
        arguments, or a prompts callable that raises, leave the env as it was.
        """
        forced = forced_prompt(options, self.prompt_source)
        seed = check_seed(seed)
        with rng_restored_on_error(self):
            super().reset(seed=seed)
            text, ids = self.prompt_source.draw(self.np_random) if forced is None else forced
            obs = self._start(text, self.prompt_source.pad(ids, self.models.pad_token_id))
        if seed is not None:
            self.rewarder.reset_controller()
        self._done = False
        return obs.copy(), {"prompt": text}

    @abstractmethod
    def _start(self, prompt: str, prompt_ids: np.ndarray) -> np.ndarray:
        """Start an episode on ``prompt`` (its right-padded ids); return its first observation.

        Called inside ``reset``'s guard: it may raise only before it changes anything.
        """

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the prompt, the completion and the last step's reward parts, as text.

        ``human`` prints the same text after every step (Gymnasium's render API).
        """
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "human":
            show_human(self.render_text())
        return None

    def _render_step(self) -> None:
        if self.render_mode == "human":
            self.render()

    @abstractmethod
    def render_text(self) -> str:
        """The current episode as text."""
