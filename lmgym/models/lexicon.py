"""The sentiment lexicon behind the default task ("write a positive review").

The corpus grammar (:mod:`lmgym.models.corpus`) draws its opinion words from these lists and the
default reward (:mod:`lmgym.rewards.lexicon`) scores texts with them, so the two can never drift
apart. Words are lower case; texts are split on whitespace, so punctuation must be its own token
(the corpus writes ``"good ."``, not ``"good."``).
"""

from __future__ import annotations

__all__ = ["NEGATIVE_WORDS", "POSITIVE_WORDS", "sentiment", "word_sentiments"]

POSITIVE_WORDS: frozenset[str] = frozenset(
    {
        "good", "great", "excellent", "wonderful", "lovely", "delicious", "friendly", "fresh",
        "amazing", "perfect", "pleasant", "tasty", "superb", "fantastic", "charming", "nice",
        "clean", "helpful", "cozy", "brilliant", "love", "loved", "enjoyed", "recommend", "best",
    }
)  # fmt: skip

NEGATIVE_WORDS: frozenset[str] = frozenset(
    {
        "bad", "awful", "terrible", "horrible", "bland", "rude", "stale", "dirty", "slow",
        "boring", "cold", "greasy", "noisy", "poor", "disappointing", "mediocre", "soggy",
        "unpleasant", "overpriced", "hate", "hated", "disliked", "avoid", "worst", "lousy",
    }
)  # fmt: skip


def word_sentiments(text: str) -> list[int]:
    """Return +1, -1 or 0 for each whitespace-separated word of ``text``.

    Example:
        >>> word_sentiments("the soup was great but the staff were rude .")
        [0, 0, 0, 1, 0, 0, 0, 0, -1, 0]
    """
    return [
        1 if w in POSITIVE_WORDS else -1 if w in NEGATIVE_WORDS else 0 for w in text.lower().split()
    ]


def sentiment(text: str) -> float:
    """Mean lexicon sentiment of ``text``: (#positive - #negative) / #words, in [-1, 1].

    An empty text scores 0. Dividing by the word count (not the opinion-word count) keeps the
    score bounded and lets filler words dilute it, which is what makes the score hackable by a
    completion of nothing but positive words: the grammar check exposes that.

    Example:
        >>> sentiment("great food .")
        0.3333333333333333
        >>> sentiment("")
        0.0
    """
    scores = word_sentiments(text)
    return sum(scores) / len(scores) if scores else 0.0
