"""Fuzz LMBandit-v0: every call ends in a valid step or one of the documented errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmgym.envs.bandit import LMBanditEnv
from lmgym.error import ResetNeeded
from tests.conftest import PROMPTS, count_great

ALLOWED = (ValueError, TypeError, ResetNeeded)


@pytest.fixture(scope="module")
def envs(tiny_lm_dir: Path) -> dict[int, LMBanditEnv]:
    return {
        n: LMBanditEnv(
            model=tiny_lm_dir,
            prompts=PROMPTS,
            reward_fn=count_great,
            max_prompt_tokens=8,
            max_new_tokens=n,
        )  # fmt: skip
        for n in (1, 4)
    }


actions = st.one_of(
    st.lists(st.integers(-5, 40), min_size=0, max_size=6).map(np.array),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=4).map(np.array),
    st.lists(st.integers(0, 30), min_size=1, max_size=6).map(lambda v: np.array(v, np.int8)),
    st.just(None),
    st.text(max_size=3),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.sampled_from([1, 4]), reset_first=st.booleans(), action=actions, seed=st.integers(0, 99)
)
def test_step_is_valid_or_documented_error(envs, n, reset_first, action, seed) -> None:
    env = envs[n]
    if reset_first:
        env.reset(seed=seed)
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except ALLOWED:
        return
    assert terminated and not truncated
    assert np.isfinite(reward)
    assert reward == pytest.approx(info["reward_model"] - info["kl_coef"] * info["kl"], abs=1e-9)
    assert env.observation_space.contains(obs)


@settings(max_examples=40, deadline=None)
@given(
    kl_coef=st.one_of(st.floats(-1, 1), st.just(float("inf"))),
    estimator=st.sampled_from(["k1", "k2", "k3", "full", "kl", ""]),
    max_new_tokens=st.integers(-2, 4),
    max_prompt_tokens=st.integers(-1, 6),
)
def test_construction_is_valid_or_documented_error(
    tiny_lm_dir, kl_coef, estimator, max_new_tokens, max_prompt_tokens
) -> None:
    try:
        env = LMBanditEnv(
            model=tiny_lm_dir, prompts=PROMPTS, reward_fn=count_great, kl_coef=kl_coef,
            kl_estimator=estimator, max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )  # fmt: skip
    except ALLOWED:
        return
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)
