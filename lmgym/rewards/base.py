"""The reward-function protocol: what any reward must look like, and how lmgym calls it.

A reward function maps a batch of ``(prompt, completion)`` texts to one float each. Users hand
lmgym one of two forms, and :func:`as_reward_fn` turns either into the batch form once, when the
env is built:

* **batch form** (:class:`RewardFunction`): ``fn(prompts, completions, **kwargs)`` returns one
  score per pair, as a list, tuple, NumPy array or torch tensor. This is the form of every
  built-in reward and of TRL's reward functions.
* **single-text form**: ``fn(text) -> float``, a function of exactly one required positional
  parameter. lmgym calls it once per pair *on the completion text only* (the prompt is what the
  agent was given, not what it did); write the batch form to see the prompt too.

Token ids. A batch-form function that declares ``prompt_ids`` and/or ``completion_ids`` (as
named parameters) or takes ``**kwargs`` also receives them as keyword arguments: lists of lists
of ints, one per pair, without padding and without the tokens after the first EOS. Functions
that declare neither never see them, so a plain ``def fn(prompts, completions)`` just works.
The signature is inspected once, in :func:`as_reward_fn`, never per call.

:func:`call_reward_fn` is the one place where rewards are called: it checks that the result is
one finite number per pair and turns every failure into a :class:`~lmgym.error.RewardFunctionError`
that names the function, so a bad reward fails loudly at the first step instead of training a
policy on NaNs.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from lmgym.error import RewardFunctionError, short_repr

__all__ = [
    "TOKEN_ID_KWARGS",
    "PreparedReward",
    "RewardFunction",
    "RewardLike",
    "RewardOutput",
    "as_reward_fn",
    "call_reward_fn",
]

RewardOutput = Sequence[float] | np.ndarray | torch.Tensor
"""What a batch-form reward function may return: one number per pair, 1-D or shaped (B, 1)."""

TOKEN_ID_KWARGS: tuple[str, ...] = ("prompt_ids", "completion_ids")
"""Keyword arguments lmgym passes to reward functions that declare them (or take ``**kwargs``)."""


class RewardFunction(Protocol):
    """A reward function in batch form: one float per ``(prompt, completion)`` pair.

    ``kwargs`` may carry ``prompt_ids`` and ``completion_ids`` (``list[list[int]]``, unpadded,
    nothing after the first EOS), but only to functions that declare those names or take
    ``**kwargs``; see the module docstring.

    Example:
        >>> def exclaims(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        ...     return [float(c.endswith("!")) for c in completions]
        >>> call_reward_fn(as_reward_fn(exclaims), ["the food was"], [" great!"])
        array([1.])
    """

    def __call__(
        self, prompts: list[str], completions: list[str], **kwargs: Any
    ) -> RewardOutput:  # pragma: no cover - protocol
        """Score each ``(prompts[i], completions[i])`` pair."""
        ...


RewardLike = RewardFunction | Callable[..., Any]
"""Anything :func:`as_reward_fn` accepts: the batch form, or a single-text ``fn(text) -> float``."""


@dataclass(frozen=True, eq=False)
class PreparedReward:
    """A reward function in batch form, with a readable name and its token-id wiring decided.

    Built by :func:`as_reward_fn`; calling it forwards to the user's function (batching a
    single-text one) and returns the raw output. Use :func:`call_reward_fn` to call *and*
    validate. Picklable whenever the wrapped function is (vector envs and Ray pickle it).

    Attributes:
        fn: The user's callable, unchanged.
        name: Used in error messages and as the key of reward parts in ``info``.
        single_text: ``fn`` scores one text; it is called once per completion.
        token_id_kwargs: Which of ``prompt_ids`` / ``completion_ids`` ``fn`` receives.
        required_token_id_kwargs: Those of them ``fn`` cannot run without.

    Example:
        >>> reward = as_reward_fn(len)
        >>> reward.name, reward.single_text
        ('len', True)
        >>> reward(["a prompt"], ["four"])
        [4]
    """

    fn: Callable[..., Any]
    name: str
    single_text: bool
    token_id_kwargs: frozenset[str] = frozenset()
    required_token_id_kwargs: frozenset[str] = frozenset()

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> Any:
        """Call the wrapped function on a batch, dropping keyword arguments it does not take."""
        if self.single_text:
            return [self.fn(completion) for completion in completions]
        passed = {key: value for key, value in kwargs.items() if key in self.token_id_kwargs}
        return self.fn(prompts, completions, **passed)


def _callable_name(obj: Callable[..., Any]) -> str:
    if isinstance(obj, functools.partial):
        return _callable_name(obj.func)
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return obj.__name__
    return type(obj).__name__


def as_reward_fn(obj: RewardLike | PreparedReward, *, name: str | None = None) -> PreparedReward:
    """Turn a user's reward into a batch-form :class:`PreparedReward`, deciding how to call it.

    The signature of ``obj`` decides the form:

    * one required positional parameter: **single-text form**, called as ``obj(completion)``
      for each pair (the prompt is not passed);
    * two required positional parameters (or ``*args``): **batch form**, called as
      ``obj(prompts, completions)``, plus ``prompt_ids=`` / ``completion_ids=`` when ``obj``
      names those parameters or takes ``**kwargs``.

    Args:
        obj: A function or callable object in either form, or an already prepared reward
            (returned as is unless ``name`` renames it).
        name: Name for error messages and ``info``; defaults to the function's ``__name__`` or
            the object's class name.

    Returns:
        A :class:`PreparedReward`.

    Raises:
        TypeError: ``obj`` is not callable, is a model (wrap it in
            :class:`~lmgym.rewards.SequenceClassifierReward`), or has a signature lmgym cannot
            call (e.g. three required positional parameters, or a required keyword-only one).

    Example:
        >>> as_reward_fn(lambda text: len(text.split())).single_text
        True
        >>> def batch(prompts, completions, completion_ids):
        ...     return [len(ids) for ids in completion_ids]
        >>> sorted(as_reward_fn(batch).token_id_kwargs)
        ['completion_ids']
    """
    if isinstance(obj, PreparedReward):
        if name is None or name == obj.name:
            return obj
        return PreparedReward(
            obj.fn, name, obj.single_text, obj.token_id_kwargs, obj.required_token_id_kwargs
        )
    if isinstance(obj, (str, bytes, os.PathLike, torch.nn.Module)):
        raise TypeError(
            f"reward_fn={short_repr(obj)} (type {type(obj).__name__}) is a model or a path, not a "
            "reward function; expected a callable fn(prompts, completions) or fn(text). Wrap a "
            "Hugging Face sequence classifier with "
            "lmgym.rewards.SequenceClassifierReward(model_or_path, tokenizer, label=...)."
        )
    if not callable(obj):
        raise TypeError(
            f"reward_fn={short_repr(obj)} (type {type(obj).__name__}) is not callable; expected a "
            "function fn(prompts, completions) -> one float per pair, or fn(text) -> float."
        )
    label = name if name is not None else _callable_name(obj)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"reward function {label!r}: its signature cannot be inspected ({err}); expected a "
            "Python callable. Wrap it: def reward(prompts, completions): return ..."
        ) from err

    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in TOKEN_ID_KWARGS
    ]
    n_required = sum(p.default is p.empty for p in positional)
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    has_var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    unsupplied = [
        p.name
        for p in params
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in TOKEN_ID_KWARGS
    ]
    expected = (
        "expected fn(prompts, completions, **kwargs) -> one float per pair, or fn(text) -> float"
    )
    if unsupplied:
        raise TypeError(
            f"reward function {label!r}{signature} has required keyword-only parameter(s) "
            f"{unsupplied} that lmgym cannot supply; {expected}. Give them defaults or bind "
            "them with functools.partial."
        )
    if n_required == 1:
        return PreparedReward(obj, label, single_text=True)
    if n_required > 2 or (n_required == 0 and not has_var_positional and len(positional) < 2):
        raise TypeError(
            f"reward function {label!r}{signature} has {n_required} required positional "
            f"parameter(s); {expected}."
        )
    if has_var_keyword:
        accepted = frozenset(TOKEN_ID_KWARGS)
    else:
        accepted = frozenset(p.name for p in params if p.name in TOKEN_ID_KWARGS)
    required = frozenset(
        p.name for p in params if p.name in TOKEN_ID_KWARGS and p.default is p.empty
    )
    return PreparedReward(obj, label, False, accepted, required)


def _describe(value: Any) -> str:
    return f"{short_repr(value, 60)} (type {type(value).__name__})"


def _as_real(item: Any) -> float | None:
    """``item`` as a float if it is one real number (1-element tensors/arrays count), else None."""
    if isinstance(item, torch.Tensor):
        return float(item.item()) if item.numel() == 1 and not item.is_complex() else None
    if isinstance(item, np.ndarray):
        return float(item.reshape(())) if item.size == 1 and item.dtype.kind in "biuf" else None
    # bool is an int, and NumPy registers its integer and floating types as numbers.Real.
    if isinstance(item, (numbers.Real, np.bool_)):
        return float(item)
    return None


SCALAR_FROM_BATCH_FORM_HINT = (
    " It was called in the batch form because it takes two positional parameters. A reward "
    "function has one of two forms: the single-text form `def reward(completion: str) -> "
    "float`, called once per completion, or the batch form `def reward(prompts: list[str], "
    "completions: list[str]) -> list[float]`. To score one (prompt, completion) pair at a "
    "time, write: def reward(prompts, completions): return [score(p, c) for p, c in "
    "zip(prompts, completions)]."
)
"""Appended when a batch-form function returns one number: it was most likely written as a
per-pair ``f(prompt, completion) -> float``, which lmgym does not take."""


def _to_scores(output: Any, name: str, batch_size: int, prompts: Sequence[str]) -> np.ndarray:
    """Convert a reward function's output to a fresh float64 array (B,), or raise."""

    def check_shape(shape: tuple[int, ...]) -> None:
        if shape == (batch_size,) or shape == (batch_size, 1):
            return
        raise RewardFunctionError(
            f"reward function {name!r} returned {shape[0] if shape else 'a scalar, not'} "
            f"score(s) with shape {shape} for a batch of {batch_size} (prompt, completion) "
            f"pairs; expected shape ({batch_size},) or ({batch_size}, 1): one float per pair, "
            "in order." + ("" if shape else SCALAR_FROM_BATCH_FORM_HINT)
        )

    def bad_value(index: int, value: Any, problem: str) -> RewardFunctionError:
        return RewardFunctionError(
            f"reward function {name!r} returned {problem} at prompt index {index}: "
            f"{_describe(value)} for prompt {short_repr(prompts[index], 60)}; expected one "
            "finite float per (prompt, completion) pair. Fix the function so that every score "
            "is a finite number."
        )

    if isinstance(output, torch.Tensor) and not output.is_complex():
        check_shape(tuple(output.shape))
        array = output.detach().to("cpu", torch.float64).numpy().reshape(batch_size)
    elif isinstance(output, np.ndarray) and output.dtype.kind in "biuf":
        check_shape(output.shape)
        array = output.astype(np.float64).reshape(batch_size)
    elif isinstance(output, (list, tuple, np.ndarray)):
        # Lists, tuples and object arrays: check element by element to name the bad one.
        check_shape(output.shape if isinstance(output, np.ndarray) else (len(output),))
        items = list(output.reshape(-1)) if isinstance(output, np.ndarray) else list(output)
        values = []
        for index, item in enumerate(items):
            value = _as_real(item)
            if value is None:
                raise bad_value(index, item, "a non-numeric value")
            values.append(value)
        array = np.asarray(values, dtype=np.float64)
    else:
        raise RewardFunctionError(
            f"reward function {name!r} returned {_describe(output)} for a batch of {batch_size} "
            "(prompt, completion) pairs; expected a list, tuple, NumPy array or real-valued "
            "torch tensor of one float per pair."
            + (SCALAR_FROM_BATCH_FORM_HINT if _as_real(output) is not None else "")
        )

    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        index = int(bad[0])
        raise bad_value(index, float(array[index]), "a non-finite value")
    # A copy: the caller may keep the scores while the function reuses its buffer.
    return np.array(array, dtype=np.float64, copy=True)


