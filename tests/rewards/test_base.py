"""The reward-function protocol: conversion, token-id wiring, and validation of outputs."""

from __future__ import annotations

import functools
import inspect
import pathlib
import pickle

import numpy as np
import pytest
import torch

from lmgym.error import RewardFunctionError
from lmgym.rewards import PreparedReward, as_reward_fn, call_reward_fn

PROMPTS = ["the food was", "the staff were", "the room is"]
COMPLETIONS = [" great .", " rude", ""]
PROMPT_IDS = [[1, 2, 3], [1, 4, 5], [1, 6, 7]]
COMPLETION_IDS = [[10, 2], [11], [2]]


def n_words(text: str) -> float:
    return float(len(text.split()))


def batch_lengths(prompts: list[str], completions: list[str]) -> list[float]:
    return [float(len(c)) for c in completions]


def ids_lengths(prompts, completions, completion_ids):
    return [float(len(ids)) for ids in completion_ids]


def both_ids(prompts, completions, *, prompt_ids=None, completion_ids=None):
    assert prompt_ids is not None and completion_ids is not None
    return [float(len(p) + len(c)) for p, c in zip(prompt_ids, completion_ids, strict=True)]


def with_kwargs(prompts, completions, **kwargs):
    return [float(len(kwargs["completion_ids"][i])) for i in range(len(prompts))]


class CallableReward:
    def __call__(self, prompts, completions):
        return np.arange(len(prompts), dtype=np.float32)


def call(fn):
    return call_reward_fn(
        as_reward_fn(fn), PROMPTS, COMPLETIONS, prompt_ids=PROMPT_IDS, completion_ids=COMPLETION_IDS
    )


# --- forms and names -------------------------------------------------------------------------


def test_batch_function_used_as_is():
    prepared = as_reward_fn(batch_lengths)
    assert isinstance(prepared, PreparedReward)
    assert not prepared.single_text and prepared.name == "batch_lengths"
    assert prepared.token_id_kwargs == frozenset()
    np.testing.assert_array_equal(call(batch_lengths), [8.0, 5.0, 0.0])


def test_single_text_function_scores_each_completion():
    prepared = as_reward_fn(n_words)
    assert prepared.single_text and prepared.name == "n_words"
    scores = call(n_words)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    np.testing.assert_array_equal(scores, [2.0, 1.0, 0.0])


def test_single_text_with_optional_params_is_single_text():
    def scaled(text, scale=2.0):
        return scale * len(text)

    assert as_reward_fn(scaled).single_text
    np.testing.assert_array_equal(call(scaled), [16.0, 10.0, 0.0])


def test_callable_object_named_after_its_class():
    prepared = as_reward_fn(CallableReward())
    assert prepared.name == "CallableReward" and not prepared.single_text
    np.testing.assert_array_equal(call(CallableReward()), [0.0, 1.0, 2.0])


def test_names_of_lambda_partial_and_override():
    assert as_reward_fn(lambda text: 0.0).name == "<lambda>"
    assert as_reward_fn(functools.partial(batch_lengths)).name == "batch_lengths"
    assert as_reward_fn(n_words, name="words").name == "words"


def test_as_reward_fn_is_idempotent_and_can_rename():
    prepared = as_reward_fn(n_words)
    assert as_reward_fn(prepared) is prepared
    renamed = as_reward_fn(prepared, name="other")
    assert renamed.name == "other" and renamed.fn is n_words and renamed.single_text


def test_raw_callable_accepted_by_call_reward_fn():
    np.testing.assert_array_equal(call_reward_fn(n_words, ["a"], ["b c"]), [2.0])


def test_prepared_reward_pickles():
    prepared = as_reward_fn(ids_lengths)
    restored = pickle.loads(pickle.dumps(prepared))
    assert restored.name == "ids_lengths" and restored.token_id_kwargs == {"completion_ids"}


# --- token ids -------------------------------------------------------------------------------


