"""``examples/rllib_ppo.py`` in smoke mode: one RLlib PPO iteration of the LM module on
``LMBandit-v0`` with two EnvRunners, run as a user starts it (a fresh interpreter, a local Ray
runtime on this machine)."""

from __future__ import annotations

import math

import pytest

from tests.helpers import run_example


@pytest.mark.slow
def test_smoke_run_trains_one_iteration_on_two_env_runners() -> None:
    proc = run_example("rllib_ppo.py", "--smoke", env={"RAY_AUTH_MODE": "disabled"}, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["iter", "reward", "env", "steps/s", "policy", "loss"]
    iteration, reward, steps_per_s, policy_loss = (float(x) for x in lines[1].split())
    assert iteration == 1 and steps_per_s > 0
    assert -3.0 < reward < 1.0 and math.isfinite(policy_loss)