def call_reward_fn(
    fn: RewardLike | PreparedReward,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Call a reward function on a batch and check its result: one finite float per pair.

    Pass ``fn`` through :func:`as_reward_fn` once and reuse the result; a raw callable is
    accepted too, but is then inspected on every call. An empty batch returns an empty array
    without calling ``fn``.

    Args:
        fn: A prepared reward, or anything :func:`as_reward_fn` accepts.
        prompts: The prompt texts (B).
        completions: The completion texts (B), decoded without padding or post-EOS tokens.
        prompt_ids: Prompt token ids, one unpadded list per pair; passed only to functions
            that accept them.
        completion_ids: Completion token ids, one list per pair, up to and including the first
            EOS; passed only to functions that accept them.

    Returns:
        A new float64 array of shape (B,).

    Raises:
        ValueError: The inputs disagree in length (the caller's bug, not the reward's).
        RewardFunctionError: ``fn`` raised (chained from the original exception), needs token
            ids that were not given, or returned the wrong number of scores, a non-finite or
            a non-numeric value (the message names the prompt index and the value).

    Example:
        >>> call_reward_fn(lambda text: len(text), ["q1", "q2"], ["ab", "abc"])
        array([2., 3.])
        >>> call_reward_fn(lambda text: float("nan"), ["q"], ["a"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lmgym.error.RewardFunctionError: reward function '<lambda>' returned a non-finite value at prompt index 0: ...
    """  # noqa: E501 - a doctest traceback line cannot be wrapped
    prepared = as_reward_fn(fn)
    batch_size = len(prompts)
    given: dict[str, Sequence[Sequence[int]] | None] = {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
    }
    if len(completions) != batch_size:
        raise ValueError(
            f"got {batch_size} prompts but {len(completions)} completions; expected one "
            "completion per prompt."
        )
    for key, ids in given.items():
        if ids is not None and len(ids) != batch_size:
            raise ValueError(
                f"{key} has {len(ids)} rows for a batch of {batch_size} prompts; expected one "
                "list of token ids per prompt."
            )
    missing = sorted(key for key in prepared.required_token_id_kwargs if given[key] is None)
    if missing:
        raise RewardFunctionError(
            f"reward function {prepared.name!r} requires {missing} but the caller passed none; "
            f"expected them as keyword arguments of call_reward_fn. Give the parameter(s) a "
            "default of None, or pass the token ids."
        )
    if batch_size == 0:
        return np.zeros(0, dtype=np.float64)

    kwargs = {
        key: [list(row) for row in ids]
        for key, ids in given.items()
        if ids is not None and key in prepared.token_id_kwargs
    }
    try:
        output = prepared(list(prompts), list(completions), **kwargs)
    except Exception as err:
        raise RewardFunctionError(
            f"reward function {prepared.name!r} raised {type(err).__name__}: {err} (on a batch "
            f"of {batch_size} (prompt, completion) pairs; first prompt "
            f"{short_repr(prompts[0], 60)}). Fix the function, or run it on these inputs to "
            "reproduce."
        ) from err
    return _to_scores(output, prepared.name, batch_size, prompts)
