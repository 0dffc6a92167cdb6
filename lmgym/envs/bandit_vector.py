"""The batched ``LMBandit-v0`` vector env: one reference pass and one reward call per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.envs.bandit import COMPLETION_LAYOUT, LMBanditEnv
from lmgym.envs.lm_env_parts import check_positive_int, lm_env_arguments
from lmgym.envs.lm_spaces import check_token_ids, completion_spaces
from lmgym.envs.lm_vector import LMVectorEnv
from lmgym.envs.resets import generators_restored_on_error
from lmgym.envs.sequence_reward import PolicyLogProbFn
from lmgym.envs.step_info import object_array

__all__ = ["LMBanditVectorEnv", "check_group_size"]


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

    Group sampling (GRPO, RLOO; see :mod:`lmgym.algorithms`): with ``group_size=G`` the envs
    form ``num_envs // G`` consecutive groups, and envs ``g*G .. g*G+G-1`` all get the prompt
    that env ``g*G``'s generator draws (the other envs' generators are not used), so every
    reset and every step puts G completions of one prompt side by side. Every step ends every
    episode, so the groups stay aligned through autoresets. ``info["group"]`` (reset and step)
    gives each env's group index when ``G > 1``; with ``G = 1`` (the default) nothing changes,
    not even the info keys. ``options={"prompt": [...]}`` must give the same prompt to all envs
    of a group.

    Args:
        num_envs: Envs stepped as one batch.
        render_mode: ``"ansi"`` or ``None``.
        group_size: Envs per prompt group (vector-only); must divide ``num_envs``.
        **env_kwargs: The keyword arguments of :class:`~lmgym.envs.bandit.LMBanditEnv`.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> envs = gym.make_vec("LMBandit-v0", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        >>> obs.shape, rewards.shape, bool(terminated.all())
        ((4, 16), (4,), True)
    """

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        group_size: int = 1,
        **env_kwargs: Any,
    ):
        # Checked before any model loads.
        self.group_size = check_group_size(num_envs, group_size)
        env_args = lm_env_arguments(LMBanditEnv, env_kwargs)
        super().__init__(num_envs, render_mode, env_args, completion_spaces)
        self._prompts: list[str] = []
        self._obs = np.zeros(self.observation_space.shape or (), dtype=np.int64)

    def attach_policy(self, policy: PolicyLogProbFn | None) -> None:
        """Use ``policy`` as π_θ in the KL term; see :meth:`LMBanditEnv.attach_policy`."""
        self.rewarder.policy = policy

    @property
    def groups(self) -> np.ndarray:
        """Each env's group index, (N,): ``i // group_size``."""
        return np.arange(self.num_envs) // self.group_size

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every env; see :meth:`LMVectorEnv.reset`.

        With ``group_size > 1`` all envs of a group get one prompt (their leader's draw) and
        ``info["group"]`` holds the group indices.
        """
        obs, info = super().reset(seed=seed, options=options)
        return obs, self._with_groups(info)

    def _with_groups(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.group_size > 1:
            info["group"] = self.groups
            info["_group"] = np.ones(self.num_envs, dtype=np.bool_)
        return info

    def _forced_prompts(self, options: Any) -> list[tuple[str, np.ndarray] | None]:
        """The forced prompts, refused if two envs of one group would get different ones."""
        forced = super()._forced_prompts(options)
        texts = [None if given is None else given[0] for given in forced]
        for i, text in enumerate(texts):
            first = i - i % self.group_size
            if text != texts[first]:
                raise ValueError(
                    f'options["prompt"][{i}] differs from options["prompt"][{first}], but envs '
                    f"{first} and {i} are one group (group_size={self.group_size}); expected one "
                    "prompt per group: repeat each prompt group_size times, or pass one prompt."
                )
        return forced

    def _draw_prompts(
        self,
        rows: list[int],
        generators: list[np.random.Generator],
        forced: list[tuple[str, np.ndarray] | None] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Draw each group's prompt from its first env's generator; give it to the whole group."""
        size = self.group_size
        assert rows == list(range(self.num_envs)), f"a bandit step draws for every env, got {rows}"
        texts, padded = super()._draw_prompts(rows[::size], generators, forced)
        return [text for text in texts for _ in range(size)], np.repeat(padded, size, axis=0)

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
        self._with_groups(infos)
        terminated = np.ones(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        return self._obs.copy(), batch.reward.astype(np.float64), terminated, truncated, infos


def check_group_size(num_envs: Any, group_size: Any) -> int:
    """Return ``group_size`` if it is an int >= 1 that divides ``num_envs``, else raise.

    Example:
        >>> check_group_size(8, 4)
        4
    """
    num_envs = check_positive_int("num_envs", num_envs, example=8)
    group_size = check_positive_int("group_size", group_size, example=4)
    if num_envs % group_size:
        raise ValueError(
            f"group_size={group_size} does not divide num_envs={num_envs}; expected num_envs = "
            f"groups x group_size, e.g. num_envs={num_envs - num_envs % group_size or group_size}"
            f" or {(num_envs // group_size + 1) * group_size} with group_size={group_size}."
        )
    return group_size
