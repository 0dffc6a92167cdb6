"""The default task's reward: lexicon sentiment of the completion ("write a positive review").

The score is deliberately hackable (a completion of nothing but positive words maximises it),
which is what the default task is for: watching an agent find that, and the KL penalty and the
grammar-based fluency measure expose it.
"""

from __future__ import annotations

from lmgym.models.lexicon import sentiment

__all__ = ["LexiconSentimentReward"]


class LexiconSentimentReward:
    """Reward = lexicon sentiment of the completion, in [-1, 1].

    The sentiment is ``(#positive - #negative) / #words`` over whitespace-separated words
    (:func:`lmgym.models.lexicon.sentiment`); the prompt is not scored, so the agent is paid
    only for what it wrote. Punctuation must be a separate word to be ignored (``"good ."``):
    the embedded model's corpus writes it that way.

    Example:
        >>> reward = LexiconSentimentReward()
        >>> reward(["the food was"], [" great and the staff were rude"])
        [0.0]
        >>> reward(["the food was", "the food was"], [" great .", " awful"])
        [0.5, -1.0]
    """

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Score each completion's sentiment; ``prompts`` is accepted for the protocol."""
        return [sentiment(completion) for completion in completions]

    def __repr__(self) -> str:
        return "LexiconSentimentReward()"
