"""What an LM env's observations and actions are, and the checks every action goes through.

The observation of both LM envs is a right-padded row of token ids in an int64 ``Box``; the
bandit's action is a whole completion (``MultiDiscrete``), the token env's one token
(``Discrete``). The single and the vector envs build their spaces and check their actions with
the functions here, so both always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from lmgym.envs.lm_env_parts import LMModels
from lmgym.error import short_repr

__all__ = [
    "ActionMaskSpec",
    "TokenActionMask",
    "as_action_array",
    "check_action_mask",
    "check_token_action",
    "check_token_ids",
    "completion_spaces",
    "default_action_mask",
    "token_ids_space",
    "token_spaces",
]

ActionMaskSpec = np.ndarray | Callable[[np.ndarray], np.ndarray]
"""A boolean array of vocabulary size (``True`` = allowed), or ``f(observation (L,)) -> (V,)``
bool array computed from the current observation."""


def token_ids_space(length: int, vocab_size: int) -> spaces.Box:
    """Right-padded token ids as an int64 ``Box`` of shape ``(length,)``.

    SB3's ``MlpPolicy`` reads it directly. ``Discrete``/``MultiDiscrete`` would make SB3 one-hot
    encode every position (length × vocab inputs), and SB3 supports no ``Sequence``/``Text``
    space.

    Example:
        >>> token_ids_space(32, 239).shape
        (32,)
    """
    return spaces.Box(low=0, high=vocab_size - 1, shape=(length,), dtype=np.int64)


def completion_spaces(
    max_prompt_tokens: int, max_new_tokens: int, vocab_size: int
) -> tuple[spaces.Box, spaces.MultiDiscrete]:
    """``LMBandit-v0``'s observation (the prompt) and action (a whole completion) spaces.

    Example:
        >>> obs_space, action_space = completion_spaces(16, 8, 239)
        >>> obs_space.shape, action_space.shape
        ((16,), (8,))
    """
    actions = spaces.MultiDiscrete(np.full(max_new_tokens, vocab_size, dtype=np.int64))
    return token_ids_space(max_prompt_tokens, vocab_size), actions


def token_spaces(
    max_prompt_tokens: int, max_new_tokens: int, vocab_size: int
) -> tuple[spaces.Box, spaces.Discrete]:
    """``LMToken-v0``'s observation (prompt block + completion block) and action spaces.

    Example:
        >>> obs_space, action_space = token_spaces(16, 8, 239)
        >>> obs_space.shape, int(action_space.n)
        ((24,), 239)
    """
    length = max_prompt_tokens + max_new_tokens
    return token_ids_space(length, vocab_size), spaces.Discrete(vocab_size)


def as_action_array(actions: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``np.asarray(actions)``, with a clear ``TypeError`` for what NumPy cannot make an array of.

    Example:
        >>> as_action_array([[1], [2, 3]], "actions", (2, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: actions=[[1], [2, 3]] (type list) is not an array of token ids; ...
    """
    try:
        return np.asarray(actions)
    except (TypeError, ValueError):  # ragged nesting, or objects NumPy cannot convert
        raise TypeError(
            f"{name}={short_repr(actions)} (type {type(actions).__name__}) is not an array of "
            f"token ids; expected integer token ids (e.g. np.int64) of shape {shape}."
        ) from None


def check_token_ids(
    actions: Any, shape: tuple[int, ...], vocab_size: int, *, name: str, layout: str
) -> np.ndarray:
    """Validate an array of token-id actions at once; return a new int64 array of ``shape``.

    Serves a bandit's completion ``(T,)``, a bandit vector env's ``(N, T)`` and a token vector
    env's ``(N,)``. Raises ``TypeError`` for non-integer dtypes and ``ValueError`` for a wrong
    shape or ids outside ``[0, vocab_size)``, naming the offending value; ``layout`` says in
    words what the shape holds.

    Example:
        >>> check_token_ids([3, 4], (2,), 10, name="actions", layout="one token id per env")
        array([3, 4])
        >>> check_token_ids([3, 12], (2,), 10, name="actions", layout="")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: actions[1]=12 is not a token id; expected ids in [0, 10) ...
    """
    array = as_action_array(actions, name, shape)
    if array.dtype == object or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected integer token ids (e.g. np.int64) of "
            f"shape {shape}."
        )
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}; expected {shape}: {layout}.")
    bad = np.argwhere((array < 0) | (array >= vocab_size))
    if bad.size:
        where = ", ".join(str(int(i)) for i in bad[0])
        raise ValueError(
            f"{name}[{where}]={int(array[tuple(bad[0])])} is not a token id; expected ids in "
            f"[0, {vocab_size}) (the tokenizer's vocabulary)."
        )
    return array.astype(np.int64, copy=True)