def test_token_ids_passed_only_to_functions_that_declare_them():
    assert as_reward_fn(ids_lengths).token_id_kwargs == {"completion_ids"}
    assert as_reward_fn(both_ids).token_id_kwargs == {"prompt_ids", "completion_ids"}
    assert as_reward_fn(with_kwargs).token_id_kwargs == {"prompt_ids", "completion_ids"}
    np.testing.assert_array_equal(call(ids_lengths), [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(call(both_ids), [5.0, 4.0, 4.0])
    np.testing.assert_array_equal(call(with_kwargs), [2.0, 1.0, 1.0])


def test_token_ids_not_passed_to_plain_functions():
    seen = {}

    def strict(prompts, completions):  # would raise TypeError if given extra kwargs
        seen["called"] = True
        return [0.0] * len(prompts)

    call(strict)
    assert seen == {"called": True}


def test_signature_inspected_once_not_per_call(monkeypatch):
    prepared = as_reward_fn(ids_lengths)

    def boom(*args, **kwargs):
        raise AssertionError("signature inspected during a call")

    monkeypatch.setattr(inspect, "signature", boom)
    np.testing.assert_array_equal(
        call_reward_fn(prepared, PROMPTS, COMPLETIONS, completion_ids=COMPLETION_IDS),
        [2.0, 1.0, 1.0],
    )


def test_ids_passed_as_copies_of_lists():
    received = {}

    def capture(prompts, completions, completion_ids):
        received["ids"] = completion_ids
        return [0.0] * len(prompts)

    call_reward_fn(capture, ["a"], ["b"], completion_ids=[np.array([4, 5])])
    assert received["ids"] == [[4, 5]] and isinstance(received["ids"][0], list)


def test_required_token_ids_missing_is_a_clear_error():
    with pytest.raises(RewardFunctionError, match=r"'ids_lengths' requires \['completion_ids'\]"):
        call_reward_fn(ids_lengths, PROMPTS, COMPLETIONS)


def test_optional_token_ids_omitted_when_not_given():
    def optional(prompts, completions, completion_ids=None):
        return [0.0 if completion_ids is None else 1.0] * len(prompts)

    np.testing.assert_array_equal(call_reward_fn(optional, ["a"], ["b"]), [0.0])


# --- outputs accepted ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        [1, 2.5, True],
        (1.0, 2.5, 1.0),
        np.array([1.0, 2.5, 1.0], dtype=np.float32),
        np.array([[1.0], [2.5], [1.0]]),
        np.array([1, 2.5, 1], dtype=object),
        torch.tensor([1.0, 2.5, 1.0], requires_grad=True),
        torch.tensor([[1.0], [2.5], [1.0]], dtype=torch.bfloat16),
        [torch.tensor(1.0), np.float64(2.5), np.array([1.0])],
    ],
    ids=["list", "tuple", "f32-array", "column-array", "object-array", "grad-tensor",
         "bf16-column-tensor", "list-of-scalars"],
)  # fmt: skip
def test_accepted_outputs(output):
    scores = call_reward_fn(lambda p, c: output, PROMPTS, COMPLETIONS)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    np.testing.assert_array_equal(scores, [1.0, 2.5, 1.0])


def test_returns_a_copy_not_the_functions_buffer():
    buffer = np.zeros(3)
    scores = call_reward_fn(lambda p, c: buffer, PROMPTS, COMPLETIONS)
    buffer[0] = 7.0
    assert scores[0] == 0.0


def test_empty_batch_does_not_call_the_function():
    def never(prompts, completions):
        raise AssertionError("called on an empty batch")

    scores = call_reward_fn(never, [], [])
    assert scores.shape == (0,) and scores.dtype == np.float64


# --- errors ----------------------------------------------------------------------------------


def bad_reward(output):
    def reward(prompts, completions):
        return output

    return reward


def test_wrong_length_names_function_and_sizes():
    with pytest.raises(RewardFunctionError, match=r"'reward' returned 2 score\(s\).*batch of 3"):
        call_reward_fn(bad_reward([1.0, 2.0]), PROMPTS, COMPLETIONS)


def test_wrong_shape_2d():
    with pytest.raises(RewardFunctionError, match=r"shape \(3, 2\).*expected shape \(3,\)"):
        call_reward_fn(bad_reward(np.zeros((3, 2))), PROMPTS, COMPLETIONS)


def test_scalar_output_is_an_error():
    with pytest.raises(RewardFunctionError, match=r"returned 0.5 \(type float\).*expected a list"):
        call_reward_fn(bad_reward(0.5), PROMPTS, COMPLETIONS)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=str)
def test_non_finite_names_function_index_and_value(bad):
    output = [0.0, bad, 1.0]
    with pytest.raises(RewardFunctionError) as info:
        call_reward_fn(bad_reward(output), PROMPTS, COMPLETIONS)
    message = str(info.value)
    assert "'reward'" in message and "prompt index 1" in message and repr(bad) in message
    assert "'the staff were'" in message


