"""A weighted sum of rewards, keeping each part so an env can report it in ``info``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lmgym.rewards.base import PreparedReward, RewardLike, as_reward_fn, call_reward_fn

__all__ = ["WeightedSum"]


class WeightedSum:
    """Reward = Σ_i w_i · r_i(prompt, completion), over any rewards ``r_i``.

    Each part is converted with :func:`~lmgym.rewards.as_reward_fn` (so single-text functions,
    batch functions and reward objects mix freely) and called through
    :func:`~lmgym.rewards.call_reward_fn`, so a bad part is reported by its own name. Token ids
    reach the parts that accept them. After every call, :attr:`last_parts` maps each part's name
    to its *unweighted* scores (a new dict of new arrays each call): an env can copy them into
    ``info``. Parts are named after their function or class; repeated names get ``_2``, ``_3``,
    ...; rename a part with ``as_reward_fn(fn, name="...")``.

    Args:
        rewards: ``{reward: weight}`` or a list of ``(reward, weight)`` pairs. Weights are finite
            numbers; negative weights turn a part into a penalty.

    Raises:
        ValueError: No parts, or a weight that is not a finite number.
        TypeError: A part that :func:`~lmgym.rewards.as_reward_fn` cannot use.

    Example:
        >>> from lmgym.rewards import LexiconSentimentReward, LengthReward
        >>> reward = WeightedSum([(LexiconSentimentReward(), 1.0), (LengthReward(target=2), 0.5)])
        >>> reward(["the food was"], ["great ."]).tolist()
        [0.5]
        >>> {name: scores.tolist() for name, scores in reward.last_parts.items()}
        {'LexiconSentimentReward': [0.5], 'LengthReward': [0.0]}
    """

    def __init__(
        self, rewards: Mapping[RewardLike, float] | Iterable[tuple[RewardLike, float]]
    ) -> None:
        pairs = list(rewards.items() if isinstance(rewards, Mapping) else rewards)
        if not pairs:
            raise ValueError(
                "rewards is empty; expected {reward_fn: weight, ...} or [(reward_fn, weight), "
                "...] with at least one part."
            )
        self.parts: list[tuple[PreparedReward, float]] = []
        seen: dict[str, int] = {}
        for fn, weight in pairs:
            prepared = as_reward_fn(fn)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, numbers.Real)
                or not math.isfinite(weight)
            ):
                raise ValueError(
                    f"weight={weight!r} for reward {prepared.name!r}; expected a finite number."
                )
            seen[prepared.name] = seen.get(prepared.name, 0) + 1
            if seen[prepared.name] > 1:
                prepared = as_reward_fn(prepared, name=f"{prepared.name}_{seen[prepared.name]}")
            self.parts.append((prepared, float(weight)))
        self.last_parts: dict[str, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        """The parts' names, in order: the keys of :attr:`last_parts`."""
        return [prepared.name for prepared, _ in self.parts]

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Score the batch with every part and return the weighted sum (B,)."""
        parts = {
            prepared.name: call_reward_fn(
                prepared,
                prompts,
                completions,
                prompt_ids=prompt_ids,
                completion_ids=completion_ids,
            )
            for prepared, _ in self.parts
        }
        total = np.zeros(len(prompts), dtype=np.float64)
        for (_, weight), scores in zip(self.parts, parts.values(), strict=True):
            total += weight * scores
        self.last_parts = parts
        return total

    def __repr__(self) -> str:
        inner = ", ".join(f"({prepared.name}, {weight})" for prepared, weight in self.parts)
        return f"WeightedSum([{inner}])"