def check_token_action(action: Any, vocab_size: int) -> int:
    """Return ``action`` as an int token id, or raise ``TypeError``/``ValueError`` naming it.

    A Python int, a NumPy integer scalar and a 0-d integer array are the same action: each
    becomes the plain ``int``, so the env's state cannot depend on which one was passed.

    Example:
        >>> check_token_action(np.int64(5), vocab_size=10), check_token_action(np.array(5), 10)
        (5, 5)
    """
    if isinstance(action, np.ndarray):
        if action.shape != ():
            raise ValueError(
                f"action has shape {action.shape}; expected a scalar token id (Discrete "
                "action), e.g. int(action) for a one-element array."
            )
        value = action[()]  # the 0-d array's NumPy scalar
    else:
        value = action
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"action={short_repr(action)} has type {type(action).__name__}"
            f"{f' (dtype {action.dtype})' if isinstance(action, np.ndarray) else ''}; "
            f"expected one integer token id in [0, {vocab_size}), e.g. a Python int or np.int64."
        )
    token = int(value)
    if not 0 <= token < vocab_size:
        raise ValueError(
            f"action={token} is not a token id; expected an id in [0, {vocab_size}) (the "
            "tokenizer's vocabulary)."
        )
    return token


def default_action_mask(models: LMModels) -> np.ndarray:
    """Every token except pad and BOS (each only where it differs from EOS), shape (V,).

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0").unwrapped
        >>> bool(default_action_mask(env.models)[env.models.pad_token_id])
        False
    """
    mask = np.ones(models.vocab_size, dtype=np.bool_)
    bos = models.tokenizer.bos_token_id
    for special in (models.pad_token_id, bos):
        if special is not None and special != models.eos_token_id and special < models.vocab_size:
            mask[special] = False
    return mask


def check_action_mask(mask: Any, vocab_size: int, *, where: str = "action_mask") -> np.ndarray:
    """Validate a vocabulary mask: a bool array of shape (V,) allowing at least one token.

    Example:
        >>> check_action_mask(np.array([False, True]), 2)
        array([False,  True])
        >>> check_action_mask(np.zeros(2, dtype=bool), 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: action_mask masks every token ...
    """
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{where} has dtype {array.dtype}; expected a boolean array of shape ({vocab_size},) "
            "with True for allowed tokens, e.g. np.isin(np.arange(vocab_size), allowed_ids)."
        )
    if array.shape != (vocab_size,):
        raise ValueError(
            f"{where} has shape {array.shape}; expected ({vocab_size},): one flag per token of "
            "the tokenizer's vocabulary."
        )
    if not array.any():
        raise ValueError(
            f"{where} masks every token (together with the pad/BOS tokens, which are always "
            "masked); expected at least one allowed token id. Allow some ids, e.g. the EOS id."
        )
    return array


class TokenActionMask:
    """The tokens ``LMToken-v0`` advises (``action_masks()``, for sb3-contrib's ``MaskablePPO``).

    The default (:func:`default_action_mask`) intersected with the ``action_mask`` argument: a
    fixed bool array, checked here, or ``f(observation) -> bool array``, checked on each call.

    Args:
        models: The env's models (vocabulary size and special tokens).
        action_mask: ``None``, a bool array of vocabulary size, or a function of the observation.

    Example:
        >>> import gymnasium as gym, lmgym
        >>> env = gym.make("LMToken-v0").unwrapped
        >>> masks = TokenActionMask(env.models, None)
        >>> masks.for_batch(np.zeros((2, 32), dtype=np.int64)).shape == (2, len(masks.base))
        True
    """

    def __init__(self, models: LMModels, action_mask: ActionMaskSpec | None) -> None:
        self.vocab_size = models.vocab_size
        self.base = default_action_mask(models)
        self.mask_fn: Callable[[np.ndarray], np.ndarray] | None = None
        if callable(action_mask):
            self.mask_fn = action_mask
        elif action_mask is not None:
            user = check_action_mask(action_mask, self.vocab_size)
            self.base = check_action_mask(user & self.base, self.vocab_size)

    def for_observation(self, observation: np.ndarray) -> np.ndarray:
        """The allowed next tokens (V,) in state ``observation`` (L,)."""
        if self.mask_fn is None:
            return self.base.copy()
        where = f"action_mask({short_repr(observation.tolist())})"
        user = check_action_mask(self.mask_fn(observation.copy()), self.vocab_size, where=where)
        return check_action_mask(user & self.base, self.vocab_size, where=where)

    def for_batch(self, observations: np.ndarray) -> np.ndarray:
        """The allowed next tokens of every row of ``observations`` (B, L): (B, V) bool."""
        if self.mask_fn is None:
            return np.repeat(self.base[None, :], len(observations), axis=0)
        return np.stack([self.for_observation(row) for row in observations])
