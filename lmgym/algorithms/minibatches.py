"""How an update walks a rollout: mini-batches with their rows, and micro-batches within them.

SB3's ``RolloutBuffer.get`` yields shuffled mini-batches but not which rollout rows they hold;
a per-token update needs them, to look up per-token log-probs computed once per rollout (the
rollout buffer stores only each completion's summed log-prob). :func:`indexed_minibatches`
yields the same mini-batches as ``get`` (the same NumPy draw, so a seeded run takes SB3's
order) with their rows. :func:`micro_slices` splits a mini-batch of ``batch_size`` into
micro-batches of ``minibatch_size``, whose gradients are accumulated into one optimizer step:
the update is the mini-batch's, and the activations held at once are a micro-batch's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples

__all__ = [
    "check_minibatch_size",
    "flatten_rollout",
    "indexed_minibatches",
    "micro_slices",
    "take_rows",
]

# The buffer fields RolloutBuffer.get flattens to (n_steps * n_envs, ...) on first use.
_FLATTENED = ("observations", "actions", "values", "log_probs", "advantages", "returns")


def check_minibatch_size(owner: str, minibatch_size: object, batch_size: int) -> None:
    """Raise a ValueError unless ``minibatch_size`` is None or an int >= 1 dividing ``batch_size``.

    Example:
        >>> check_minibatch_size("LMPPO", 16, 64)
        >>> check_minibatch_size("LMPPO", 24, 64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: LMPPO: minibatch_size=24 does not divide batch_size=64; expected a ...
    """
    if minibatch_size is None:
        return
    divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
    example = max((d for d in divisors if d <= batch_size // 2), default=batch_size)
    if isinstance(minibatch_size, bool) or not isinstance(minibatch_size, int):
        raise TypeError(
            f"{owner}: minibatch_size={minibatch_size!r} is not an int; expected rows per "
            f"micro-batch dividing batch_size={batch_size} (e.g. minibatch_size={example}), "
            "or None."
        )
    if minibatch_size < 1 or batch_size % minibatch_size:
        raise ValueError(
            f"{owner}: minibatch_size={minibatch_size} does not divide batch_size={batch_size}; "
            f"expected a divisor of batch_size (e.g. minibatch_size={example}), or None for one "
            "forward per mini-batch."
        )


def flatten_rollout(buffer: RolloutBuffer) -> None:
    """Flatten the buffer to (n_steps × n_envs, ...) rows, as ``RolloutBuffer.get`` does first."""
    if not buffer.generator_ready:
        for name in _FLATTENED:
            buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
        buffer.generator_ready = True


def indexed_minibatches(
    buffer: RolloutBuffer, batch_size: int
) -> Iterator[tuple[np.ndarray, RolloutBufferSamples]]:
    """``buffer.get(batch_size)``'s mini-batches, each with its rows (indices into the rollout).

    The permutation is drawn from NumPy's global generator exactly as ``get`` draws it, so a
    seeded run visits the rollout in SB3's order (tests/algorithms/test_ppo.py holds LMPPO's
    sequence ratio to SB3's PPO weight for weight).
    """
    assert buffer.full, "a rollout is complete before an update"
    total = buffer.buffer_size * buffer.n_envs
    indices = np.random.permutation(total)
    flatten_rollout(buffer)
    for start in range(0, total, batch_size):
        rows = indices[start : start + batch_size]
        yield rows, buffer._get_samples(rows)


def micro_slices(rows: int, minibatch_size: int | None) -> list[slice]:
    """Consecutive slices of at most ``minibatch_size`` of ``rows`` (one slice for None).

    Example:
        >>> micro_slices(5, 2)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
        >>> micro_slices(5, None)
        [slice(0, 5, None)]
    """
    size = rows if minibatch_size is None else minibatch_size
    return [slice(start, min(start + size, rows)) for start in range(0, rows, max(size, 1))]


def take_rows(data: RolloutBufferSamples, rows: slice) -> RolloutBufferSamples:
    """The rows ``rows`` of every field of a mini-batch."""
    fields = (tensor[rows] for tensor in data)
    return RolloutBufferSamples(*fields)  # type: ignore[arg-type]
