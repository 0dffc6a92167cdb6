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
from lmgym.agents import lm_logprobs, lm_token_logprobs
from lmgym.envs.token import LMTokenEnv
from lmgym.error import ResetNeeded
from lmgym.models.kv_cache import kv_layers
from lmgym.models.scoring import score_completions
from lmgym.rewards.kl import AdaptiveKLController
from tests.conftest import PROMPTS, build_tiny_model, build_tiny_tokenizer
from tests.envs.conftest import BOS, EOS, PAD, P, T, make_bandit, make_token


def ids(env: gym.Env, text: str) -> list[int]:
    return env.unwrapped.models.tokenizer.convert_tokens_to_ids(text.split())


def run_episode(env: gym.Env, prompt: str, tokens: list[int]) -> list[tuple]:
    env.reset(seed=0, options={"prompt": prompt})
    steps = []
    for token in tokens:
        steps.append(env.step(token))
        if steps[-1][2] or steps[-1][3]:
            break
    return steps


CONFIGS = {
    "default_k1": {},
    "k3_adaptive": {"kl_estimator": "k3", "kl_target": 3.0, "kl_horizon": 100},
    "full_truncate": {"kl_estimator": "full", "truncate_prompts": True, "max_prompt_tokens": 3},
    "no_cache": {"reference_cache": False},
    "mask_array": {"action_mask": np.arange(27) % 2 == 0},
    "ansi": {"render_mode": "ansi"},
    "one_new_token": {"max_new_tokens": 1},
    "one_new_token_no_cache": {"max_new_tokens": 1, "reference_cache": False},
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_checkers_pass_without_warnings(tiny_lm_dir: Path, kwargs) -> None:
    env = make_token(tiny_lm_dir, **kwargs)
    if "kl_target" in kwargs:  # an adaptive β needs π_θ attached (a KL, not a cross-entropy)
        models = env.unwrapped.models
        env.unwrapped.attach_policy(lm_token_logprobs(models.model, models))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def env_state(env: LMTokenEnv) -> list:
    """Everything a step can change, as plain values (arrays, tensors and RNG state)."""
    reference = env.batch.reference
    cache = [t.clone() for layer in kv_layers(reference.cache) for t in layer]
    return [
        env.batch.obs.tolist(), env.batch.lengths.tolist(), env.batch.episode_kl.tolist(),
        env.batch.prompts, reference.ids.tolist(), reference.mask.tolist(),
        reference.next_logits.tolist(), [t.tolist() for t in cache],
        env.rewarder.controller.value, env.np_random.bit_generator.state,
    ]  # fmt: skip


NUMPY_FIVES = {
    "0d_int64": np.array(5),
    "0d_uint8": np.array(5, dtype=np.uint8),
    "0d_uint64": np.array(5, dtype=np.uint64),
    "uint8": np.uint8(5),
    "int16": np.int16(5),
    "int64": np.int64(5),
}


@pytest.mark.parametrize("action", NUMPY_FIVES.values(), ids=NUMPY_FIVES.keys())
def test_numpy_scalar_and_0d_actions_are_the_int(tiny_lm_dir: Path, action) -> None:
    env, twin = make_token(tiny_lm_dir).unwrapped, make_token(tiny_lm_dir).unwrapped
    for e in (env, twin):
        e.reset(seed=0)
    got, want = env.step(action), twin.step(5)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1:] == want[1:] and type(got[1]) is float
    assert env_state(env) == env_state(twin)
    for token in (6, 7):  # and the episode goes on identically
        got, want = env.step(np.array(token, dtype=action.dtype)), twin.step(token)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:] == want[1:]
    assert env_state(env) == env_state(twin)


def test_spaces_and_observation_layout(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir)
    vocab = env.unwrapped.models.vocab_size
    assert env.action_space == gym.spaces.Discrete(vocab)
    assert env.observation_space.shape == (P + T,) and env.observation_space.dtype == np.int64
    obs, info = env.reset(seed=0, options={"prompt": "the food was"})
    assert info == {"prompt": "the food was"}
    np.testing.assert_array_equal(obs[:P], [BOS, *ids(env, "the food was"), 0, 0, 0, 0])
    assert (obs[P:] == PAD).all()
    obs, *_ = env.step(ids(env, "great")[0])
    assert obs[P] == ids(env, "great")[0] and (obs[P + 1 :] == PAD).all()


