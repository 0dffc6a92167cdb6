"""The batched ``LMBandit-v0`` vector env: one reference pass and one reward call per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.envs.bandit import COMPLETION_LAYOUT, LMBanditEnv
from lmgym.envs.lm_env_parts import lm_env_arguments
from lmgym.envs.lm_spaces import check_token_ids, completion_spaces
from lmgym.envs.lm_vector import LMVectorEnv
from lmgym.envs.resets import generators_restored_on_error
from lmgym.envs.sequence_reward import PolicyLogProbFn
from lmgym.envs.step_info import object_array

__all__ = ["LMBanditVectorEnv"]


class LMBanditVectorEnv(LMVectorEnv):
    """``num_envs`` bandit envs stepped as one batch (``gym.make_vec("LMBandit-v0", num_envs=N)``).

    It holds one set of models and one :class:`~lmgym.envs.sequence_reward.SequenceRewarder`, so a
    step runs the reference model once over the batch and calls the reward function once.
    Every step ends every episode, so it autoresets in the same step
    (``AutoresetMode.SAME_STEP``): the returned observations are the next prompts, and the
    episode that just ended is in ``info["final_obs"]`` / ``info["final_info"]``.

    It takes the keyword arguments of :class:`~lmgym.envs.bandit.LMBanditEnv`. Env ``i`` draws
    its prompts from its own generator seeded with ``seed + i``, exactly as ``SyncVectorEnv``
    seeds its sub-envs, so N single envs with seeds ``s, s+1, ...`` see the same prompts and get
    the same rewards for the same actions.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> envs = gym.make_vec("LMBandit-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        >>> obs.shape, rewards.shape, bool(terminated.all())
        ((4, 16), (4,), True)
    """

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **env_kwargs: Any):
        env_args = lm_env_arguments(LMBanditEnv, env_kwargs)
        super().__init__(num_envs, render_mode, env_args, completion_spaces)
        self._prompts: list[str] = []
        self._obs = np.zeros(self.observation_space.shape or (), dtype=np.int64)

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term; see :meth:`LMBanditEnv.attach_policy`."""
        self.rewarder.policy = policy

    def _start(self, rows: np.ndarray, texts: list[str], prompt_ids: np.ndarray) -> np.ndarray:
        self._prompts, self._obs = texts, prompt_ids
        return self._obs

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Score all completions in one batch, then draw the next prompts (same-step autoreset).

        Compute first, commit last: the next prompts are drawn and the batch scored before
        anything changes, so a step that raises (a reward function, the attached policy or the
        prompts callable) leaves the prompts, their generators and an adaptive β as they were.
        """
        self._check_started()
        shape = (self.num_envs, self.max_new_tokens)
        array = check_token_ids(
            actions, shape, self.models.vocab_size, name="actions", layout=COMPLETION_LAYOUT
        )
        final_obs = self._obs.copy()
        prompts = list(self._prompts)
        with generators_restored_on_error(self._generators):
            next_prompts, next_obs = self._draw_prompts(
                list(range(self.num_envs)), self._generators
            )
            # The rewarder updates an adaptive β as its very last act, once nothing can fail.
            batch = self.rewarder(prompts, final_obs, array)
        self._last_render = batch.completions[0]
        self._prompts, self._obs = next_prompts, next_obs
        all_envs = np.ones(self.num_envs, dtype=np.bool_)
        finals = object_array(list(final_obs))  # Gymnasium keeps final obs as an object array
        infos: dict[str, Any] = {
            "final_obs": finals,
            "_final_obs": all_envs,
            "final_info": batch.batched_info(),
            "_final_info": all_envs.copy(),
            "prompt": object_array(self._prompts),
            "_prompt": all_envs.copy(),
        }
        terminated = np.ones(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        return self._obs.copy(), batch.reward.astype(np.float64), terminated, truncated, infos
