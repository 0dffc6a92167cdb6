"""Run a Gymnasium vector env (``gym.make_vec``) under stable-baselines3's ``VecEnv`` API.

SB3 steps its own ``VecEnv`` type, not Gymnasium's ``VectorEnv``. This adapter keeps lmgym's
batched vector envs batched under SB3: one ``step`` of SB3 is one batched ``step`` of the
underlying env. It needs same-step autoreset (what lmgym's bandit vector env does, and what SB3
itself assumes): the final observation of an ended episode goes to
``infos[i]["terminal_observation"]`` and the returned observation is the next episode's first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

__all__ = ["BATCHED_METHODS", "SB3VecEnv", "unbatch_info"]

BATCHED_METHODS = frozenset({"action_masks"})
"""Methods of the batched env that return one row per env (sb3-contrib's ``MaskablePPO`` calls
``env_method("action_masks")`` and stacks one mask per env)."""


def unbatch_info(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Turn Gymnasium's vector ``info`` (dict of arrays with ``_key`` masks) into a list of dicts.

    Example:
        >>> unbatch_info({"a": np.array([1, 2]), "_a": np.array([True, False])}, 2)
        [{'a': 1}, {}]
    """
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(num_envs, dtype=bool))
        nested = isinstance(values, dict)
        per_env = unbatch_info(values, num_envs) if nested else values
        for i in range(num_envs):
            if mask[i]:
                value = per_env[i]
                out[i][key] = value.item() if isinstance(value, np.generic) else value
    return out


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a Gymnasium ``VectorEnv`` with same-step autoreset.

    Args:
        venv: e.g. ``gym.make_vec("LMBandit-v0", num_envs=16)``.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> from stable_baselines3 import PPO
        >>> vec = SB3VecEnv(gym.make_vec("LMBandit-v0", num_envs=4))
        >>> model = PPO("MlpPolicy", vec, n_steps=8, batch_size=32)
    """

    def __init__(self, venv: VectorEnv) -> None:
        if not isinstance(venv, VectorEnv):
            raise TypeError(
                f"venv={venv!r} is not a gymnasium.vector.VectorEnv; expected the result of "
                "gym.make_vec(...). For a single env use SB3's DummyVecEnv or pass it directly."
            )
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"venv autoreset_mode={mode} is not supported; expected AutoresetMode.SAME_STEP, "
                "which SB3 assumes. Build it with gym.make_vec(..., vector_kwargs="
                "{'autoreset_mode': AutoresetMode.SAME_STEP}) for sync/async vector envs."
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seed from :meth:`seed`, if one was set)."""
        obs, infos = self.venv.reset(seed=self._seed)
        self._seed = None
        self.reset_infos = unbatch_info(infos, self.num_envs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; :meth:`step_wait` runs the batched step."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """One batched step of the underlying env, with infos in SB3's format."""
        assert self._actions is not None, "step_wait() without step_async()"
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        per_env = unbatch_info(infos, self.num_envs)
        sb3_infos: list[dict[str, Any]] = []
        for i, info in enumerate(per_env):
            if dones[i]:
                final = dict(info.pop("final_info", {}))
                final["terminal_observation"] = info.pop("final_obs")
                final["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                info = final
            sb3_infos.append(info)
        return obs, rewards.astype(np.float32), dones, sb3_infos

    def close(self) -> None:
        """Close the underlying env."""
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:  # type: ignore[override]
        """Seed the next :meth:`reset` (env i gets ``seed + i``)."""
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes live on the one batched env: the same value for every index."""
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batched env."""
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of the batched env once and report its result for every index."""
        result = getattr(self.venv, method_name)(*method_args, **kwargs)
        if method_name in BATCHED_METHODS:  # one row per env: hand each index its own
            return [result[i] for i in self._get_indices(indices)]
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """The batched env is never wrapped by a Gymnasium wrapper."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No image rendering for batched LM envs."""
        return [None for _ in range(self.num_envs)]