def test_info_keys_and_reward_invariant_on_every_step(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir, kl_coef=0.1)
    steps = run_episode(env, "the soup is", [*ids(env, "great and great"), EOS, 5, 5])
    assert len(steps) == 4
    keys = {"prompt", "completion", "reward_model", "kl", "kl_coef", "kl_form", "episode_kl",
            "completion_length", "eos", "length_limited"}  # fmt: skip
    running = 0.0
    for t, (_, reward, terminated, truncated, info) in enumerate(steps):
        assert set(info) == keys
        assert reward == pytest.approx(info["reward_model"] - info["kl_coef"] * info["kl"])
        running += info["kl"]
        assert info["episode_kl"] == pytest.approx(running)
        assert info["completion_length"] == t + 1
        assert info["kl_form"] == "cross_entropy" and info["prompt"] == "the soup is"
        assert terminated == (t == 3) and not truncated and not info["length_limited"]
    assert [s[-1]["reward_model"] for s in steps] == [0.0, 0.0, 0.0, 2.0]
    assert steps[-1][-1]["completion"] == "great and great" and steps[-1][-1]["eos"]
    assert steps[1][-1]["completion"] == "great and"


def test_length_limit_terminates_and_is_recorded_in_info(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir)
    steps = run_episode(env, "the food was", [5] * T)
    # Scored at the limit and nothing follows: terminated, so no value is bootstrapped past it.
    assert [s[2] for s in steps] == [False] * (T - 1) + [True]
    assert not any(s[3] for s in steps)  # truncated is for cuts outside the task
    assert [s[-1]["length_limited"] for s in steps] == [False] * (T - 1) + [True]
    assert steps[-1][-1]["reward_model"] == 0.0 and steps[-1][-1]["completion_length"] == T
    steps = run_episode(env, "the food was", [5, EOS])
    assert steps[-1][2] and not steps[-1][3] and steps[-1][-1]["eos"]
    assert not steps[-1][-1]["length_limited"]
    # The pad id is not a text token: it ends the text, and the observation stays recoverable.
    steps = run_episode(env, "the food was", [5, PAD])
    assert steps[-1][2] and not steps[-1][3] and not steps[-1][-1]["eos"]
    assert not steps[-1][-1]["length_limited"]
    obs = steps[-1][0]
    assert obs[P] == 5 and (obs[P + 1 :] == PAD).all()
    # EOS as the T-th token ends the text: not a length-limited completion.
    steps = run_episode(env, "the food was", [5] * (T - 1) + [EOS])
    assert steps[-1][2] and steps[-1][-1]["eos"] and not steps[-1][-1]["length_limited"]


def test_pad_ends_the_completion_in_both_envs(tiny_lm_dir: Path) -> None:
    tokens = [5, PAD, 7, 8, EOS, 9]
    token_env = make_token(tiny_lm_dir, kl_coef=0.2)
    bandit = make_bandit(tiny_lm_dir, kl_coef=0.2)
    steps = run_episode(token_env, "the soup is", tokens)
    assert len(steps) == 2 and steps[-1][2]
    bandit.reset(seed=0, options={"prompt": "the soup is"})
    _, reward, *_, info = bandit.step(np.array(tokens))
    final = steps[-1][-1]
    assert info["completion_length"] == final["completion_length"] == 2
    assert info["kl"] == pytest.approx(final["episode_kl"], rel=1e-5)
    assert reward == pytest.approx(sum(s[1] for s in steps), rel=1e-5)
    tokenizer = token_env.unwrapped.models.tokenizer
    assert info["completion"] == final["completion"] == tokenizer.decode(5)
    assert not info["eos"] and not final["eos"]
    assert not info["length_limited"] and not final["length_limited"]


