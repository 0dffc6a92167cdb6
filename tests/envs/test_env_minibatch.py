"""``minibatch_size``: the envs' reference scores a batch in micro-batches, same results."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import transformers
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lmgym  # noqa: F401  (registers the envs)
from tests.envs.conftest import EOS, T, make_bandit_vec, make_lm_env

# Prompts of 1 to 5 words, so that micro-batches trimmed to their own rows differ in width.
PROMPTS = ["the", "the food was", "i thought the staff were", "the soup is", "the service was very"]


def _bandit_actions(num_envs: int, seed: int) -> np.ndarray:
    """Completions of every length: EOS at a different column in each row (none in some)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(3, 27, size=(num_envs, T))
    for row in range(num_envs):
        end = row % (T + 2)
        if end < T:
            actions[row, end] = EOS
    return actions


def _forward_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Record the (rows, columns) of every forward of ``model``."""
    shapes: list[tuple[int, int]] = []
    model.register_forward_hook(lambda module, args, kwargs, out: shapes.append(
        tuple(kwargs["input_ids"].shape)), with_kwargs=True)  # fmt: skip
    return shapes


def _bandit_rewards(
    tiny_lm_dir: Path, minibatch_size: int | None
) -> tuple[dict, list[tuple[int, int]]]:
    envs = make_bandit_vec(tiny_lm_dir, 8, prompts=PROMPTS, minibatch_size=minibatch_size)
    shapes = _forward_shapes(envs.unwrapped.models.ref_model)
    out: dict[str, list[np.ndarray]] = {"reward": [], "kl": []}
    for seed in range(2):
        envs.reset(seed=seed)
        _, reward, _, _, info = envs.step(_bandit_actions(8, seed))
        out["reward"].append(reward)
        out["kl"].append(info["final_info"]["kl"])
    return out, shapes


def test_bandit_vector_micro_batches_give_the_unbatched_rewards(tiny_lm_dir: Path) -> None:
    whole, whole_rows = _bandit_rewards(tiny_lm_dir, None)
    split, split_rows = _bandit_rewards(tiny_lm_dir, 2)
    assert [rows for rows, _ in whole_rows] == [8, 8]
    assert [rows for rows, _ in split_rows] == [2] * 8  # each forward holds 2 rows
    # Rows sorted by length, each micro-batch cut to its own longest: most are narrower.
    widest = max(columns for _, columns in whole_rows)
    assert min(columns for _, columns in split_rows) < widest
    for key in whole:
        np.testing.assert_allclose(np.stack(split[key]), np.stack(whole[key]), rtol=1e-5, atol=1e-5)
    assert np.ptp(np.stack(whole["kl"])) > 0  # the rows really differ


def test_a_micro_batch_as_large_as_the_batch_is_the_unbatched_forward_bit_for_bit(
    tiny_lm_dir: Path,
) -> None:
    whole, _ = _bandit_rewards(tiny_lm_dir, None)
    same, shapes = _bandit_rewards(tiny_lm_dir, 8)
    assert [rows for rows, _ in shapes] == [8, 8]
    for key in whole:
        assert np.array_equal(np.stack(same[key]), np.stack(whole[key]))


def _token_rollout(
    tiny_lm_dir: Path, minibatch_size: int | None, reference_cache: bool
) -> tuple[np.ndarray, list[int]]:
    envs = gym.make_vec(
        "LMToken-v0", num_envs=6, model=tiny_lm_dir, prompts=PROMPTS, max_prompt_tokens=8,
        max_new_tokens=T, minibatch_size=minibatch_size, reference_cache=reference_cache,
    )  # fmt: skip
    shapes = _forward_shapes(envs.unwrapped.models.ref_model)
    envs.reset(seed=3)
    rng = np.random.default_rng(0)
    rewards = []
    for step in range(3 * T):  # several episodes: resets of some rows while others go on
        actions = rng.integers(3, 27, size=6)
        actions[(np.arange(6) + step) % 4 == 0] = EOS
        rewards.append(envs.step(actions)[1])
    return np.stack(rewards), [rows for rows, _ in shapes]


@pytest.mark.parametrize("reference_cache", [True, False], ids=["cache", "no-cache"])
def test_token_vector_micro_batches_give_the_unbatched_rewards(
    tiny_lm_dir: Path, reference_cache: bool
) -> None:
    whole, whole_rows = _token_rollout(tiny_lm_dir, None, reference_cache)
    split, split_rows = _token_rollout(tiny_lm_dir, 2, reference_cache)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)
    assert max(whole_rows) == 6
    if reference_cache:  # prompts are encoded 2 rows at a time; a cached step runs every row
        assert set(split_rows) <= {1, 2, 6} and 2 in split_rows
    else:  # every forward is split
        assert max(split_rows) <= 2


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_checkers_pass_with_minibatch_size(tiny_lm_dir: Path, env_id: str) -> None:
    env = make_lm_env(env_id, tiny_lm_dir, minibatch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("value", [0, -2, 1.5, "4", True])
@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_a_minibatch_size_that_is_no_positive_int_is_refused(
    tiny_lm_dir: Path, env_id: str, value: object
) -> None:
    with pytest.raises((TypeError, ValueError), match=r"^minibatch_size=.* int >= 1"):
        make_lm_env(env_id, tiny_lm_dir, minibatch_size=value)


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_a_minibatch_size_that_does_not_divide_num_envs_is_refused_before_loading(
    tiny_lm_dir: Path, env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a)
    )
    with pytest.raises(
        ValueError, match=r"^minibatch_size=4 does not divide num_envs=6.*minibatch_size=3"
    ):
        gym.make_vec(env_id, num_envs=6, model=tiny_lm_dir, minibatch_size=4)
    assert loads == []
