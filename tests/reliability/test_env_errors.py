"""Bad input to the LM envs: a clear error, raised before anything changes.

Each test feeds one kind of bad input (issue 17, items 4-8 and 14-16) and checks two things: the
error names what was wrong, and afterwards the env gives exactly the rollout of a twin env that
never saw the bad call (same prompts, same rewards, same adaptive β).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import error as gym_error

import lmgym  # noqa: F401  (registers the envs)
from lmgym.agents import lm_logprobs, lm_token_logprobs
from lmgym.envs.token import LMTokenEnv
from lmgym.error import ModelLoadError
from tests.helpers import exec_doc_blocks
from tests.reliability.twins import (
    CLEAR_ERRORS,
    EOS,
    GREAT,
    PAD,
    PROMPTS,
    T,
    make_adaptive,
    make_env,
    make_vec,
    rollout,
)


def assert_no_trace(
    make: Callable[[], Any], bad_call: Callable[[Any], object], error: Any, match: str
) -> None:
    """``bad_call`` raises ``error`` matching ``match``; then ``env`` continues like a twin."""
    env, twin = make(), make()
    for e in (env, twin):
        e.reset(seed=3)
        rollout(e, steps=3)
    with pytest.raises(error, match=match):
        bad_call(env)
    assert rollout(env) == rollout(twin)


# ---------------------------------------------------------------- 4: prompt + completion > context


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_prompt_and_completion_beyond_positions_is_refused(tiny_lm_dir: Path, kind: str) -> None:
    # The tiny model has 64 positions: 60 prompt tokens and 30 new ones do not fit.
    with pytest.raises(ValueError, match=r"max_prompt_tokens=60 \+ max_new_tokens=30 = 90 .*64 "):
        make_env(kind, tiny_lm_dir, max_prompt_tokens=60, max_new_tokens=30)
    with pytest.raises(ValueError, match=r"max_new_tokens=64 .* lower max_new_tokens below 64"):
        make_env(kind, tiny_lm_dir, max_new_tokens=64, truncate_prompts=True)


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_truncate_prompts_fits_the_prompt_block_to_the_positions(
    tiny_lm_dir: Path, kind: str
) -> None:
    long_prompt = " ".join(["the food was great"] * 15)  # 60 words + <bos>
    with pytest.warns(UserWarning, match="cut to their last 34 tokens"):
        env = make_env(kind, tiny_lm_dir, prompts=[long_prompt], max_prompt_tokens=60,
                       max_new_tokens=30, truncate_prompts=True)  # fmt: skip
    assert env.max_prompt_tokens == 34
    assert env.observation_space.shape == ((34,) if kind == "bandit" else (64,))
    for _ in range(2):  # used to raise IndexError deep in the embedding, and then every time
        obs, _ = env.reset(seed=0, options={"prompt": long_prompt})
        assert (obs[:34] != PAD).all() and obs[33] == env.models.tokenizer.convert_tokens_to_ids(
            "great"
        )
        if kind == "bandit":
            _, reward, *_ = env.step(np.full(30, GREAT))
        else:
            for _ in range(30):
                _, reward, terminated, *_ = env.step(GREAT)
            assert terminated
        assert np.isfinite(reward)


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_forced_prompt_too_long_leaves_the_env_as_it_was(tiny_lm_dir: Path, kind: str) -> None:
    too_long = " ".join(["the food was great"] * 3)  # 12 words + <bos> > max_prompt_tokens=8
    assert_no_trace(
        lambda: make_adaptive(kind, tiny_lm_dir),
        lambda env: env.reset(seed=5, options={"prompt": too_long}),
        ValueError,
        r'options\["prompt"\]=.* has 13 tokens, more than max_prompt_tokens=8',
    )


# ---------------------------------------------------------------- 6: text no tokenizer can encode


def test_lone_surrogate_in_prompt_list_names_its_index(tiny_lm_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"prompts\[2\]='the \\ud814 food' holds '\\ud814' at "
                                         r"character 4.*not valid Unicode"):  # fmt: skip
        make_env("bandit", tiny_lm_dir, prompts=["the food", "was", "the \ud814 food"])


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_lone_surrogate_at_reset_leaves_the_env_as_it_was(tiny_lm_dir: Path, kind: str) -> None:
    assert_no_trace(
        lambda: make_adaptive(kind, tiny_lm_dir),
        lambda env: env.reset(seed=1, options={"prompt": "\udfff"}),
        ValueError,
        r"options\[\"prompt\"\]='\\udfff' holds '\\udfff' at character 0",
    )


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_prompts_callable_returning_bad_text_leaves_the_env_as_it_was(
    tiny_lm_dir: Path, kind: str
) -> None:
    def make() -> Any:
        texts = list(PROMPTS)

        def draw(rng: np.random.Generator) -> str:
            return texts[int(rng.integers(len(texts)))]

        env = make_adaptive(kind, tiny_lm_dir, prompts=draw)
        env.texts = texts  # lets the bad call poison the list
        return env

    def bad_call(env: Any) -> None:
        saved = list(env.texts)
        env.texts[:] = ["bad \ud800"] * len(saved)
        try:
            env.reset()
        finally:
            env.texts[:] = saved

    assert_no_trace(make, bad_call, ValueError, r"the prompts callable's result='bad \\ud800'")


# ---------------------------------------------------------------- 7: short error messages


def test_error_messages_cut_long_values(tiny_lm_dir: Path) -> None:
    huge = "the food was great " * 68_500  # 1.3 MB, 274,000 tokens
    with pytest.raises(ValueError) as caught:
        make_env("bandit", tiny_lm_dir, prompts=[huge])
    message = str(caught.value)
    assert len(message) < 600, len(message)
    assert f"(a str of {len(huge)} characters)" in message and "prompts[0]=" in message
    env = make_env("token", tiny_lm_dir)
    env.reset(seed=0)
    for bad, error in [
        ({"prompt": huge}, ValueError),
        ({"prompt": list(range(100_000))}, TypeError),
        ("x" * 10**6, TypeError),
    ]:
        with pytest.raises(error) as caught:
            env.reset(options=bad)
        assert len(str(caught.value)) < 600, str(caught.value)[:300]
    with pytest.raises(TypeError) as caught:
        env.step([GREAT] * 100_000)
    assert len(str(caught.value)) < 600 and "a list of 100000 items" in str(caught.value)


# ---------------------------------------------------------------- 8: a policy returning garbage


GARBAGE = {
    "str": lambda n: "log-probs",
    "object": lambda n: object(),
    "list": lambda n: [[0.0] * 27] * n,
    "int_tensor": lambda n: torch.zeros((n, 27), dtype=torch.long),
    "none": lambda n: None,
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_attached_policy_returning_garbage_says_what_it_must_return(
    tiny_lm_dir: Path, kind: str, garbage: Callable[[int], Any]
) -> None:
    protocol = "PolicyLogProbFn" if kind == "bandit" else "TokenPolicyLogProbFn"
    expected = (
        r"\(B, T\) log-probs of the chosen tokens" if kind == "bandit" else r"\(B, V\) next-token"
    )
    env = make_env(kind, tiny_lm_dir)
    twin = make_env(kind, tiny_lm_dir)
    for e in (env, twin):
        e.reset(seed=0)
    env.attach_policy(lambda obs, *actions: garbage(len(obs)))
    action = np.full(T, GREAT) if kind == "bandit" else GREAT
    match = rf"the attached policy returned .*expected a floating-point torch.Tensor of {expected}"
    with pytest.raises(TypeError, match=rf"{match}.*{protocol}"):
        env.step(action)
    env.attach_policy(None)
    assert env.step(action)[1] == twin.step(action)[1]


def log_probs(kind: str, value: float) -> Callable[..., torch.Tensor]:
    """A policy giving every token the log-prob ``value``: (B, T, V) or (B, V) by env."""
    if kind == "bandit":
        return lambda obs, actions: torch.full((len(obs), T, 27), value)
    return lambda obs: torch.full((len(obs), 27), value)


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_attached_policy_returning_nan_is_refused(tiny_lm_dir: Path, kind: str) -> None:
    env = make_env(kind, tiny_lm_dir)
    env.reset(seed=0)
    env.attach_policy(log_probs(kind, float("nan")))
    with pytest.raises(ValueError, match="the attached policy returned NaN log-probs"):
        env.step(np.full(T, GREAT) if kind == "bandit" else GREAT)


# ---------------------------------------------------------------- 14: token vector env autoreset


class FlakyPrompts:
    """A prompts callable that raises on chosen calls (counted from 1), else draws from PROMPTS."""

    def __init__(self, fail_on: set[int]) -> None:
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, rng: np.random.Generator) -> str:
        text = PROMPTS[int(rng.integers(len(PROMPTS)))]  # the draw happens before the failure
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError("prompt server unavailable")
        return text


def test_token_vector_prompt_failure_at_autoreset_runs_no_row_past_eos(tiny_lm_dir: Path) -> None:
    flaky = FlakyPrompts(fail_on={4})  # 3 calls at reset, the 4th resets env 0 after its EOS
    envs = make_adaptive("token", tiny_lm_dir, vector=True, prompts=flaky)
    twin = make_adaptive("token", tiny_lm_dir, vector=True, prompts=FlakyPrompts(fail_on=set()))
    for e in (envs, twin):
        e.reset(seed=0)
    before = envs.batch.obs.copy()
    actions = np.array([EOS, GREAT, GREAT])
    with pytest.raises(ConnectionError, match="unavailable"):
        envs.step(actions)
    np.testing.assert_array_equal(envs.batch.obs, before)  # env 0 holds no EOS it never ended
    assert envs.rewarder.controller.value == twin.rewarder.controller.value
    for _ in range(2):  # a retry, and what follows, matches an env that never failed
        got, want = envs.step(actions), twin.step(actions)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[4]["prompt"].tolist() == want[4]["prompt"].tolist()
        actions = np.array([GREAT, EOS, GREAT])
    assert rollout(envs) == rollout(twin)


# ---------------------------------------------------------------- 15: bandit vector env, resets


def test_bandit_vector_failing_step_changes_no_beta_and_no_rng(tiny_lm_dir: Path) -> None:
    flaky = FlakyPrompts(fail_on={5})  # 3 calls at reset; the step's 2nd draw fails
    envs = make_adaptive("bandit", tiny_lm_dir, vector=True, prompts=flaky)
    twin = make_adaptive("bandit", tiny_lm_dir, vector=True, prompts=FlakyPrompts(fail_on=set()))
    for e in (envs, twin):
        e.reset(seed=0)
    beta = envs.rewarder.controller.value
    actions = np.full((3, T), GREAT)
    with pytest.raises(ConnectionError):
        envs.step(actions)
    assert envs.rewarder.controller.value == beta  # was updated before the draw failed
    got, want = envs.step(actions), twin.step(actions)  # the retry updates β once, like the twin
    np.testing.assert_array_equal(got[1], want[1])
    assert got[4]["final_info"]["kl_coef"].tolist() == want[4]["final_info"]["kl_coef"].tolist()
    assert rollout(envs) == rollout(twin)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"prompt": 123}, TypeError, r"options\[\"prompt\"\]=123 has type int"),
        ({"prompt": "the soup \ud814"}, ValueError, "not valid Unicode"),
        ({"promt": "the soup is"}, ValueError, r"unknown key 'promt'; expected only \['prompt'\]"),
        ("prompt", TypeError, r"options='prompt' \(type str\) is not a dict"),
        (123, TypeError, r"options=123 \(type int\) is not a dict"),
        (["prompt"], TypeError, r"options=\['prompt'\] \(type list\) is not a dict"),
    ],
    ids=["int_prompt", "surrogate", "unknown_key", "str", "int", "list"],
)
@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_seeded_reset_with_bad_options_changes_nothing(
    tiny_lm_dir: Path, kind: str, options: Any, error: type, match: str
) -> None:
    assert_no_trace(
        lambda: make_adaptive(kind, tiny_lm_dir),
        lambda env: env.reset(seed=5, options=options),
        error,
        match,
    )


@pytest.mark.parametrize(
    ("seed", "options", "error", "match"),
    [
        ([0, -1, 2], None, ValueError, r"seed\[1\]=-1 is negative"),
        ([0, 1.5, 2], None, TypeError, r"seed\[1\]=1.5 \(type float\) is not an int"),
        ([0, 1], None, ValueError, "seed has 2 entries; expected num_envs=3"),
        ("0", None, TypeError, r"seed='0' \(type str\) is not supported"),
        (-3, None, ValueError, "seed=-3 is negative"),
        (5, {"prompt": 123}, TypeError, r"options\[\"prompt\"\]=123 \(type int\)"),
        (5, {"prompt": ["the soup is"]}, TypeError, "a list of num_envs=3 texts"),
        (
            5,
            {"prompt": ["the soup is", "a", "the " * 9]},
            ValueError,
            r"options\[\"prompt\"\]\[2\]='the the .* has 10 tokens",
        ),
        (5, {"reset_mask": np.ones(3, bool)}, ValueError, "reset_mask'] is not supported"),
        (5, "prompt", TypeError, "is not a dict"),
    ],
    ids=[
        "negative",
        "float",
        "length",
        "str",
        "negative_int",
        "int_prompt",
        "short_list",
        "long_prompt",
        "reset_mask",
        "str_options",
    ],  # fmt: skip
)
@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_vector_reset_with_bad_arguments_changes_nothing(
    tiny_lm_dir: Path, kind: str, seed: Any, options: Any, error: type, match: str
) -> None:
    assert_no_trace(
        lambda: make_adaptive(kind, tiny_lm_dir, vector=True),
        lambda env: env.reset(seed=seed, options=options),
        error,
        match,
    )


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_seed_errors_are_lmgym_errors_not_gymnasium_ones(tiny_lm_dir: Path, kind: str) -> None:
    env = make_env(kind, tiny_lm_dir)
    for seed, error in [(-1, ValueError), (1.0, TypeError), ("0", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="seed=") as caught:
            env.reset(seed=seed)
        assert not isinstance(caught.value, gym_error.Error)


# ---------------------------------------------------------------- 16: validation gaps


def test_ref_model_errors_name_ref_model(tiny_lm_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^ref_model='/nonexistent/ref' does not exist"):
        make_env("bandit", tiny_lm_dir, ref_model="/nonexistent/ref")
    with pytest.raises(ModelLoadError, match=r"^ref_model=.* holds no config.json"):
        make_env("token", tiny_lm_dir, ref_model=tiny_lm_dir.parent)
    with pytest.raises(TypeError, match=r"^ref_model=123 \(type int\) is not supported"):
        make_env("token", tiny_lm_dir, ref_model=123)


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_numpy_kl_coef_is_a_number(tiny_lm_dir: Path, kind: str) -> None:
    env = make_env(kind, tiny_lm_dir, kl_coef=np.float32(0.1), kl_target=np.float64(3.0),
                   kl_horizon=np.int64(100), max_new_tokens=np.int32(T))  # fmt: skip
    env.attach_policy(
        (lm_logprobs if kind == "bandit" else lm_token_logprobs)(env.models.model, env.models)
    )
    env.reset(seed=0)
    info = env.step(np.full(T, GREAT) if kind == "bandit" else GREAT)[-1]
    assert info["kl_coef"] == pytest.approx(0.1) and type(info["kl_coef"]) is float


BAD_ARGS = [
    ({"kl_coef": 1e308}, ValueError, r"kl_coef=1e\+308 must be a finite float in \[0, 1e\+06\]"),
    ({"kl_coef": "0.1"}, TypeError, r"kl_coef='0.1' \(type str\) is not a number"),
    ({"kl_coef": True}, TypeError, r"kl_coef=True \(type bool\) is not a number"),
    ({"kl_horizon": 0}, ValueError, r"kl_horizon=0 must be an int >= 1"),
    ({"kl_horizon": -5}, ValueError, r"kl_horizon=-5 must be an int >= 1"),
    ({"kl_horizon": 2.5}, TypeError, r"kl_horizon=2.5 \(type float\) is not an int"),
    ({"kl_horizon": "abc"}, TypeError, r"kl_horizon='abc' \(type str\) is not an int"),
    ({"kl_target": 0.0}, ValueError, r"kl_target=0.0 must be a finite KL > 0"),
    ({"kl_target": "6"}, TypeError, r"kl_target='6' \(type str\) is not a number"),
    ({"kl_estimator": ["k1"]}, TypeError, r"kl_estimator=\['k1'\] \(type list\) is not a str"),
    ({"truncate_prompts": "no"}, TypeError, r"truncate_prompts='no' \(type str\) is not a bool"),
    ({"truncate_prompts": 1}, TypeError, r"truncate_prompts=1 \(type int\) is not a bool"),
    ({"max_prompt_tokens": 10**9}, ValueError,
     r"max_prompt_tokens=1000000000 \+ max_new_tokens=4 = 1000000004 tokens exceeds the "
     r"model's context of 64"),
    ({"max_prompt_tokens": 2.0}, TypeError, r"max_prompt_tokens=2.0 \(type float\) is not an int"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGS, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_bad_construction_arguments_are_named(
    tiny_lm_dir: Path, kind: str, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match="^" + match):
        make_env(kind, tiny_lm_dir, **kwargs)


def test_token_env_reference_cache_must_be_a_bool(tiny_lm_dir: Path) -> None:
    with pytest.raises(TypeError, match=r"reference_cache='no' \(type str\) is not a bool"):
        make_env("token", tiny_lm_dir, reference_cache="no")


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_overflowing_reward_is_refused_before_any_change(tiny_lm_dir: Path, kind: str) -> None:
    env, twin = make_env(kind, tiny_lm_dir), make_env(kind, tiny_lm_dir)
    for e in (env, twin):
        e.reset(seed=0)
    env.rewarder.controller.value = 1e308  # e.g. an adaptive β that ran away
    action = np.full(T, GREAT) if kind == "bandit" else GREAT
    with pytest.raises(ValueError, match=r"reward of env 0 is -inf: .*kl_coef=1e\+308 .*overflows"):
        env.step(action)
    env.rewarder.controller.value = twin.rewarder.controller.value
    assert env.step(action)[1] == twin.step(action)[1]  # the episode was not consumed


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_vector_reset_takes_numpy_seeds(tiny_lm_dir: Path, kind: str) -> None:
    envs, twin = make_vec(kind, tiny_lm_dir), make_vec(kind, tiny_lm_dir)
    obs, info = envs.reset(seed=np.int64(3))
    want_obs, want_info = twin.reset(seed=3)
    np.testing.assert_array_equal(obs, want_obs)
    assert info["prompt"].tolist() == want_info["prompt"].tolist()
    envs.reset(seed=np.array([3, 4, 5]))
    twin.reset(seed=[3, 4, 5])
    assert rollout(envs) == rollout(twin)


@pytest.mark.parametrize("kind", ["bandit", "token"])
def test_vector_reset_forces_prompts(tiny_lm_dir: Path, kind: str) -> None:
    envs = make_vec(kind, tiny_lm_dir)
    single = make_env(kind, tiny_lm_dir)
    obs, info = envs.reset(seed=0, options={"prompt": "the soup is"})
    want, _ = single.reset(seed=0, options={"prompt": "the soup is"})
    assert info["prompt"].tolist() == ["the soup is"] * 3
    np.testing.assert_array_equal(obs, np.stack([want] * 3))
    texts = ["the soup is", "the food was", "i thought the staff were"]
    _, info = envs.reset(options={"prompt": texts})
    assert info["prompt"].tolist() == texts
    # A forced prompt draws nothing: the prompts drawn next are those a plain seeded reset shows.
    twin = make_vec(kind, tiny_lm_dir)
    envs.reset(seed=7, options={"prompt": texts})
    _, plain = twin.reset(seed=7)
    actions = np.full((3, T), GREAT) if kind == "bandit" else np.full(3, EOS)
    assert envs.step(actions)[-1]["prompt"].tolist() == plain["prompt"].tolist()


def test_token_env_with_one_new_token_passes_gymnasium_check_env(tiny_lm_dir: Path) -> None:
    from gymnasium.utils.env_checker import check_env

    for kwargs in ({}, {"reference_cache": False}):
        env = make_env("token", tiny_lm_dir, max_new_tokens=1, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env, skip_render_check=True)
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step(GREAT)
        assert terminated and not truncated and info["length_limited"]
    assert isinstance(gym.make("LMToken-v0", max_new_tokens=1).unwrapped, LMTokenEnv)


def test_messages_name_no_internal_error_text(tiny_lm_dir: Path) -> None:
    """Errors raised above come from lmgym, not from torch, NumPy or tokenizers internals."""
    env = make_env("token", tiny_lm_dir)
    env.reset(seed=0)
    for bad in ([[1], [2, 3]], {"a": 1}, b"12", 3.0 + 1j):
        with pytest.raises(CLEAR_ERRORS) as caught:
            env.step(bad)
        assert re.match(r"action(=| has)", str(caught.value)), str(caught.value)


def test_reliability_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/reliability.md") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("options[\"prompt\"]='bad text \\ud814' holds '\\ud814'")
    assert out[1] == "True True"  # the episode from before the failed reset went on