@pytest.mark.parametrize(
    ("estimator", "policy"),
    [("k1", False), ("k3", False), ("k1", True), ("k3", True), ("full", True)],
    ids=["ref_only_k1", "ref_only_k3", "policy_k1", "policy_k3", "policy_full"],
)
def test_episode_rewards_sum_to_bandit_reward(tiny_lm_dir: Path, estimator, policy) -> None:
    token_env = make_token(tiny_lm_dir, kl_estimator=estimator, kl_coef=0.2)
    bandit = make_bandit(tiny_lm_dir, kl_estimator=estimator, kl_coef=0.2)
    if policy:
        other = build_tiny_model(token_env.unwrapped.models.vocab_size, seed=1).eval()
        token_env.unwrapped.attach_policy(lm_token_logprobs(other, token_env.unwrapped.models))
        bandit.unwrapped.attach_policy(lm_logprobs(other, bandit.unwrapped.models))
    completions = {
        "eos": [*ids(token_env, "great food and"), EOS, 7, 7],
        "truncated": ids(token_env, "the staff were very great great"),
        "bos_inside": [9, BOS, 12, EOS, 4, 4],
    }
    for name, tokens in completions.items():
        steps = run_episode(token_env, "i thought the staff were", tokens)
        bandit.reset(seed=0, options={"prompt": "i thought the staff were"})
        *_, info = bandit.step(np.array(tokens))
        total = sum(s[1] for s in steps)
        assert total == pytest.approx(info["reward_model"] - info["kl_coef"] * info["kl"]), name
        final = steps[-1][-1]
        assert final["episode_kl"] == pytest.approx(info["kl"], rel=1e-5, abs=1e-5), name
        assert final["reward_model"] == info["reward_model"], name
        assert final["completion"] == info["completion"], name
        assert final["kl_form"] == info["kl_form"] == ("policy" if policy else "cross_entropy")
        assert final["length_limited"] == info["length_limited"] == (name == "truncated"), name


def test_cached_logprobs_equal_teacher_forced_scores(tiny_lm_dir: Path) -> None:
    for cache in (True, False):
        env = make_token(tiny_lm_dir, reference_cache=cache)
        model = env.unwrapped.models.ref_model
        rng = np.random.default_rng(0)
        for episode in range(4):
            obs, _ = env.reset(seed=episode)
            tokens = rng.integers(4, env.unwrapped.models.vocab_size, size=T)
            steps = [env.step(int(t)) for t in tokens]
            prompt = torch.tensor(obs)[None, :P]
            completion = torch.tensor(tokens)[None]
            with torch.inference_mode():
                scores = score_completions(
                    model, prompt, (prompt != PAD).long(), completion,
                    torch.ones_like(completion), pad_token_id=PAD,
                )  # fmt: skip
            cached = -np.array([s[-1]["kl"] for s in steps])
            np.testing.assert_allclose(cached, scores.logprobs[0].numpy(), rtol=1e-5, atol=1e-5)


def test_kl_is_zero_when_policy_is_reference(tiny_lm_dir: Path) -> None:
    for estimator in ("k1", "k2", "k3", "full"):
        env = make_token(tiny_lm_dir, kl_estimator=estimator).unwrapped
        env.attach_policy(lm_token_logprobs(env.models.ref_model, env.models))
        env.reset(seed=1)
        for token in (5, 9, EOS):
            *_, info = env.step(token)
            assert info["kl_form"] == "policy"
            assert info["kl"] == pytest.approx(0.0, abs=1e-5), estimator


def attach_other_policy(env: gym.Env) -> None:
    """π_θ = another tiny LM: a KL that differs from episode to episode."""
    lm = env.unwrapped.models
    env.unwrapped.attach_policy(
        lm_token_logprobs(build_tiny_model(lm.vocab_size, seed=1).eval(), lm)
    )


SKEWED_EPISODES = [[5, 6, 7, 8, 9, 10], [EOS], [11, EOS]]  # summed KLs far apart


def play_token_episodes(env: gym.Env) -> tuple[list[float], list[float]]:
    """Play SKEWED_EPISODES; return each episode's summed KL and the β of every step."""
    kls, betas = [], []
    env.reset(seed=0)
    for tokens in SKEWED_EPISODES:
        env.reset(options={"prompt": "the soup is"})
        for token in tokens:
            _, _, terminated, truncated, info = env.step(token)
            betas.append(info["kl_coef"])
            if terminated or truncated:
                break
        kls.append(info["episode_kl"])
    return kls, betas


