"""Exceptions raised by lmgym.

Bad user input raises the built-in :class:`ValueError` / :class:`TypeError` (as Gymnasium and
SB3 do); the classes here mark failures that are lmgym's own concern, so a caller can catch them
without swallowing unrelated errors.
"""

from __future__ import annotations

from collections.abc import Sized

import numpy as np

__all__ = [
    "MESSAGE_VALUE_CHARS",
    "Error",
    "ModelLoadError",
    "ResetNeeded",
    "RewardFunctionError",
    "short_repr",
]


class Error(Exception):
    """Base class of every lmgym-specific exception."""


class ModelLoadError(Error, ValueError):
    """A model or tokenizer could not be loaded from the location the user gave."""


class RewardFunctionError(Error, ValueError):
    """A reward function raised, or returned something that is not one finite float per text."""


class ResetNeeded(Error, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""


MESSAGE_VALUE_CHARS = 200
"""Longest ``repr`` of a user's value that an lmgym error message quotes (:func:`short_repr`)."""


def short_repr(value: object, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how large the value was.

    Error messages quote the value they refuse; a 1 MB prompt must not make a 1 MB message.

    Example:
        >>> short_repr("abc")
        "'abc'"
        >>> short_repr("x" * 1000, limit=12)
        "'xxxxxxxxxxx... (a str of 1000 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"a str of {len(value)} characters"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    elif isinstance(value, np.ndarray):
        size = f"an array of shape {value.shape}, dtype {value.dtype}"
    elif isinstance(value, Sized):
        size = f"a {type(value).__name__} of {len(value)} items"
    else:
        size = f"a {type(value).__name__} whose repr has {len(text)} characters"
    return f"{text[:limit]}... ({size})"