def test_non_finite_in_tensor():
    with pytest.raises(RewardFunctionError, match="non-finite value at prompt index 2: nan"):
        call_reward_fn(bad_reward(torch.tensor([0.0, 1.0, float("nan")])), PROMPTS, COMPLETIONS)


@pytest.mark.parametrize(
    "bad, shown",
    [("high", "'high' (type str)"), (None, "None (type NoneType)"), ([1.0], "[1.0] (type list)")],
    ids=["str", "None", "list"],
)
def test_non_numeric_names_function_index_and_value(bad, shown):
    with pytest.raises(RewardFunctionError) as info:
        call_reward_fn(bad_reward([1.0, 2.0, bad]), PROMPTS, COMPLETIONS)
    message = str(info.value)
    assert "'reward'" in message and "non-numeric value at prompt index 2" in message
    assert shown in message


def test_string_output_is_an_error():
    with pytest.raises(RewardFunctionError, match=r"'reward' returned 'abc' \(type str\)"):
        call_reward_fn(bad_reward("abc"), PROMPTS, COMPLETIONS)


def test_complex_tensor_is_an_error():
    with pytest.raises(RewardFunctionError, match="real-valued torch tensor"):
        call_reward_fn(bad_reward(torch.zeros(3, dtype=torch.complex64)), PROMPTS, COMPLETIONS)


def test_raising_function_is_wrapped_with_context_and_chained():
    def explodes(prompts, completions):
        raise KeyError("missing")

    with pytest.raises(RewardFunctionError) as info:
        call_reward_fn(explodes, PROMPTS, COMPLETIONS)
    message = str(info.value)
    assert "'explodes' raised KeyError" in message and "batch of 3" in message
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value, ValueError)  # RewardFunctionError is a ValueError too


def test_raising_single_text_function_is_wrapped():
    with pytest.raises(RewardFunctionError, match="'<lambda>' raised ZeroDivisionError"):
        call_reward_fn(lambda text: 1 / 0, PROMPTS, COMPLETIONS)


def test_mismatched_inputs_are_the_callers_error():
    with pytest.raises(ValueError, match="3 prompts but 2 completions"):
        call_reward_fn(n_words, PROMPTS, COMPLETIONS[:2])
    with pytest.raises(ValueError, match="completion_ids has 1 rows for a batch of 3"):
        call_reward_fn(n_words, PROMPTS, COMPLETIONS, completion_ids=[[1]])


@pytest.mark.parametrize(
    "obj, match",
    [
        (42, "not callable"),
        ("path/to/model", "SequenceClassifierReward"),
        (pathlib.Path("model"), "is a model or a path"),
        (torch.nn.Linear(2, 1), "SequenceClassifierReward"),
        (lambda: 0.0, "0 required positional"),
        (lambda a, b, c: 0.0, "3 required positional"),
        (lambda text, *, scale: 0.0, r"required keyword-only parameter\(s\) \['scale'\]"),
    ],
    ids=["int", "path", "pathlib", "module", "no-args", "three-args", "kw-only"],
)
def test_unusable_objects_rejected_at_conversion(obj, match):
    with pytest.raises(TypeError, match=match):
        as_reward_fn(obj)


def test_varargs_is_batch_form():
    prepared = as_reward_fn(lambda *args, **kwargs: [0.0] * len(args[0]))
    assert not prepared.single_text and prepared.token_id_kwargs == {"prompt_ids", "completion_ids"}
    np.testing.assert_array_equal(call(prepared), [0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "per_pair",
    [lambda prompt, completion: 1.0, lambda prompt, completion: np.float32(1.0)],
    ids=["float", "numpy_scalar"],
)
def test_a_per_pair_function_is_told_the_two_forms(per_pair) -> None:
    with pytest.raises(RewardFunctionError) as caught:
        call_reward_fn(per_pair, ["the food was"], ["great ."])
    message = str(caught.value)
    assert "single-text form `def reward(completion: str) -> float`" in message
    assert "batch form `def reward(prompts: list[str], completions: list[str])" in message
    assert "for p, c in zip(prompts, completions)" in message


def test_a_list_of_the_wrong_length_gets_no_forms_hint() -> None:
    with pytest.raises(RewardFunctionError) as caught:
        call_reward_fn(lambda prompts, completions: [1.0, 2.0], ["a"], ["b"])
    assert "single-text form" not in str(caught.value)