def test_adaptive_beta_updates_once_per_batch_from_the_mean_kl(tiny_lm_dir: Path) -> None:
    fixed = make_token(tiny_lm_dir, kl_estimator="k3", kl_coef=0.1)
    attach_other_policy(fixed)
    kls, _ = play_token_episodes(fixed)
    target = float(np.mean(kls)) / 1.1  # the batch mean is 10% over target: e = 0.1, unclipped
    n = len(SKEWED_EPISODES)
    env = make_token(tiny_lm_dir, kl_estimator="k3", kl_coef=0.1, kl_target=target, kl_horizon=10,
               kl_batch_size=n)  # fmt: skip
    attach_other_policy(env)
    kls_again, betas = play_token_episodes(env)
    assert kls_again == pytest.approx(kls)
    assert betas == [0.1] * len(betas)  # β only moves once the batch is complete
    from_mean = AdaptiveKLController(0.1, target=target, horizon=10)
    from_mean.update(float(np.mean(kls)), n)
    clipped_errors = AdaptiveKLController(0.1, target=target, horizon=10)
    for kl in kls:  # what a per-episode update does: the mean of clipped errors
        clipped_errors.update(kl, 1)
    # The two rules must give distinguishable β here, else the last check could not tell them
    # apart (how far apart depends on the tiny model's initialisation, so only a floor is set).
    assert clipped_errors.value != pytest.approx(from_mean.value, rel=1e-3)
    assert env.unwrapped.rewarder.controller.value == pytest.approx(from_mean.value, rel=1e-9)
    env.reset(seed=0)  # a seeded reset restarts β
    assert env.step(5)[-1]["kl_coef"] == 0.1


def test_adaptive_beta_without_a_policy_is_refused(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir, kl_target=3.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"kl_target=3\.0 .*cross_entropy.*attach") as caught:
        env.step(5)
    assert "kl_target=None" in str(caught.value)  # the other fix: a fixed β
    attach_other_policy(env)  # attached after construction: the usual flow
    _, _, terminated, _, info = env.step(5)  # the refused step changed nothing
    assert info["completion_length"] == 1 and info["kl_form"] == "policy" and not terminated


def test_cross_entropy_form_with_a_fixed_beta_is_allowed(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir, kl_coef=0.3)
    env.reset(seed=0)
    info = env.step(5)[-1]
    assert info["kl_form"] == "cross_entropy" and info["kl"] > 0


def test_same_seed_same_rollouts(tiny_lm_dir: Path) -> None:
    def rollout(seed: int) -> list:
        env = make_token(tiny_lm_dir)
        env.action_space.seed(seed)
        out = []
        obs, _ = env.reset(seed=seed)
        for _ in range(20):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out.append((obs.tolist(), reward, terminated, truncated, info["completion"]))
            if terminated or truncated:
                env.reset()
        return out

    assert rollout(7) == rollout(7)
    assert rollout(7) != rollout(8)


def test_pickle_round_trip_mid_episode(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir)
    env.reset(seed=5)
    env.step(5)
    clone = pickle.loads(pickle.dumps(env))
    for token in (9, 12, EOS):
        a, b = env.step(token), clone.step(token)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == pytest.approx(b[1:4]) and a[4] == b[4]


