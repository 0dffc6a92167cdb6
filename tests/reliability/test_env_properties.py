"""Property tests: any argument, prompt text or action gives a valid result or a clear error.

For all three envs, hypothesis draws constructor arguments, prompts (arbitrary Unicode, lone
surrogates included) and actions (ints of every NumPy width, 0-d and wrong-shaped arrays, floats,
strings, None, ragged lists...). Every call must either succeed with a result inside the env's
spaces, or raise a ``ValueError`` / ``TypeError`` / ``lmgym.error.Error`` whose short message
names the argument. After an error the env must go on exactly like a twin that never saw the bad
call: same observations, rewards, prompts and adaptive β.

Example counts are bounded and the examples derandomized, so the suite is reproducible and takes
a few tens of seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmgym.agents import lm_logprobs, lm_token_logprobs
from lmgym.envs.catgrid import CatGridEnv
from tests.reliability.twins import (
    CLEAR_ERRORS,
    GREAT,
    PROMPTS,
    T,
    make_adaptive,
    make_env,
    rollout,
)

VOCAB = 27  # the tiny test tokenizer


def property_settings(max_examples: int) -> settings:
    """Bounded, reproducible hypothesis runs (one model load per env, shared by the examples)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def assert_clear(err: BaseException, names: Iterable[str]) -> None:
    """``err`` is one of lmgym's documented errors, short, and names what was wrong."""
    assert isinstance(err, CLEAR_ERRORS), f"{type(err).__name__}: {str(err)[:500]}"
    message = str(err)
    assert 20 < len(message) < 1200, message[:1500]
    assert any(name in message for name in names), message


# Any text: every Unicode category, lone surrogates included (st.text() leaves them out).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
prompt_words = st.lists(st.sampled_from("the food was great i thought staff soup".split()),
                        min_size=0, max_size=14).map(" ".join)  # fmt: skip
with_surrogate = st.tuples(prompt_words, st.integers(0xD800, 0xDFFF)).map(
    lambda p: f"{p[0]} {chr(p[1])}"
)
prompt_texts = st.one_of(any_text, prompt_words, with_surrogate)
LONG_PROMPT = " ".join(["the food was great"] * 3)  # 13 tokens > max_prompt_tokens=8

int_dtypes = st.sampled_from([np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64,
                              np.uint64])  # fmt: skip
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=10),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.lists(st.one_of(st.integers(-2, 30), st.lists(st.integers(0, 5), max_size=2)), max_size=5),
)


def token_actions(vocab: int) -> st.SearchStrategy[Any]:
    """Single token ids in every form, valid or not, plus junk."""
    ints = st.integers(-3, vocab + 3)
    return st.one_of(
        ints,
        st.integers(-(2**70), 2**70),
        st.tuples(ints, int_dtypes).map(lambda p: np.array(p[0] % 128).astype(p[1])[()]),
        st.tuples(ints, int_dtypes).map(lambda p: np.array(p[0]).astype(p[1])),
        st.lists(ints, min_size=1, max_size=3).map(np.array),
        junk,
    )


def completion_actions(vocab: int, length: int) -> st.SearchStrategy[Any]:
    """Whole completions (``MultiDiscrete``) in every form, valid or not, plus junk."""
    ids = st.integers(-2, vocab + 2)
    return st.one_of(
        st.tuples(
            st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length), int_dtypes
        ).map(lambda p: np.array(p[0]).astype(p[1])),  # fmt: skip
        st.lists(ids, min_size=length, max_size=length),
        st.lists(ids, min_size=0, max_size=length + 2).map(np.array),
        st.lists(st.floats(0, vocab), min_size=length, max_size=length).map(np.array),
        st.integers(0, vocab - 1).map(lambda i: np.full((length, 1), i)),
        junk,
    )


# ---------------------------------------------------------------- construction


lm_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "kl_coef": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 5),
                             st.just(np.float32(0.1)), st.just(1e308), st.text(max_size=3)),
        "kl_estimator": st.one_of(st.sampled_from(["k1", "k2", "k3", "full", "k4", ""]),
                                  st.just(["k1"]), st.none()),
        "kl_target": st.one_of(st.none(), st.floats(-1, 20), st.just(float("nan")), st.just("6")),
        "kl_horizon": st.one_of(st.integers(-2, 300), st.just(np.int64(50)), st.floats(0, 10),
                                st.just("abc")),
        "kl_batch_size": st.one_of(st.none(), st.integers(-1, 2000), st.floats(0, 4)),
        "max_prompt_tokens": st.one_of(st.integers(-1, 70), st.just(10**9), st.just(8.0)),
        "max_new_tokens": st.one_of(st.integers(-1, 70), st.just(np.int32(3))),
        "truncate_prompts": st.one_of(st.booleans(), st.just("no"), st.just(1), st.none()),
        "prompts": st.one_of(st.lists(prompt_texts, min_size=0, max_size=3), st.just("the food"),
                             st.just([1, 2])),
        "render_mode": st.sampled_from([None, "ansi", "rgb_array", 3]),
    },
)  # fmt: skip


