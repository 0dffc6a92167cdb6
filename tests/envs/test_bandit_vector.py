from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lmgym  # noqa: F401
from lmgym.agents.vec_env import unbatch_info
from lmgym.envs.bandit_vector import LMBanditVectorEnv
from tests.conftest import PROMPTS, count_great
from tests.envs.conftest import make_bandit, make_bandit_vec

KWARGS = {
    "prompts": PROMPTS,
    "reward_fn": count_great,
    "max_prompt_tokens": 8,
    "max_new_tokens": 6,
}


def make_vec(tiny_lm_dir: Path, n: int, **kwargs) -> LMBanditVectorEnv:
    return make_bandit_vec(tiny_lm_dir, n, **kwargs)  # type: ignore[return-value]


def test_make_vec_returns_batched_env(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 3)
    assert isinstance(envs, LMBanditVectorEnv)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 8)
    actions = envs.action_space.sample()
    obs2, rewards, terminated, truncated, infos = envs.step(actions)
    assert rewards.shape == (3,) and terminated.all() and not truncated.any()
    np.testing.assert_array_equal(np.stack(infos["final_obs"]), obs)
    final = infos["final_info"]
    assert set(final["_kl"]) == {True}
    np.testing.assert_allclose(rewards, final["reward_model"] - final["kl_coef"] * final["kl"])


def test_vector_matches_single_envs(tiny_lm_dir: Path) -> None:
    n, seed = 4, 11
    envs = make_vec(tiny_lm_dir, n, kl_estimator="k3")
    singles = [make_bandit(tiny_lm_dir, **KWARGS, kl_estimator="k3") for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    single_obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.integers(0, envs.models.vocab_size, size=(n, 6))
        obs, rewards, _, _, infos = envs.step(actions)
        final_infos = [i["final_info"] for i in unbatch_info(infos, n)]
        single_rewards = []
        single_obs = []
        for k, (env, action) in enumerate(zip(singles, actions, strict=True)):
            _, reward, _, _, info = env.step(action)
            single_rewards.append(reward)
            single_obs.append(env.reset()[0])
            assert final_infos[k].keys() == info.keys()
            for key, value in info.items():
                if isinstance(value, float):
                    assert final_infos[k][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
                else:
                    assert final_infos[k][key] == value, key
        np.testing.assert_allclose(rewards, single_rewards, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(obs, np.stack(single_obs))


def test_one_reference_pass_and_one_reward_call_per_batch(tiny_lm_dir: Path) -> None:
    calls = {"reward": 0, "forward": 0}

    def counting_reward(prompts, completions):
        calls["reward"] += 1
        return [0.0] * len(prompts)

    envs = make_vec(tiny_lm_dir, 8, reward_fn=counting_reward)
    envs.models.ref_model.register_forward_hook(
        lambda *a: calls.__setitem__("forward", calls["forward"] + 1)
    )
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    assert calls == {"reward": 1, "forward": 1}


def test_bad_vector_input(tiny_lm_dir: Path) -> None:
    envs = make_vec(tiny_lm_dir, 2)
    with pytest.raises(RuntimeError, match="before reset"):
        envs.step(envs.action_space.sample())
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 6\); expected \(2, 6\)"):
        envs.step(np.zeros((3, 6), dtype=np.int64))
    with pytest.raises(ValueError, match="num_envs=0"):
        make_vec(tiny_lm_dir, 0)
    with pytest.raises(ValueError, match="seed has 3 entries"):
        envs.reset(seed=[1, 2, 3])