def test_action_masks(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == np.bool_ and mask.shape == (env.unwrapped.models.vocab_size,)
    assert not mask[PAD] and not mask[BOS] and mask[EOS] and mask[4:].all()

    allowed = np.zeros(mask.shape, dtype=bool)
    allowed[[BOS, EOS, 7]] = True
    env = make_token(tiny_lm_dir, action_mask=allowed)
    env.reset(seed=0)
    assert np.flatnonzero(env.unwrapped.action_masks()).tolist() == [EOS, 7]

    def eos_after_two(observation: np.ndarray) -> np.ndarray:
        out = np.ones(mask.shape, dtype=bool)
        out[EOS] = (observation[P:] != PAD).sum() >= 2
        return out

    env = make_token(tiny_lm_dir, action_mask=eos_after_two)
    env.reset(seed=0)
    assert not env.unwrapped.action_masks()[EOS]
    env.step(5)
    env.step(5)
    assert env.unwrapped.action_masks()[EOS]


# ---------------------------------------------------------------- bad input, state unchanged


@pytest.mark.parametrize(
    ("action", "error", "fragment"),
    [
        (10_000, ValueError, r"action=10000 is not a token id"),
        (-1, ValueError, r"action=-1"),
        (np.int64(27), ValueError, r"action=27 .*\[0, 27\)"),
        (2.0, TypeError, "expected one integer token id"),
        (True, TypeError, "expected one integer token id"),
        ("great", TypeError, "expected one integer token id"),
        (np.array([5, 6]), ValueError, r"shape \(2,\)"),
    ],
    ids=["too_big", "negative", "vocab_size", "float", "bool", "str", "array"],
)
def test_bad_action_leaves_episode_usable(tiny_lm_dir, action, error, fragment) -> None:
    env = make_token(tiny_lm_dir)
    obs, _ = env.reset(seed=0)
    with pytest.raises(error, match=fragment):
        env.step(action)
    obs2, _, terminated, truncated, info = env.step(5)  # the episode was not consumed
    assert info["completion_length"] == 1 and not (terminated or truncated)
    np.testing.assert_array_equal(obs2[:P], obs[:P])


def test_step_after_episode_end_and_before_reset(tiny_lm_dir: Path) -> None:
    env = LMTokenEnv(model=tiny_lm_dir, prompts=PROMPTS, max_prompt_tokens=P, max_new_tokens=2)
    with pytest.raises(ResetNeeded, match="call reset"):
        env.step(5)
    env.reset(seed=0)
    env.step(5)
    assert env.step(5)[2]  # terminated at the length limit
    with pytest.raises(ResetNeeded, match="call reset"):
        env.step(5)
    env.reset()
    assert env.step(EOS)[2]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"max_new_tokens": 0}, ValueError, r"max_new_tokens=0"),
        ({"max_new_tokens": -3}, ValueError, r"max_new_tokens=-3"),
        ({"action_mask": np.zeros(27, dtype=bool)}, ValueError, "masks every token"),
        ({"action_mask": np.eye(27, dtype=bool)[PAD]}, ValueError, "masks every token"),
        ({"action_mask": np.ones(5, dtype=bool)}, ValueError, r"shape \(5,\); expected \(27,\)"),
        ({"action_mask": np.ones(27)}, TypeError, "dtype float64; expected a boolean"),
        ({"kl_estimator": "k4"}, ValueError, r"kl_estimator='k4' is unknown"),
        ({"render_mode": "rgb_array"}, ValueError, r"render_mode='rgb_array'"),
    ],
    ids=[
        "max_new0",
        "max_new_neg",
        "mask_all",
        "mask_only_pad",
        "mask_shape",
        "mask_dtype",
        "estimator",
        "render",
    ],  # fmt: skip
)
def test_bad_construction_arguments(tiny_lm_dir, kwargs, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        make_token(tiny_lm_dir, **kwargs)


def test_callable_mask_that_masks_everything_is_a_clear_error(tiny_lm_dir: Path) -> None:
    calls = {"n": 0}

    def nothing_after_one(observation: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        return np.full(27, (observation[P:] == PAD).all())

    env = make_token(tiny_lm_dir, action_mask=nothing_after_one)
    env.reset(seed=0)
    assert env.unwrapped.action_masks().any()
    env.step(5)
    with pytest.raises(ValueError, match=r"action_mask\(\[.*\]\) masks every token"):
        env.unwrapped.action_masks()
    assert not env.step(6)[2]  # still usable


def test_policy_with_wrong_output_shape_is_rejected(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir).unwrapped
    env.attach_policy(lambda observations: torch.zeros(len(observations), 5))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"returned shape \(1, 5\); expected \(1, 27\)"):
        env.step(5)
    env.attach_policy(None)
    assert env.step(5)[-1]["completion_length"] == 1


def test_ansi_render(tiny_lm_dir: Path) -> None:
    env = make_token(tiny_lm_dir, render_mode="ansi")
    env.reset(seed=0)
    assert "no token yet" in env.render()
    env.step(ids(env, "great")[0])
    text = env.render()
    assert "completion: 'great'" in text and "reward_model" in text


def test_raising_reward_fn_leaves_the_step_retryable(tiny_lm_dir: Path) -> None:
    from lmgym.error import RewardFunctionError

    failures = {"left": 1}

    def flaky(prompts, completions):
        if failures["left"]:
            failures["left"] -= 1
            raise KeyError("boom")
        return [1.0] * len(prompts)

    env = make_token(tiny_lm_dir, reward_fn=flaky)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(RewardFunctionError, match="flaky"):
        env.step(EOS)
    obs, reward, terminated, _, info = env.step(EOS)  # nothing was committed by the failure
    assert terminated and info["completion_length"] == 2 and info["reward_model"] == 1.0
    assert (obs[P + 2 :] == PAD).all()


# -------------------------------------------- a model whose embedding is padded past the tokenizer


@pytest.fixture(scope="module")
def padded_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with 64 embedding rows for 27 tokens (rounded up to a multiple of 64)."""
    path = tmp_path_factory.mktemp("padded_lm")
    tokenizer = build_tiny_tokenizer()
    rows = -(-len(tokenizer) // 64) * 64
    build_tiny_model(rows).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def support_logprobs(env: gym.Env, observations: np.ndarray, actions: np.ndarray) -> torch.Tensor:
    """(B, T, V) log π_ref over the tokenizer's tokens only: the support of the env's KL."""
    lm = env.unwrapped.models
    prompt, completion = torch.as_tensor(observations), torch.as_tensor(actions)
    with torch.inference_mode():
        scores = score_completions(
            lm.ref_model, prompt, (prompt != lm.pad_token_id).long(), completion,
            torch.ones_like(completion), pad_token_id=lm.pad_token_id, keep_logits=True,
        )  # fmt: skip
    return torch.log_softmax(scores.logits[..., : lm.vocab_size], dim=-1)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "full"])
def test_padded_vocabulary_gives_zero_kl_when_policy_is_reference(padded_lm_dir, estimator):
    token_env = make_token(padded_lm_dir, kl_estimator=estimator)
    lm = token_env.unwrapped.models
    assert lm.ref_model.get_input_embeddings().weight.shape[0] == 64 > lm.vocab_size == 27
    token_env.unwrapped.attach_policy(lm_token_logprobs(lm.ref_model, lm))
    tokens = [5, 9, 12, 7, EOS]
    steps = run_episode(token_env, "the soup is", tokens)
    assert [s[-1]["kl"] for s in steps] == pytest.approx([0.0] * len(steps), abs=1e-5)

    # The bandit, with π_θ given as full (B, T, V_model) log-distributions, and (k1/k2/k3) as
    # the chosen tokens' log-probs over the tokenizer's tokens.
    bandit = make_bandit(padded_lm_dir, kl_estimator=estimator)
    models = bandit.unwrapped.models
    policies = {"full_rows": lm_logprobs(models.ref_model, models)}
    if estimator != "full":
        policies["chosen_tokens"] = lambda obs, actions: support_logprobs(
            bandit, obs, actions
        ).gather(2, torch.as_tensor(actions)[..., None])[..., 0]
    for name, policy in policies.items():
        bandit.unwrapped.attach_policy(policy)
        bandit.reset(seed=0, options={"prompt": "the soup is"})
        info = bandit.step(np.array([*tokens, 4]))[-1]
        assert info["kl_form"] == "policy"
        assert info["kl"] == pytest.approx(0.0, abs=1e-5), name


def test_padded_vocabulary_cross_entropy_is_over_the_tokenizers_tokens(padded_lm_dir) -> None:
    tokens = [5, 9, 12, 7, EOS]
    token_env, bandit = make_token(padded_lm_dir), make_bandit(padded_lm_dir)
    steps = run_episode(token_env, "the soup is", tokens)
    obs, _ = bandit.reset(seed=0, options={"prompt": "the soup is"})
    info = bandit.step(np.array([*tokens, 4]))[-1]
    ref = support_logprobs(bandit, obs[None], np.array([tokens]))[0]  # (T, V)
    expected = -ref.gather(1, torch.tensor(tokens)[:, None])[:, 0].numpy()
    np.testing.assert_allclose([s[-1]["kl"] for s in steps], expected, rtol=1e-5)
    assert info["kl"] == pytest.approx(float(expected.sum()), rel=1e-5)
    assert info["kl_form"] == steps[-1][-1]["kl_form"] == "cross_entropy"
