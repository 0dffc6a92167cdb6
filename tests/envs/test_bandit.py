from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import lm_logprobs
from lmgym.envs.bandit import LMBanditEnv
from lmgym.error import ResetNeeded, RewardFunctionError
from lmgym.models.loading import load_model
from lmgym.models.scoring import score_completions
from lmgym.rewards.kl import AdaptiveKLController
from tests.conftest import PROMPTS, build_tiny_model, count_great
from tests.envs.conftest import make_bandit

CONFIGS = {
    "default_k1": {},
    "k3_adaptive": {"kl_estimator": "k3", "kl_target": 3.0, "kl_horizon": 100},
    "k2_zero_beta": {"kl_estimator": "k2", "kl_coef": 0.0},
    "full_truncate": {"kl_estimator": "full", "truncate_prompts": True, "max_prompt_tokens": 3},
    "ansi": {"render_mode": "ansi"},
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_checkers_pass_without_warnings(tiny_lm_dir: Path, kwargs) -> None:
    env = make_bandit(tiny_lm_dir, **kwargs)
    if "kl_target" in kwargs:  # an adaptive β needs π_θ attached (a KL, not a cross-entropy)
        env.unwrapped.attach_policy(lm_logprobs(env.unwrapped.models.model, env.unwrapped.models))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def test_reward_invariant_and_info_keys(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir, kl_coef=0.1)
    obs, info = env.reset(seed=3)
    assert info["prompt"] in PROMPTS
    action = env.action_space.sample()
    obs2, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    for key in ("prompt", "completion", "reward_model", "kl", "kl_coef", "kl_form",
                "length_limited"):  # fmt: skip
        assert key in info
    assert info["kl_form"] == "cross_entropy"
    assert reward == pytest.approx(info["reward_model"] - info["kl_coef"] * info["kl"], abs=1e-9)
    np.testing.assert_array_equal(obs, obs2)


def test_reference_only_kl_is_negative_ref_logprob_sum(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir)
    obs, _ = env.reset(seed=0)
    words = env.unwrapped.models.tokenizer
    eos = words.eos_token_id
    action = np.array([words.convert_tokens_to_ids("great"), eos, 5, 5, 5, 5])
    _, _, _, _, info = env.step(action)
    model, _ = load_model(tiny_lm_dir)
    prompt = torch.tensor(obs)[None]
    with torch.no_grad():
        s = score_completions(
            model,
            prompt,
            (prompt != 0).long(),
            torch.tensor(action)[None],
            torch.tensor([[1, 1, 0, 0, 0, 0]]),
            pad_token_id=0,
        )
    assert info["kl"] == pytest.approx(-float(s.logprobs.sum()), rel=1e-5)
    assert info["completion"] == "great"
    assert info["reward_model"] == 1.0
    assert info["completion_length"] == 2 and info["eos"] and not info["length_limited"]


def test_kl_is_zero_when_policy_is_reference(tiny_lm_dir: Path) -> None:
    for estimator in ("k1", "k2", "k3", "full"):
        env = make_bandit(tiny_lm_dir, kl_estimator=estimator).unwrapped
        model = env.models.ref_model
        pad = env.models.pad_token_id

        def reference_policy(observations, actions, env=env, model=model, pad=pad):
            p = torch.as_tensor(observations)
            a = torch.as_tensor(actions)
            from lmgym.models.padding import completion_mask_from_ids

            m = completion_mask_from_ids(a, env.models.eos_token_id)
            s = score_completions(model, p, (p != pad).long(), a, m, pad_token_id=pad,
                                  keep_logits=True)  # fmt: skip
            return torch.log_softmax(s.logits, -1)

        env.attach_policy(reference_policy)
        env.reset(seed=1)
        _, _, _, _, info = env.step(env.action_space.sample())
        assert info["kl_form"] == "policy"
        assert info["kl"] == pytest.approx(0.0, abs=1e-5), estimator


def test_length_limited_is_a_completion_without_eos(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir)
    eos = env.unwrapped.models.eos_token_id
    for action, limited in (
        ([5] * 6, True),
        ([5] * 5 + [eos], False),
        ([eos, 5, 5, 5, 5, 5], False),
    ):
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step(np.array(action))
        assert terminated and not truncated
        assert info["length_limited"] is limited and info["eos"] is not limited


def attach_other_policy(env: gym.Env) -> None:
    """π_θ = another tiny LM: a KL that differs from episode to episode."""
    lm = env.unwrapped.models
    env.unwrapped.attach_policy(lm_logprobs(build_tiny_model(lm.vocab_size, seed=1).eval(), lm))


SKEWED_COMPLETIONS = [[5, 6, 7, 8, 9, 10], [2, 4, 4, 4, 4, 4], [11, 2, 4, 4, 4, 4]]


def play_bandit_episodes(env: gym.Env) -> tuple[list[float], list[float]]:
    """One episode per completion; returns each one's KL and β."""
    env.reset(seed=0)
    kls, betas = [], []
    for action in SKEWED_COMPLETIONS:
        env.reset(options={"prompt": "the soup is"})
        info = env.step(np.array(action))[-1]
        kls.append(info["kl"])
        betas.append(info["kl_coef"])
    return kls, betas


def test_adaptive_beta_updates_once_per_batch_from_the_mean_kl(tiny_lm_dir: Path) -> None:
    fixed = make_bandit(tiny_lm_dir, kl_estimator="k3", kl_coef=0.1)
    attach_other_policy(fixed)
    kls, _ = play_bandit_episodes(fixed)
    target = float(np.mean(kls)) / 1.1
    n = len(SKEWED_COMPLETIONS)
    env = make_bandit(tiny_lm_dir, kl_estimator="k3", kl_coef=0.1, kl_target=target, kl_horizon=10,
               kl_batch_size=n)  # fmt: skip
    attach_other_policy(env)
    kls_again, betas = play_bandit_episodes(env)
    assert kls_again == pytest.approx(kls) and betas == [0.1] * n
    from_mean = AdaptiveKLController(0.1, target=target, horizon=10)
    from_mean.update(float(np.mean(kls)), n)
    clipped_errors = AdaptiveKLController(0.1, target=target, horizon=10)
    for kl in kls:
        clipped_errors.update(kl, 1)
    # The two rules must give distinguishable β here, else the last check could not tell them
    # apart (how far apart depends on the tiny model's initialisation, so only a floor is set).
    assert clipped_errors.value != pytest.approx(from_mean.value, rel=1e-3)
    assert env.unwrapped.rewarder.controller.value == pytest.approx(from_mean.value, rel=1e-9)


def test_adaptive_beta_without_a_policy_is_refused(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir, kl_target=3.0)
    obs, _ = env.reset(seed=0)
    action = np.array([5, 2, 4, 4, 4, 4])
    with pytest.raises(ValueError, match=r"kl_target=3\.0 .*cross_entropy.*kl_target=None"):
        env.step(action)
    attach_other_policy(env)  # attached after construction: the usual flow
    obs2, _, terminated, _, info = env.step(action)  # the episode was not consumed
    assert terminated and info["kl_form"] == "policy"
    np.testing.assert_array_equal(obs, obs2)
    # Evaluation does not move β, so it may score in the cross-entropy form.
    env.unwrapped.attach_policy(None)
    batch = env.unwrapped.rewarder(
        ["the soup is"], obs[None], action[None], update_controller=False
    )
    assert batch.kl_form == "cross_entropy"


def test_same_seed_same_prompts_and_rewards(tiny_lm_dir: Path) -> None:
    def rollout(seed: int):
        env = make_bandit(tiny_lm_dir)
        env.action_space.seed(seed)
        out = []
        obs, _ = env.reset(seed=seed)
        for _ in range(6):
            _, r, *_, info = env.step(env.action_space.sample())
            out.append((info["prompt"], r))
            env.reset()
        return out

    assert rollout(7) == rollout(7)
    assert rollout(7) != rollout(8)


def test_pickle_round_trip(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir)
    clone = pickle.loads(pickle.dumps(env))
    a = env.reset(seed=5)[0]
    b = clone.reset(seed=5)[0]
    np.testing.assert_array_equal(a, b)
    action = env.action_space.sample()
    assert env.step(action)[1] == pytest.approx(clone.step(action)[1])


def test_ansi_render_shows_parts(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir, render_mode="ansi")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    text = env.render()
    assert "prompt:" in text and "completion:" in text and "reward_model" in text


def test_options_prompt_forces_prompt(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir)
    _, info = env.reset(seed=0, options={"prompt": "the soup is"})
    assert info["prompt"] == "the soup is"


# ---------------------------------------------------------------- bad input, state unchanged


@pytest.mark.parametrize(
    ("action", "error", "fragment"),
    [
        (np.zeros(5, dtype=np.int64), ValueError, r"shape \(5,\); expected \(6,\)"),
        (np.zeros((6, 1), dtype=np.int64), ValueError, "shape"),
        (np.zeros(6, dtype=np.float32), TypeError, "dtype float32"),
        (np.full(6, 10_000), ValueError, r"action\[0\]=10000 is not a token id"),
        (np.array([1, 2, -1, 0, 0, 0]), ValueError, r"action\[2\]=-1"),
        (["a"] * 6, TypeError, "dtype"),
    ],
    ids=["short", "2d", "float", "too_big", "negative", "strings"],
)
def test_bad_action_leaves_episode_usable(tiny_lm_dir, action, error, fragment) -> None:
    env = make_bandit(tiny_lm_dir)
    env.reset(seed=0)
    with pytest.raises(error, match=fragment):
        env.step(action)
    # The episode was not consumed: a valid step still works.
    _, _, terminated, _, _ = env.step(env.action_space.sample())
    assert terminated


def test_step_after_terminated_and_before_reset(tiny_lm_dir: Path) -> None:
    env = LMBanditEnv(model=tiny_lm_dir, prompts=PROMPTS, max_prompt_tokens=8, max_new_tokens=6)
    with pytest.raises(ResetNeeded, match="call reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    env.step(env.action_space.sample())
    with pytest.raises(ResetNeeded, match="call reset"):
        env.step(env.action_space.sample())


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"prompts": []}, ValueError, r"prompts=\[\] is empty"),
        ({"prompts": "the food was"}, TypeError, "not a list of strings"),
        (
            {"prompts": ["the food was very very very great"], "max_prompt_tokens": 3},
            ValueError,
            r"more than max_prompt_tokens=3.*truncate_prompts=True",
        ),  # fmt: skip
        ({"kl_coef": -0.1}, ValueError, r"kl_coef=-0.1"),
        ({"kl_coef": float("nan")}, ValueError, r"kl_coef=nan"),
        ({"kl_estimator": "k4"}, ValueError, r"kl_estimator='k4' is unknown.*'k1'"),
        ({"kl_batch_size": 0}, ValueError, r"kl_batch_size=0 .*int >= 1"),
        ({"kl_batch_size": 2.5}, ValueError, r"kl_batch_size=2.5 .*int >= 1"),
        (
            {"kl_target": 3.0, "kl_horizon": 10, "kl_batch_size": 50},
            ValueError,
            r"kl_batch_size=50 .*5 × kl_horizon=10",
        ),  # fmt: skip
        ({"max_new_tokens": 0}, ValueError, r"max_new_tokens=0"),
        ({"max_prompt_tokens": -1}, ValueError, r"max_prompt_tokens=-1"),
        ({"render_mode": "rgb_array"}, ValueError, r"render_mode='rgb_array'"),
        ({"model": "/nonexistent/model"}, ValueError, r"does not exist"),
    ],
    ids=[
        "empty_prompts",
        "str_prompts",
        "long_prompt",
        "neg_beta",
        "nan_beta",
        "estimator",
        "batch_size0",
        "batch_size_float",
        "batch_size_vs_horizon",
        "max_new0",
        "max_prompt_neg",
        "render",
        "bad_path",
    ],  # fmt: skip
)
def test_bad_construction_arguments(tiny_lm_dir, kwargs, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        make_bandit(tiny_lm_dir, **kwargs)


def test_truncate_prompts_keeps_the_end(tiny_lm_dir: Path) -> None:
    env = make_bandit(tiny_lm_dir, prompts=["the food was very great"], max_prompt_tokens=3,
               truncate_prompts=True)  # fmt: skip
    obs, _ = env.reset(seed=0)
    tok = env.unwrapped.models.tokenizer
    assert tok.decode(obs[obs != tok.pad_token_id]) == "was very great"


def test_raising_reward_fn_is_reraised_with_context(tiny_lm_dir: Path) -> None:
    def broken(prompts, completions):
        raise KeyError("boom")

    env = make_bandit(tiny_lm_dir, reward_fn=broken)
    env.reset(seed=0)
    with pytest.raises(RewardFunctionError, match="broken") as caught:
        env.step(env.action_space.sample())
    assert isinstance(caught.value.__cause__, KeyError)


def test_nan_reward_names_function_and_index(tiny_lm_dir: Path) -> None:
    def nan_reward(prompts, completions):
        return [float("nan")] * len(prompts)

    env = make_bandit(tiny_lm_dir, reward_fn=nan_reward)
    env.reset(seed=0)
    with pytest.raises(RewardFunctionError, match=r"nan_reward.*0"):
        env.step(env.action_space.sample())


def test_weighted_sum_parts_in_info(tiny_lm_dir: Path) -> None:
    from lmgym.rewards import LengthReward, WeightedSum

    reward = WeightedSum({count_great: 2.0, LengthReward(3): 0.5})
    env = make_bandit(tiny_lm_dir, reward_fn=reward)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    parts = info["reward_parts"]
    assert set(parts) == {"count_great", "LengthReward"}
    expected = 2.0 * parts["count_great"] + 0.5 * parts["LengthReward"]
    assert info["reward_model"] == pytest.approx(expected)


def test_unknown_prompt_words_warn_once_per_env_naming_them() -> None:
    env = gym.make("LMBandit-v0")
    with pytest.warns(UserWarning, match=r"does not know 'hello', 'world'.*<unk>") as record:
        env.reset(seed=0, options={"prompt": "hello world the salad was"})
        env.reset(seed=0, options={"prompt": "goodbye the salad was"})
    assert sum("does not know" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym.make("LMBandit-v0").reset(seed=0, options={"prompt": "the salad was"})


def test_human_render_prints_what_ansi_returns(capsys) -> None:
    shown = gym.make("LMBandit-v0", render_mode="human")
    text = gym.make("LMBandit-v0", render_mode="ansi")
    for env in (shown, text):
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
    capsys.readouterr()
    assert shown.render() is None
    assert capsys.readouterr().out == text.render() + "\n"