@pytest.mark.parametrize("kind", ["bandit", "token"])
@property_settings(max_examples=40)
@given(kwargs=lm_kwargs)
def test_lm_env_construction_is_valid_or_a_clear_error(
    tiny_lm_dir: Path, kind: str, kwargs: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # truncate_prompts shrinking the block
        try:
            env = make_env(kind, tiny_lm_dir, **kwargs)
        except Exception as err:  # noqa: BLE001  (what it is is the property under test)
            assert_clear(err, [*kwargs, "prompts", "prompt"])
            return
    if kwargs.get("kl_target") is not None:  # an adaptive β needs π_θ attached
        attach = lm_logprobs if kind == "bandit" else lm_token_logprobs
        env.attach_policy(attach(env.models.model, env.models))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.max_prompt_tokens + env.max_new_tokens <= 64  # fits the tiny model's positions
    action = np.full(env.max_new_tokens, GREAT) if kind == "bandit" else GREAT
    _, reward, terminated, truncated, info = env.step(action)
    assert np.isfinite(reward) and not truncated
    assert reward == pytest.approx(info["reward_model"] - info["kl_coef"] * info["kl"], abs=1e-9)


@property_settings(max_examples=30)
@given(
    layout=st.one_of(
        st.lists(st.text("C.BTM", min_size=1, max_size=4), min_size=1, max_size=3),
        st.just(["C..M"]),
        junk,
    ),
    slip=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.just(0.2), junk),
    render_mode=st.sampled_from([None, "ansi", "rgb_array", "human", 3]),
)
def test_catgrid_construction_is_valid_or_a_clear_error(layout, slip, render_mode) -> None:
    try:
        env = CatGridEnv(layout=layout, slip=slip, render_mode=render_mode)
    except Exception as err:  # noqa: BLE001
        assert_clear(err, ["layout", "slip", "render_mode"])
        return
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


# ---------------------------------------------------------------- prompts


@pytest.fixture(scope="module")
def lm_pairs(tiny_lm_dir: Path) -> dict[str, tuple[Any, Any]]:
    """Per LM env, an env and its twin, with an adaptive β that moves every episode."""
    return {kind: (make_adaptive(kind, tiny_lm_dir), make_adaptive(kind, tiny_lm_dir))
            for kind in ("bandit", "token")}  # fmt: skip


@pytest.mark.parametrize("kind", ["bandit", "token"])
@property_settings(max_examples=40)
@given(text=prompt_texts, seed=st.integers(0, 2**32), reseed=st.booleans())
@example(text="the soup \ud814", seed=5, reseed=True)
@example(text=LONG_PROMPT, seed=5, reseed=True)
def test_any_prompt_text_resets_or_fails_clearly_without_a_trace(
    lm_pairs, kind: str, text: str, seed: int, reseed: bool
) -> None:
    env, twin = lm_pairs[kind]
    for e in (env, twin):
        e.reset(seed=seed)
        rollout(e, steps=2)
    try:
        obs, info = env.reset(seed=seed + 1 if reseed else None, options={"prompt": text})
    except Exception as err:  # noqa: BLE001
        assert_clear(err, ['options["prompt"]'])
    else:
        assert env.observation_space.contains(obs) and info["prompt"] == text
        twin.reset(seed=seed + 1 if reseed else None, options={"prompt": text})
    assert rollout(env, steps=3) == rollout(twin, steps=3)


@pytest.mark.parametrize("kind", ["bandit", "token"])
@property_settings(max_examples=25)
@given(texts=st.lists(prompt_texts, min_size=1, max_size=3), seed=st.integers(0, 100))
@example(texts=["the soup \ud814"], seed=0)
def test_a_prompts_callable_with_any_text_fails_clearly_without_a_trace(
    tiny_lm_dir: Path, kind: str, texts: list[str], seed: int
) -> None:
    pool = list(PROMPTS)

    def draw(rng: np.random.Generator) -> str:
        return pool[int(rng.integers(len(pool)))]

    env = make_env(kind, tiny_lm_dir, prompts=draw)
    twin = make_env(kind, tiny_lm_dir, prompts=draw)
    for e in (env, twin):
        e.reset(seed=seed)
    pool[:] = texts
    try:
        obs, info = env.reset()
    except Exception as err:  # noqa: BLE001
        assert_clear(err, ["the prompts callable's result"])
    else:
        assert env.observation_space.contains(obs) and info["prompt"] in texts
        twin.reset()
    pool[:] = PROMPTS
    assert rollout(env, steps=3) == rollout(twin, steps=3)


