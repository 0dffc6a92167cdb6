"""What the LM envs share: one signature, one set of parts, the package's exports."""

from __future__ import annotations

import inspect
from pathlib import Path

import gymnasium as gym
import pytest

import lmgym.envs
from lmgym.envs.bandit import LMBanditEnv
from lmgym.envs.lm_env import LMEnv
from lmgym.envs.lm_env_parts import lm_env_arguments
from lmgym.envs.token import LMTokenEnv
from tests.conftest import PROMPTS, count_great


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls).parameters)


def test_token_env_forwards_every_shared_argument_in_order() -> None:
    # LMTokenEnv passes the shared arguments to LMEnv by position: same names, order, defaults.
    shared, token = parameters(LMEnv), parameters(LMTokenEnv)
    assert [p for p in token if p in shared] == list(shared)
    for name, param in shared.items():
        assert token[name].default == param.default, name
    assert parameters(LMBanditEnv) == shared
    assert {"action_mask", "reference_cache"} == set(token) - set(shared)


def test_token_env_arguments_reach_its_parts(tiny_lm_dir: Path) -> None:
    env = LMTokenEnv(
        model=tiny_lm_dir,
        prompts=PROMPTS,
        reward_fn=count_great,
        kl_coef=0.25,
        kl_estimator="k3",
        kl_horizon=500,
        kl_batch_size=3,
        max_prompt_tokens=7,
        max_new_tokens=5,
        reference_cache=False,
        render_mode="ansi",
    )
    assert (env.max_prompt_tokens, env.max_new_tokens, env.render_mode) == (7, 5, "ansi")
    assert env.rewarder.controller.value == 0.25 and env.rewarder.kl_estimator == "k3"
    assert (env.rewarder.kl_horizon, env.rewarder.kl_batch_size) == (500, 3)
    assert env.prompt_source.texts == PROMPTS and not env.reference_cache
    assert env.models is env.parts.models and env.batch.models is env.models


def test_vector_env_arguments_are_the_single_envs() -> None:
    args = lm_env_arguments(LMTokenEnv, {"kl_coef": 0.1})
    assert args["kl_coef"] == 0.1 and args["max_new_tokens"] == 16 and "render_mode" not in args
    with pytest.raises(TypeError, match=r"^LMBanditEnv: .*'action_mask'"):
        lm_env_arguments(LMBanditEnv, {"action_mask": None})
    with pytest.raises(TypeError, match=r"^LMTokenEnv: .*'max_tokens'"):
        gym.make_vec("LMToken-v0", num_envs=2, max_tokens=3)


def test_package_exports_its_env_classes() -> None:
    for name in lmgym.envs.__all__:
        assert getattr(lmgym.envs, name).__name__ == name
    assert lmgym.envs.LMTokenEnv is LMTokenEnv
    with pytest.raises(AttributeError, match="LMGridEnv"):
        _ = lmgym.envs.LMGridEnv
