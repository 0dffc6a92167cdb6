"""Checking ``reset``'s arguments, and undoing a reset that fails: shared by every LM env.

A reset that raises (a bad seed or option, a prompts callable that fails) must leave the env as
it was, single or vector: arguments are checked before anything changes, and the generators a
reset re-seeds or draws from are put back if it raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np

from lmgym.envs.lm_env_parts import require_int
from lmgym.envs.prompts import PromptSource
from lmgym.error import short_repr

__all__ = [
    "RESET_OPTIONS",
    "check_reset_options",
    "check_seed",
    "forced_prompt",
    "generators_restored_on_error",
    "rng_restored_on_error",
]

RESET_OPTIONS = ("prompt",)
"""The keys ``reset(options=...)`` of an LM env understands."""


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """Return ``seed`` as an int >= 0 (NumPy integers too) or ``None``; raise naming it.

    Example:
        >>> check_seed(np.int64(3))
        3
    """
    if seed is None:
        return None
    seed = require_int(name, seed, f"an int >= 0 or None, e.g. {name}=0")
    if seed < 0:
        raise ValueError(f"{name}={seed!r} is negative; expected an int >= 0 or None.")
    return seed


def check_reset_options(options: Any) -> Mapping[str, Any]:
    """Return ``reset``'s ``options`` as a mapping ({} for ``None``); raise on any other value.

    Example:
        >>> check_reset_options(None)
        {}
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"options={short_repr(options)} (type {type(options).__name__}) is not a dict; "
            "expected None or a dict such as options={'prompt': 'the food was'}."
        )
    unknown = [key for key in options if key not in RESET_OPTIONS]
    if unknown:
        raise ValueError(
            f"options has the unknown key {short_repr(unknown[0])}; expected only "
            f"{list(RESET_OPTIONS)}, e.g. options={{'prompt': 'the food was'}}."
        )
    return options


def forced_prompt(options: Any, source: PromptSource) -> tuple[str, np.ndarray] | None:
    """The prompt ``reset(options={"prompt": text})`` forces (text and ids), or ``None``.

    Validated and encoded before the env changes anything, so a bad one leaves it as it was.
    """
    checked = check_reset_options(options)
    if "prompt" not in checked:
        return None
    return source.prepare(checked["prompt"], where='options["prompt"]')


@contextmanager
def rng_restored_on_error(env: gym.Env) -> Iterator[None]:
    """Put ``env``'s ``np_random`` back as it was if the block raises.

    ``reset`` seeds ``np_random`` first (``super().reset(seed=seed)``) and then draws the prompt
    with it; a prompts callable that raises must not leave the generator reseeded or advanced.
    The generator's state is saved, not the generator copied (a copy costs 40× more).
    """
    rng, rng_seed = env._np_random, env._np_random_seed
    state = {} if rng is None else rng.bit_generator.state
    try:
        yield
    except BaseException:
        env._np_random, env._np_random_seed = rng, rng_seed
        if rng is not None:
            rng.bit_generator.state = state
        raise


@contextmanager
def generators_restored_on_error(generators: list[np.random.Generator]) -> Iterator[None]:
    """Put each generator's state back as it was if the block raises (a vector env's RNGs).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> try:
        ...     with generators_restored_on_error([rng]):
        ...         _ = rng.random()
        ...         raise KeyError("a prompts callable failed")
        ... except KeyError:
        ...     pass
        >>> rng.random() == np.random.default_rng(0).random()
        True
    """
    states = [rng.bit_generator.state for rng in generators]
    try:
        yield
    except BaseException:
        for rng, state in zip(generators, states, strict=True):
            rng.bit_generator.state = state
        raise