# ---------------------------------------------------------------- actions


@pytest.fixture(scope="module")
def catgrid_pair() -> tuple[CatGridEnv, CatGridEnv]:
    return CatGridEnv(slip=0.3), CatGridEnv(slip=0.3)


def step_both(env: Any, twin: Any, actions: list[Any], names: list[str]) -> None:
    """Step ``env`` with every action and ``twin`` with the accepted ones; results must agree."""
    for action in actions:
        try:
            got = env.step(action)
        except Exception as err:  # noqa: BLE001
            assert_clear(err, names)
            continue
        want = twin.step(action)
        assert env.observation_space.contains(got[0])
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:] == want[1:]
        assert np.isfinite(got[1])
        if got[2] or got[3]:
            assert env.reset()[1] == twin.reset()[1]


@property_settings(max_examples=40)
@given(actions=st.lists(token_actions(VOCAB), min_size=1, max_size=6), seed=st.integers(0, 99))
@example(actions=[[[1], [2, 3]], np.array(5, dtype=np.uint8), 2.0, 5], seed=0)
def test_token_env_actions_step_or_fail_clearly_without_a_trace(
    lm_pairs, actions: list[Any], seed: int
) -> None:
    env, twin = lm_pairs["token"]
    for e in (env, twin):
        e.reset(seed=seed)
    step_both(env, twin, actions, ["action", "call reset"])
    assert rollout(env, steps=3) == rollout(twin, steps=3)


@property_settings(max_examples=40)
@given(
    actions=st.lists(completion_actions(VOCAB, T), min_size=1, max_size=4),
    seed=st.integers(0, 99),
)
def test_bandit_env_actions_step_or_fail_clearly_without_a_trace(
    lm_pairs, actions: list[Any], seed: int
) -> None:
    env, twin = lm_pairs["bandit"]
    for e in (env, twin):
        e.reset(seed=seed)
    step_both(env, twin, actions, ["action"])
    assert rollout(env, steps=3) == rollout(twin, steps=3)


@property_settings(max_examples=60)
@given(actions=st.lists(token_actions(4), min_size=1, max_size=12), seed=st.integers(0, 99))
def test_catgrid_actions_step_or_fail_clearly_without_a_trace(
    catgrid_pair, actions: list[Any], seed: int
) -> None:
    env, twin = catgrid_pair
    for e in (env, twin):
        e.reset(seed=seed)
    step_both(env, twin, actions, ["action"])
    for move in (1, 2, 1, 2, 1, 1):  # the slips drawn next agree too
        assert env.step(move) == twin.step(move)


# ---------------------------------------------------------------- vector envs' resets


seeds = st.one_of(
    st.none(),
    st.integers(-2, 2**40),
    st.just(np.int64(3)),
    st.lists(st.one_of(st.none(), st.integers(-1, 50), st.floats(0, 3)), min_size=1, max_size=4),
    st.text(max_size=2),
)
vector_options = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"prompt": st.one_of(prompt_texts, st.lists(prompt_texts, max_size=4), st.integers())}
    ),  # fmt: skip
    st.dictionaries(
        st.sampled_from(["prompt", "reset_mask", "promt"]), st.just("the food"), max_size=2
    ),  # fmt: skip
    junk,
)


@pytest.fixture(scope="module")
def vector_pairs(tiny_lm_dir: Path) -> dict[str, tuple[Any, Any]]:
    return {kind: (make_adaptive(kind, tiny_lm_dir, vector=True),
                   make_adaptive(kind, tiny_lm_dir, vector=True))
            for kind in ("bandit", "token")}  # fmt: skip


@pytest.mark.parametrize("kind", ["bandit", "token"])
@property_settings(max_examples=30)
@given(seed=seeds, options=vector_options)
def test_vector_reset_arguments_reset_or_fail_clearly_without_a_trace(
    vector_pairs, kind: str, seed: Any, options: Any
) -> None:
    envs, twin = vector_pairs[kind]
    for e in (envs, twin):
        e.reset(seed=11)
        rollout(e, steps=2)
    try:
        obs, info = envs.reset(seed=seed, options=options)
    except Exception as err:  # noqa: BLE001
        assert_clear(err, ["seed", "options"])
    else:
        assert envs.observation_space.contains(obs)
        want, want_info = twin.reset(seed=seed, options=options)
        np.testing.assert_array_equal(obs, want)
        assert info["prompt"].tolist() == want_info["prompt"].tolist()
    assert rollout(envs, steps=3) == rollout(twin, steps=3)
