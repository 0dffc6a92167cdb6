"""Exceptions raised by lmgym.

Bad user input raises the built-in :class:`ValueError` / :class:`TypeError` (as Gymnasium and
SB3 do); the classes here mark failures that are lmgym's own concern, so a caller can catch them
without swallowing unrelated errors.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every lmgym-specific exception."""


class ModelLoadError(Error, ValueError):
    """A model or tokenizer could not be loaded from the location the user gave."""


class RewardFunctionError(Error, ValueError):
    """A reward function raised, or returned something that is not one finite float per text."""


class ResetNeeded(Error, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""
