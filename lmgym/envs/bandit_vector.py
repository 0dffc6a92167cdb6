"""The batched ``LMBandit-v0`` vector env: one reference pass and one reward call per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgym.envs.bandit import LMBanditEnv, check_completion_actions
from lmgym.envs.lm_setup import ModelSpec
from lmgym.envs.prompts import PromptSpec
from lmgym.envs.sequence_reward import PolicyLogProbFn


class LMBanditVectorEnv(VectorEnv):
    """``num_envs`` bandit envs stepped as one batch (``gym.make_vec("LMBandit-v0", num_envs=N)``).

    It holds one set of models and one :class:`~lmgym.envs.sequence_reward.SequenceRewarder`, so a
    step runs the reference model once over the batch and calls the reward function once.
    Every step ends every episode, so it autoresets in the same step
    (``AutoresetMode.SAME_STEP``): the returned observations are the next prompts, and the
    episode that just ended is in ``info["final_obs"]`` / ``info["final_info"]``.

    Env ``i`` draws its prompts from its own generator seeded with ``seed + i``, exactly as
    ``SyncVectorEnv`` seeds its sub-envs, so N single envs with seeds ``s, s+1, ...`` see the
    same prompts and get the same rewards for the same actions.

    Takes the same keyword arguments as :class:`~lmgym.envs.bandit.LMBanditEnv`.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> envs = gym.make_vec("LMBandit-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (4, 16)
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        model: ModelSpec | None = None,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        ref_model: str | Path | PreTrainedModel | None = None,
        prompts: PromptSpec | None = None,
        reward_fn: Any = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        max_prompt_tokens: int = 16,
        max_new_tokens: int = 16,
        truncate_prompts: bool = False,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"num_envs={num_envs!r} must be an int > 0.")
        if render_mode not in (None, "ansi"):
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; expected 'ansi' or None."
            )
        # The single env does all argument checking and loading; the vector env reuses its parts.
        self._template = LMBanditEnv(
            model=model,
            tokenizer=tokenizer,
            ref_model=ref_model,
            prompts=prompts,
            reward_fn=reward_fn,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
            kl_target=kl_target,
            kl_horizon=kl_horizon,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            truncate_prompts=truncate_prompts,
            trust_remote_code=trust_remote_code,
        )
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.lm = self._template.lm
        self.rewarder = self._template.rewarder
        self.prompt_source = self._template.prompt_source
        self.max_new_tokens = self._template.max_new_tokens
        self.single_observation_space = self._template.observation_space
        self.single_action_space = self._template.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._generators = [seeding.np_random()[0] for _ in range(num_envs)]
        self._prompts: list[str] = []
        self._obs = np.zeros((num_envs, max_prompt_tokens), dtype=np.int64)
        self._needs_reset = True
        self._last_render = ""

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term; see :meth:`LMBanditEnv.attach_policy`."""
        self.rewarder.policy = policy

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a prompt for every env. ``seed`` is an int (env i gets ``seed + i``) or a list."""
        if isinstance(seed, int):
            seeds: list[int | None] = [seed + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            if len(seed) != self.num_envs:
                raise ValueError(
                    f"seed has {len(seed)} entries; expected num_envs={self.num_envs} "
                    "(or a single int)."
                )
            seeds = list(seed)
        if options is not None and "reset_mask" in options:
            raise ValueError(
                "options['reset_mask'] is not supported: LMBandit-v0 vector envs reset every "
                "env in the same step that ends it."
            )
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is not None:
            self.rewarder.reset_controller()
        for i, s in enumerate(seeds):
            if s is not None or self._needs_reset:
                self._generators[i], _ = seeding.np_random(s)
        self._prompts = []
        for i in range(self.num_envs):
            self._draw(i)
        self._needs_reset = False
        return self._obs.copy(), {"prompt": np.array(self._prompts, dtype=object)}

    def _draw(self, i: int) -> None:
        text, ids = self.prompt_source.draw(self._generators[i])
        if i < len(self._prompts):
            self._prompts[i] = text
        else:
            self._prompts.append(text)
        self._obs[i] = self.prompt_source.pad(ids, self.lm.pad_token_id)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Score all completions in one batch, then draw the next prompts (same-step autoreset)."""
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call envs.reset(seed=...) first.")
        array = check_completion_actions(
            actions, (self.num_envs, self.max_new_tokens), self.lm.vocab_size
        )
        final_obs = self._obs.copy()
        prompts = list(self._prompts)
        batch = self.rewarder(prompts, final_obs, array)
        self._last_render = batch.completions[0]
        for i in range(self.num_envs):
            self._draw(i)
        all_envs = np.ones(self.num_envs, dtype=np.bool_)
        finals = np.empty(self.num_envs, dtype=object)
        finals[:] = list(final_obs)  # Gymnasium keeps final observations as an object array
        infos: dict[str, Any] = {
            "final_obs": finals,
            "_final_obs": all_envs,
            "final_info": batch.batched_info(prompts),
            "_final_info": all_envs.copy(),
            "prompt": np.array(self._prompts, dtype=object),
            "_prompt": all_envs.copy(),
        }
        terminated = np.ones(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        return self._obs.copy(), batch.reward.astype(np.float64), terminated, truncated, infos

    def render(self) -> str | None:  # type: ignore[override]
        """``ansi``: the first env's last completion."""
        return self._last_render if self.render_mode == "ansi" else None
