"""Rewards: the reward-function protocol, built-in rewards, and the KL penalty maths.

A reward function maps a batch of ``(prompt, completion)`` texts to one float each. Pass any of
these wherever lmgym takes a ``reward_fn``:

* a batch function ``fn(prompts, completions, **kwargs)`` (:class:`RewardFunction`);
* a single-text function ``fn(text) -> float``, applied to each completion;
* a built-in: :class:`LexiconSentimentReward`, :class:`LengthReward`, :func:`ends_sentence`,
  :class:`SequenceClassifierReward` (any local Hugging Face sequence classifier);
* a :class:`WeightedSum` of any of these.

The KL penalty's estimators and β controllers live in :mod:`lmgym.rewards.kl`.

Example:
    >>> from lmgym.rewards import WeightedSum, LexiconSentimentReward, ends_sentence
    >>> reward = as_reward_fn(WeightedSum({LexiconSentimentReward(): 1.0, ends_sentence: 0.1}))
    >>> call_reward_fn(reward, ["the food was"], ["great ."])
    array([0.6])
"""

from __future__ import annotations

from lmgym.rewards.base import (
    PreparedReward,
    RewardFunction,
    RewardLike,
    as_reward_fn,
    call_reward_fn,
)
from lmgym.rewards.classifier import SequenceClassifierReward
from lmgym.rewards.combine import WeightedSum
from lmgym.rewards.lexicon import LexiconSentimentReward
from lmgym.rewards.rules import LengthReward, ends_sentence

__all__ = [
    "LengthReward",
    "LexiconSentimentReward",
    "PreparedReward",
    "RewardFunction",
    "RewardLike",
    "SequenceClassifierReward",
    "WeightedSum",
    "as_reward_fn",
    "call_reward_fn",
    "ends_sentence",
]
