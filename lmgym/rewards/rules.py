"""Rule-based rewards: completion length and format.

Rules are cheap, exact and transparent, which makes them good shaping terms next to a learned
reward (``WeightedSum({reward_model: 1.0, LengthReward(12): 0.5})``) and good test fixtures.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LengthReward", "ends_sentence"]

SENTENCE_ENDINGS = (".", "!", "?")


def ends_sentence(text: str) -> float:
    """1.0 if the text ends a sentence (``.``, ``!`` or ``?`` before trailing spaces), else 0.0.

    A single-text reward: :func:`~lmgym.rewards.as_reward_fn` calls it once per completion.

    Example:
        >>> ends_sentence("the soup was great .")
        1.0
        >>> ends_sentence("the soup was")
        0.0
    """
    return 1.0 if text.rstrip().endswith(SENTENCE_ENDINGS) else 0.0


class LengthReward:
    """Penalise the distance between a completion's length and a target length.

    ``reward = -max(0, |n - target| - tolerance) / target``, where ``n`` counts the
    completion's whitespace-separated words (``unit="words"``) or its token ids
    (``unit="tokens"``, read from the ``completion_ids`` that the env passes, EOS included).
    The reward is 0 within ``tolerance`` of the target and -1 for an empty completion when
    ``tolerance=0``; dividing by ``target`` keeps it on the same scale whatever the target.

    Args:
        target: The wanted length, in ``unit``; at least 1.
        tolerance: Lengths within this distance of ``target`` are not penalised.
        unit: ``"words"`` (whitespace split of the text) or ``"tokens"`` (the completion's
            token ids, which must then be passed as ``completion_ids``).

    Raises:
        ValueError: ``target < 1``, ``tolerance < 0`` or an unknown ``unit``.

    Example:
        >>> reward = LengthReward(target=4)
        >>> reward(["q", "q", "q"], ["one two three four", "one two", ""])
        [0.0, -0.5, -1.0]
        >>> LengthReward(target=2, unit="tokens")(["q"], ["hi"], completion_ids=[[5, 6, 7]])
        [-0.5]
    """

    def __init__(
        self, target: int, *, tolerance: int = 0, unit: Literal["words", "tokens"] = "words"
    ) -> None:
        if target < 1:
            raise ValueError(
                f"target={target!r}; expected a length of at least 1 {unit}. Pass the length "
                "you want completions to have."
            )
        if tolerance < 0:
            raise ValueError(f"tolerance={tolerance!r}; expected a non-negative length.")
        if unit not in ("words", "tokens"):
            raise ValueError(f"unit={unit!r}; expected 'words' or 'tokens'.")
        self.target = target
        self.tolerance = tolerance
        self.unit = unit

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        *,
        completion_ids: list[list[int]] | None = None,
    ) -> list[float]:
        """Score each completion's length; ``completion_ids`` is required for ``unit="tokens"``."""
        if self.unit == "tokens":
            if completion_ids is None:
                raise ValueError(
                    "LengthReward(unit='tokens') needs completion_ids; expected the env (or "
                    "call_reward_fn) to pass them. Pass completion_ids=..., or use unit='words'."
                )
            lengths = [len(ids) for ids in completion_ids]
        else:
            lengths = [len(completion.split()) for completion in completions]
        # 0.0 - x rather than -x, so that an exact length scores 0.0, not -0.0.
        return [0.0 - max(0, abs(n - self.target) - self.tolerance) / self.target for n in lengths]

    def __repr__(self) -> str:
        return f"LengthReward(target={self.target}, tolerance={self.tolerance}, unit={self.unit!r})"
