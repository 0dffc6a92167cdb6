"""The batched ``LMBandit-v0`` vector env: one reference pass and one reward call per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.envs.bandit import LMBanditEnv, check_completion_actions
from lmgym.envs.lm_env_parts import generators_restored_on_error
from lmgym.envs.lm_vector import LMVectorEnv
from lmgym.envs.sequence_reward import PolicyLogProbFn, object_array
from lmgym.error import ResetNeeded


class LMBanditVectorEnv(LMVectorEnv):
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

    single_env_class = LMBanditEnv

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **env_kwargs: Any):
        super().__init__(num_envs, render_mode, **env_kwargs)
        self._prompts: list[str] = []
        self._obs = np.zeros(self.observation_space.shape or (), dtype=np.int64)

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term; see :meth:`LMBanditEnv.attach_policy`."""
        self.rewarder.policy = policy

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a prompt for every env. ``seed`` is an int (env i gets ``seed + i``) or a list.

        ``options={"prompt": text}`` forces one prompt for every env, ``{"prompt": [texts]}``
        one per env. Bad arguments, or a prompts callable that raises, change nothing.
        """
        forced = self._forced_prompts(options)
        generators = self._reset_generators(seed)
        rows = list(range(self.num_envs))
        with generators_restored_on_error(generators):
            prompts, obs = self._draw_prompts(rows, generators, forced)
        self._commit_reset(seed, generators)
        self._prompts, self._obs = prompts, obs
        self._needs_reset = False
        return self._obs.copy(), {
            "prompt": object_array(self._prompts),
            "_prompt": np.ones(self.num_envs, dtype=np.bool_),
        }

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Score all completions in one batch, then draw the next prompts (same-step autoreset).

        Compute first, commit last: the next prompts are drawn and the batch scored before
        anything changes, so a step that raises (a reward function, the attached policy or the
        prompts callable) leaves the prompts, their generators and an adaptive β as they were.
        """
        if self._needs_reset:
            raise ResetNeeded("step() called before reset(); call envs.reset(seed=...) first.")
        array = check_completion_actions(
            actions, (self.num_envs, self.max_new_tokens), self.lm.vocab_size
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
            "final_info": batch.batched_info(prompts),
            "_final_info": all_envs.copy(),
            "prompt": object_array(self._prompts),
            "_prompt": all_envs.copy(),
        }
        terminated = np.ones(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        return self._obs.copy(), batch.reward.astype(np.float64), terminated, truncated, infos
