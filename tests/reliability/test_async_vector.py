"""Gymnasium's async vector env (forked workers) must run lmgym's envs, never hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import gymnasium as gym
    import numpy as np
    import torch

    import lmgym

    torch.ones(512, 512) @ torch.ones(512, 512)  # the parent's thread pool has run
    kwargs = {env_kwargs}
    env = gym.make_vec({env_id!r}, num_envs=2, vectorization_mode="async", **kwargs)
    env.reset(seed=0)
    rewards = []
    for _ in range(10):
        _, reward, _, _, _ = env.step(env.action_space.sample())
        rewards.append(reward)
    env.close()
    assert np.isfinite(np.asarray(rewards)).all()
    print("steps", len(rewards))
""")


@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [("LMBandit-v0", {}), ("LMToken-v0", {"max_new_tokens": 4}), ("CatGrid-v0", {})],
    ids=["bandit", "token", "catgrid"],
)
def test_async_vector_env_steps_without_hanging(env_id: str, env_kwargs: dict) -> None:
    code = SCRIPT.format(env_id=env_id, env_kwargs=env_kwargs)
    # A hang is the failure this guards against: a subprocess with a deadline turns it into a
    # test failure instead of a stuck worker.
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steps 10" in result.stdout
