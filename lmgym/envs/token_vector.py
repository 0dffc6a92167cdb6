"""The batched ``LMToken-v0`` vector env: one reference forward and one reward call per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from lmgym.envs.lm_env_parts import check_bool, lm_env_arguments
from lmgym.envs.lm_spaces import TokenActionMask, check_token_ids, token_spaces
from lmgym.envs.lm_vector import LMVectorEnv
from lmgym.envs.resets import generators_restored_on_error
from lmgym.envs.step_info import object_array
from lmgym.envs.token import LMTokenEnv
from lmgym.envs.token_batch import TokenBatch, TokenPolicyLogProbFn

__all__ = ["LMTokenVectorEnv"]


class LMTokenVectorEnv(LMVectorEnv):
    """``num_envs`` token envs stepped as one batch (``gym.make_vec("LMToken-v0", num_envs=N)``).

    A step runs the reference model once over all envs (one incremental forward with a KV cache
    kept across steps, see :mod:`lmgym.envs.ref_cache`), the attached policy's log-prob function
    once, and the reward function once over the envs whose episode ended.

    Envs whose episode ends reset in the same step (``AutoresetMode.SAME_STEP``, which SB3 and
    :class:`~lmgym.agents.SB3VecEnv` expect): the returned observation is the next episode's
    first, the ended episode's last observation is in ``info["final_obs"]`` and its step info in
    ``info["final_info"]``; the top-level info of such an env holds the new episode's
    ``prompt``. Only the new prompts are encoded, in one batched forward, and spliced into the
    resetting envs' cache rows.

    Env ``i`` draws its prompts from its own generator seeded with ``seed + i``, as
    ``SyncVectorEnv`` seeds its sub-envs, so N single envs with seeds ``s, s+1, ...`` see the same
    prompts and get the same rewards for the same actions (with a fixed β: an adaptive β is shared
    by the batch here, one per env there).

    Takes the same keyword arguments as :class:`~lmgym.envs.token.LMTokenEnv`.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> envs = gym.make_vec("LMToken-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (4, 32)
        >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_masks().argmax(1))
    """

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **env_kwargs: Any):
        env_args = lm_env_arguments(LMTokenEnv, env_kwargs)
        action_mask = env_args.pop("action_mask")
        reference_cache = check_bool("reference_cache", env_args.pop("reference_cache"))
        super().__init__(num_envs, render_mode, env_args, token_spaces)
        self.masks = TokenActionMask(self.models, action_mask)
        self.batch = TokenBatch(self.parts, num_rows=num_envs, reference_cache=reference_cache)

    def use_reference(self, reference: nn.Module) -> None:
        """Make ``reference`` π_ref: in the env's models and in its incremental reference state.

        See :meth:`lmgym.envs.lm_env_parts.LMModels.use_reference`.
        """
        super().use_reference(reference)
        self.batch.reference.use_model(reference)

    def attach_policy(self, policy: TokenPolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term; see :meth:`LMTokenEnv.attach_policy`."""
        self.batch.policy = policy

    def action_masks(self) -> np.ndarray:
        """Allowed next tokens of every env, (num_envs, V) bool (for ``MaskablePPO``)."""
        return self.masks.for_batch(self.batch.obs)

    def _start(self, rows: np.ndarray, texts: list[str], prompt_ids: np.ndarray) -> np.ndarray:
        self.batch.start(rows, texts, prompt_ids)
        return self.batch.obs

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Append one token per env, score them in one batch; reset ended envs in this step.

        Compute first, commit last: the prompts of the envs this step ends are drawn before
        the step runs, so a prompts callable that raises leaves every env as it was (no env
        keeps writing past its EOS), and a retry gives what an env that never failed gives.
        """
        self._check_started()
        tokens = check_token_ids(
            actions,
            (self.num_envs,),
            self.models.vocab_size,
            name="actions",
            layout="one token id per env",
        )
        ending = np.flatnonzero(self.batch.ends(tokens))
        with generators_restored_on_error([self._generators[i] for i in ending]):
            texts, padded = self._draw_prompts(ending.tolist(), self._generators)
            result = self.batch.step(tokens)
        done = result.done
        assert np.array_equal(np.flatnonzero(done), ending), "batch.ends disagrees with step"
        infos = result.batched_info(~done)
        if done.any():
            finals = np.empty(self.num_envs, dtype=object)
            for i in ending.tolist():
                finals[i] = result.obs[i]
            infos["final_obs"] = finals
            infos["_final_obs"] = done.copy()
            infos["final_info"] = result.batched_info(done)
            infos["_final_info"] = done.copy()
            self.batch.start(ending, texts, padded)
        infos["prompt"] = object_array(list(self.batch.prompts))
        infos["_prompt"] = np.ones(self.num_envs, dtype=np.bool_)
        self._last_render = f"{result.prompts[0]!r} -> {result.completions[0]!r}"
        return (
            self.batch.obs.copy(),
            result.reward,
            result.terminated,
            result.truncated,
            infos,
        )
