"""The adaptive β's default horizon: it lets β reach the value that holds the KL at its target.

Ziegler et al.'s controller moves β by at most e^(0.2·N/H) over N completions. The simulation
below stands in for a policy whose KL answers β: the KL-regularised optimum π ∝ π_ref·exp(r/β)
drifts from π_ref by about Var(r)/(2β²) for large β and by at most what the reward can pull
for small β, so its KL is ``KL*(β) = K_MAX / (1 + (β/β_h)²)``; a trained policy approaches it
with a lag (here an eighth of the run) and each completion's KL scatters around it (exponential
draws: skewed, as sequence KLs are). The controller runs exactly as the env runs it: one update
per batch of ``n_envs`` completions, with the horizon a default ``lmgym train`` run gives it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from lmgym.rewards.kl import AdaptiveKLController
from lmgym.training.algorithms import default_kl_horizon
from lmgym.training.build import env_kwargs
from lmgym.training.train import TrainConfig, run_train

TARGET = 6.0  # nats per completion, Ziegler et al.'s target
K_MAX = 40.0  # the most KL the reward can pull the policy to (β → 0)
BETA_STAR = 0.1  # the β that holds the KL at TARGET
BETA_HALF = BETA_STAR / np.sqrt(K_MAX / TARGET - 1.0)


def policy_kl(beta: float) -> float:
    """The KL a policy settles at under β (falls like 1/β², saturates at K_MAX)."""
    return K_MAX / (1.0 + (beta / BETA_HALF) ** 2)


def simulate(config: TrainConfig, seed: int) -> tuple[float, float]:
    """Run the controller over ``config``'s run; returns (final KL / target, final β / β*)."""
    assert config.steps is not None and config.n_envs is not None
    controller = AdaptiveKLController(config.kl_coef, TARGET, env_kwargs(config)["kl_horizon"])
    rng = np.random.default_rng(seed)
    batch, lag = config.n_envs, config.steps / 8  # completions per update; the policy's lag
    kl = 0.0  # the policy starts as the reference
    observed = []
    for _ in range(config.steps // batch):
        batch_kl = float((kl * rng.exponential(size=batch)).mean())
        observed.append(batch_kl)
        controller.update(batch_kl, batch)
        kl += (policy_kl(controller.value) - kl) * batch / lag
    final_kl = float(np.mean(observed[-256 // batch :]))  # the run's last 256 completions
    return final_kl / TARGET, controller.value / BETA_STAR


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("start", [5.0, 0.2], ids=["beta_5x_too_large", "beta_5x_too_small"])
def test_default_horizon_brings_the_kl_to_its_target_within_a_run(start, seed) -> None:
    config = TrainConfig(env="LMBandit-v0", kl_target=TARGET, kl_coef=BETA_STAR * start)
    assert config.steps == 4096 and config.n_envs == 16  # a default `lmgym train` run
    kl_ratio, beta_ratio = simulate(config, seed)
    assert 0.7 <= kl_ratio <= 1.3, f"the KL ended at {kl_ratio:.2f} x the target"
    assert 0.7 <= beta_ratio <= 1.4, f"β ended at {beta_ratio:.2f} x the β that holds it"


def test_default_horizon_is_a_sixteenth_of_the_run_and_can_be_set() -> None:
    assert default_kl_horizon("LMBandit-v0", 4096) == 256
    assert default_kl_horizon("LMToken-v0", 8192) == 32  # >= 8192 / 16 completions
    assert default_kl_horizon("LMBandit-v0", 8) == 1
    config = TrainConfig(env="LMBandit-v0", kl_target=TARGET)
    assert config.kl_horizon == 256 and env_kwargs(config)["kl_horizon"] == 256
    assert env_kwargs(TrainConfig(env="LMBandit-v0", kl_target=TARGET, kl_horizon=1000))[
        "kl_horizon"
    ] == 1000  # fmt: skip
    fixed = TrainConfig(env="LMBandit-v0")  # a fixed β has no horizon
    assert fixed.kl_horizon is None and "kl_horizon" not in env_kwargs(fixed)
    # Over the default run β can now move e^(0.2 * 16) ~ 24x either way; with the horizon at
    # the run's length, as before, only x0.82 to x1.22.
    controller = AdaptiveKLController(1.0, TARGET, config.kl_horizon)
    for _ in range(4096 // 16):
        controller.update(0.0, 16)
    assert controller.value < 1 / 20


def test_a_horizon_as_long_as_the_run_warns_that_beta_cannot_adapt() -> None:
    with pytest.warns(UserWarning, match=r"kl_horizon=4096 is not below this run's 4096 compl"):
        config = TrainConfig(env="LMBandit-v0", steps=4096, kl_target=TARGET, kl_horizon=4096)
    assert config.kl_horizon == 4096  # legal: only odd
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(env="LMBandit-v0", steps=4096, kl_target=TARGET, kl_horizon=4095)
        TrainConfig(env="LMToken-v0", steps=8192, kl_target=TARGET)  # the default never warns


@pytest.mark.slow  # ~10 s: 512 completions of PPO with the LM policy on the tiny model
def test_beta_moves_past_the_old_bound_in_a_real_run(tmp_path: Path, tiny_lm_dir: Path) -> None:
    # A target far above any KL the run reaches: the error stays clipped at -0.2, so β falls
    # by (1 - 0.2 * 16 / 32) per update, 32 times (0.034x). A horizon of the run's length
    # would have let it fall to 0.82x at most.
    config = TrainConfig(env="LMBandit-v0", algo="ppo", steps=512, n_envs=16, kl_coef=0.5,
                         kl_target=100.0, eval_episodes=4, model=tiny_lm_dir, out=tmp_path,
                         progress=False)  # fmt: skip
    metrics = run_train(config)
    assert metrics["config"]["kl_horizon"] == 32
    assert metrics["final_kl_coef"] == pytest.approx(0.5 * 0.9**32, rel=1e-6)
