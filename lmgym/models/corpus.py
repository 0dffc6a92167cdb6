"""A small review grammar: the corpus the default model learns, its prompts and its fluency check.

The default task is "write a positive review" (docs/design.md, section 5). Everything about it
is generated here, offline and deterministically:

* :func:`generate_corpus` writes short restaurant reviews (1-3 sentences, lower case, word-level,
  punctuation as separate tokens) from a small grammar. Positive and negative reviews are drawn
  with equal probability and mirror each other, so the lexicon sentiment of the corpus, and of a
  model trained on it, averages about 0: RL has room to push it up.
* :func:`parses` is a recognizer for the same grammar, written independently of the generator as
  parser combinators over word categories. It checks word order, subject-verb agreement
  (``the fries were``), ``a``/``an``, and which adjectives suit which nouns (food is not
  ``rude``). It is the fluency measure that exposes reward hacking: ``great great great .`` scores
  well on the lexicon and does not parse.
* :func:`prompts` gives review openings for the RL task, with disjoint train and test nouns.

The opinion words come from :mod:`lmgym.models.lexicon`; this module adds only neutral words.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Literal

from lmgym.models.lexicon import NEGATIVE_WORDS, POSITIVE_WORDS

__all__ = [
    "fluency",
    "generate_corpus",
    "parses",
    "prompts",
    "vocabulary",
]

NounClass = Literal["food", "service", "place", "visit"]
Number = Literal["sg", "pl"]
Polarity = Literal["positive", "negative", "neutral"]

_CLASSES: tuple[NounClass, ...] = ("food", "service", "place", "visit")
_NUMBERS: tuple[Number, ...] = ("sg", "pl")


def _lexicon(lexicon: frozenset[str], *words: str) -> tuple[str, ...]:
    """Opinion words, checked to be in the lexicon so grammar and reward cannot drift apart."""
    missing = [w for w in words if w not in lexicon]
    assert not missing, f"{missing} are not in the sentiment lexicon"
    return words


# --- Word categories -------------------------------------------------------------------------

_NOUNS: dict[tuple[NounClass, Number], tuple[str, ...]] = {
    ("food", "sg"): (
        "pizza", "soup", "pasta", "salad", "burger", "steak", "curry", "bread", "coffee",
        "dessert", "cake", "sandwich", "chicken", "fish", "rice", "tea", "meal", "dinner",
        "lunch", "breakfast",
    ),
    ("food", "pl"): (
        "fries", "noodles", "drinks", "dumplings", "tacos", "wings", "pancakes", "portions",
        "cookies", "vegetables",
    ),
    ("service", "sg"): (
        "service", "waiter", "waitress", "manager", "chef", "host", "bartender", "server",
    ),
    ("service", "pl"): ("staff", "waiters", "servers", "owners", "cooks"),
    ("place", "sg"): (
        "place", "restaurant", "room", "decor", "atmosphere", "music", "table", "menu", "view",
        "terrace", "bar", "cafe", "interior", "kitchen",
    ),
    ("place", "pl"): ("tables", "seats", "chairs", "bathrooms", "windows"),
    ("visit", "sg"): ("visit", "evening", "experience", "night", "trip", "afternoon"),
    ("visit", "pl"): ("visits", "evenings"),
}  # fmt: skip

# Singular nouns that take no indefinite article ("a great service" is not idiomatic).
_MASS_NOUNS = frozenset(
    {"bread", "coffee", "tea", "rice", "chicken", "fish", "pasta", "service", "decor",
     "atmosphere", "music"}
)  # fmt: skip

# Adjectives per noun class and polarity; "general" ones suit every noun.
_ADJECTIVES: dict[NounClass | Literal["general"], dict[Polarity, tuple[str, ...]]] = {
    "general": {
        "positive": _lexicon(
            POSITIVE_WORDS, "good", "great", "excellent", "wonderful", "amazing", "perfect",
            "superb", "fantastic", "brilliant", "nice", "lovely", "pleasant",
        ),
        "negative": _lexicon(
            NEGATIVE_WORDS, "bad", "awful", "terrible", "horrible", "poor", "disappointing",
            "mediocre", "unpleasant", "lousy",
        ),
        "neutral": ("okay", "fine", "average", "decent", "ordinary"),
    },
    "food": {
        "positive": _lexicon(POSITIVE_WORDS, "delicious", "tasty", "fresh"),
        "negative": _lexicon(
            NEGATIVE_WORDS, "bland", "stale", "greasy", "soggy", "cold", "overpriced"
        ),
        "neutral": ("hot", "warm", "spicy", "sweet", "salty", "rich", "simple", "small", "huge"),
    },
    "service": {
        "positive": _lexicon(POSITIVE_WORDS, "friendly", "helpful", "charming"),
        "negative": _lexicon(NEGATIVE_WORDS, "rude", "slow"),
        "neutral": ("busy", "quiet", "young", "new", "formal", "casual"),
    },
    "place": {
        "positive": _lexicon(POSITIVE_WORDS, "cozy", "clean", "charming"),
        "negative": _lexicon(NEGATIVE_WORDS, "dirty", "noisy", "boring", "cold", "overpriced"),
        "neutral": (
            "busy", "quiet", "calm", "small", "large", "dark", "modern", "simple", "bright",
        ),
    },
    "visit": {
        "positive": _lexicon(POSITIVE_WORDS, "charming", "cozy"),
        "negative": _lexicon(NEGATIVE_WORDS, "boring", "noisy"),
        "neutral": ("long", "short", "quiet", "busy", "calm"),
    },
}  # fmt: skip

_OPINION_VERBS: dict[Polarity, tuple[str, ...]] = {
    "positive": _lexicon(POSITIVE_WORDS, "loved", "enjoyed", "love"),
    "negative": _lexicon(NEGATIVE_WORDS, "hated", "disliked", "hate"),
    "neutral": ("ordered", "tried", "had", "shared"),  # these take food objects only
}
_RECOMMEND = _lexicon(POSITIVE_WORDS, "recommend")[0]
_AVOID = _lexicon(NEGATIVE_WORDS, "avoid")[0]
_SUPERLATIVES: dict[Polarity, str] = {
    "positive": _lexicon(POSITIVE_WORDS, "best")[0],
    "negative": _lexicon(NEGATIVE_WORDS, "worst")[0],
}

_SUBJECT_PRONOUNS = ("i", "we")
_DETERMINERS: dict[Number, tuple[str, ...]] = {
    "sg": ("the", "our", "my", "their", "this"),
    "pl": ("the", "our", "my", "their", "these"),
}
_BE: dict[Number, tuple[str, ...]] = {"sg": ("was", "is"), "pl": ("were", "are")}
_LINKING_VERBS: dict[NounClass, tuple[str, ...]] = {
    "food": ("seemed", "tasted", "looked", "smelled"),
    "service": ("seemed",),
    "place": ("seemed", "looked", "felt"),
    "visit": ("seemed", "felt"),
}
_DEGREE_ADVERBS = ("very", "really", "quite", "so", "pretty", "rather", "truly")
_ARTICLE_ADVERBS = ("very", "really", "pretty", "rather", "truly")  # not "a so bad meal"
_NEGATED_ADVERBS = ("very", "really", "so")  # "not very good", not "not pretty good"
_VERB_ADVERBS = ("really", "absolutely", "truly")
_THINK_VERBS = ("thought", "think", "felt")
_OPENERS: dict[Polarity, tuple[str, ...]] = {
    "positive": ("overall", "honestly", "luckily"),
    "negative": ("overall", "honestly", "sadly", "unfortunately"),
    "neutral": ("overall", "honestly"),
}
_CONTRAST_OPENER = "however"
_MEALS = ("lunch", "dinner", "breakfast", "brunch")
_LAST = ("week", "month", "night", "year", "weekend")
_DAYS = ("monday", "friday", "saturday", "sunday")
_PEOPLE = ("wife", "husband", "family", "kids", "parents", "friends", "colleagues")
_NUMBERS_WORDS = ("five", "ten", "twenty", "thirty", "forty")
_RETURN_ADVERBS: dict[Polarity, str] = {"positive": "definitely", "negative": "never"}
_PUNCTUATION = (".", ",")


def _nouns(cls: NounClass, number: Number, *, countable: bool = False) -> tuple[str, ...]:
    nouns = _NOUNS[(cls, number)]
    return tuple(n for n in nouns if n not in _MASS_NOUNS) if countable else nouns


def _adjectives(cls: NounClass | None, polarity: Polarity | None = None) -> tuple[str, ...]:
    """Adjectives that suit a noun of ``cls`` (any class for ``None``), of one or all polarities."""
    keys: tuple[NounClass | Literal["general"], ...] = (
        ("general", *_CLASSES) if cls is None else ("general", cls)
    )
    polarities: tuple[Polarity, ...] = (
        ("positive", "negative", "neutral") if polarity is None else (polarity,)
    )
    words: list[str] = []
    for key in keys:
        for pol in polarities:
            words.extend(w for w in _ADJECTIVES[key][pol] if w not in words)
    return tuple(words)


def indefinite_article(word: str) -> str:
    """``"an"`` before a vowel sound, else ``"a"`` (spelling is a faithful guide in this grammar).

    Example:
        >>> indefinite_article("awful"), indefinite_article("great")
        ('an', 'a')
    """
    return "an" if word[:1] in "aeiou" else "a"


# --- Generator ----------------------------------------------------------------------------------
#
# Written separately from the recognizer below (so that the tests comparing them mean something),
# and with a review's mood in mind: adjectives joined by "and" agree, "but" contrasts, "sadly ,"
# opens bad news. Positive and negative branches mirror each other word for word, so the lexicon
# sentiment of the corpus averages about 0.

_MOODS = ("positive", "negative", "mixed", "neutral")
_MOOD_WEIGHTS = (0.35, 0.35, 0.15, 0.15)
_CLASS_WEIGHTS = (0.4, 0.25, 0.25, 0.1)  # food, service, place, visit
_SIGNED: tuple[Polarity, ...] = ("positive", "negative")
_POLARITY_OF_MOOD: dict[str, Polarity] = {
    "positive": "positive",
    "negative": "negative",
    "neutral": "neutral",
}
_NEUTRAL_FIRST: tuple[Polarity, ...] = ("neutral", "positive", "negative")
_OPPOSITE: dict[Polarity, Polarity] = {
    "positive": "negative",
    "negative": "positive",
    "neutral": "neutral",
}


def _flip(polarity: Polarity) -> Polarity:
    return _OPPOSITE[polarity]


class _ReviewWriter:
    """Draws one review at a time from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def noun(self, cls: NounClass | None = None) -> tuple[str, Number, NounClass]:
        cls = cls or self.rng.choices(_CLASSES, _CLASS_WEIGHTS)[0]
        number: Number = "sg" if self.chance(0.75) else "pl"
        return self.rng.choice(_NOUNS[(cls, number)]), number, cls

    def adjective(self, cls: NounClass | None, polarity: Polarity) -> str:
        drawn: Polarity
        if polarity == "neutral":
            drawn = self.rng.choices(_NEUTRAL_FIRST, (0.9, 0.05, 0.05))[0]
        else:
            drawn = polarity if self.chance(0.85) else "neutral"
        return self.rng.choice(_adjectives(cls, drawn))

    def adjective_phrase(self, cls: NounClass | None, polarity: Polarity) -> list[str]:
        words = [self.rng.choice(_DEGREE_ADVERBS)] if self.chance(0.3) else []
        words.append(self.adjective(cls, polarity))
        if self.chance(0.2):
            contrast = polarity != "neutral" and self.chance(0.2)
            words.append("but" if contrast else "and")
            if self.chance(0.2):
                words.append(self.rng.choice(_DEGREE_ADVERBS))
            words.append(self.adjective(cls, _flip(polarity) if contrast else polarity))
        return words

    def noun_phrase(
        self, polarity: Polarity, cls: NounClass | None = None, *, modified: bool = False
    ) -> tuple[list[str], Number, NounClass]:
        noun, number, cls = self.noun(cls)
        det = "the" if self.chance(0.6) else self.rng.choice(_DETERMINERS[number])
        modifier = [self.adjective(cls, polarity)] if modified and self.chance(0.2) else []
        return [det, *modifier, noun], number, cls

    def predicate(self, number: Number, cls: NounClass | None, polarity: Polarity) -> list[str]:
        if self.chance(0.8):
            be = _BE[number][0 if self.chance(0.75) else 1]
            if polarity != "neutral" and self.chance(0.05):  # "not bad": the lexicon is fooled
                adverb = [self.rng.choice(_NEGATED_ADVERBS)] if self.chance(0.3) else []
                return [be, "not", *adverb, self.adjective(cls, _flip(polarity))]
            return [be, *self.adjective_phrase(cls, polarity)]
        linking = _LINKING_VERBS[cls] if cls is not None else _LINKING_VERBS["service"]
        return [self.rng.choice(linking), *self.adjective_phrase(cls, polarity)]

    def copula(
        self, polarity: Polarity, refers_to: tuple[Number, NounClass] | None = None
    ) -> list[str]:
        if refers_to is not None:  # "... and it was cold": keep the adjectives apt for the noun
            number, cls = refers_to
            verb = self.rng.choice(_BE[number]) if self.chance(0.8) else "seemed"
            pronoun = "it" if number == "sg" else "they"
            return [pronoun, verb, *self.adjective_phrase(cls, polarity)]
        subject, number, cls = self.noun_phrase(polarity)
        return [*subject, *self.predicate(number, cls, polarity)]

    def opinion(self, polarity: Polarity) -> tuple[list[str], tuple[Number, NounClass] | None]:
        subject = self.rng.choice(_SUBJECT_PRONOUNS)
        if polarity == "neutral" or self.chance(0.3):  # "we ordered the soup" (and it was ...)
            obj, number, cls = self.noun_phrase(polarity, "food", modified=True)
            return [subject, self.rng.choice(_OPINION_VERBS["neutral"]), *obj], (number, cls)
        adverb = [self.rng.choice(_VERB_ADVERBS)] if self.chance(0.15) else []
        verb = self.rng.choice(_OPINION_VERBS[polarity])
        if self.chance(0.08):
            return [subject, *adverb, verb, self.rng.choice(("it", "them"))], None
        obj, number, cls = self.noun_phrase(polarity, modified=True)
        return [subject, *adverb, verb, *obj], (number, cls)

    def recommend(self, polarity: Polarity) -> list[str]:
        words = [self.rng.choice(_SUBJECT_PRONOUNS)]
        if self.chance(0.5):
            words.append("would")
        if self.chance(0.3):
            words.append("highly" if polarity == "positive" else "definitely")
        words.append(_RECOMMEND if polarity == "positive" else _AVOID)
        obj = ["this", "place"] if self.chance(0.4) else self.noun_phrase(polarity)[0]
        return [*words, *obj]

    def think(self, polarity: Polarity) -> list[str]:
        subject = self.rng.choice(_SUBJECT_PRONOUNS)
        if self.chance(0.7):
            return [subject, self.rng.choice(_THINK_VERBS), *self.copula(polarity)]
        obj, _, cls = self.noun_phrase(polarity)
        return [subject, "found", *obj, *self.adjective_phrase(cls, polarity)]

    def indefinite(self, polarity: Polarity) -> list[str]:
        start = [self.rng.choice(("it", "this", "that")), self.rng.choice(_BE["sg"])]
        cls: NounClass = self.rng.choices(_CLASSES, _CLASS_WEIGHTS)[0]
        if polarity != "neutral" and self.chance(0.3):
            noun = self.rng.choice(_nouns(cls, "sg"))
            return [*start, "the", _SUPERLATIVES[polarity], noun]
        adverb = [self.rng.choice(_ARTICLE_ADVERBS)] if self.chance(0.3) else []
        adjective = self.adjective(cls, polarity)
        noun = self.rng.choice(_nouns(cls, "sg", countable=True))
        article = indefinite_article((adverb or [adjective])[0])
        return [*start, article, *adverb, adjective, noun]

    def narrative(self, polarity: Polarity) -> list[str]:
        subject = self.rng.choice(_SUBJECT_PRONOUNS)
        if polarity != "neutral":  # a closing line: "we will definitely come back"
            adverb = [_RETURN_ADVERBS[polarity]] if self.chance(0.6) else []
            ending = ["return"] if self.chance(0.5) else ["come", "back"]
            return [subject, "will", *adverb, *ending]
        if self.chance(0.25):
            return [subject, "waited", self.rng.choice(_NUMBERS_WORDS), "minutes"]
        words = [subject, self.rng.choice(("came", "went")), self.rng.choice(("here", "there"))]
        kind = self.rng.randrange(5)
        if kind == 1:
            words += ["for", self.rng.choice(_MEALS)]
        elif kind == 2:
            words += ["last", self.rng.choice(_LAST)]
        elif kind == 3:
            words += ["on", self.rng.choice(_DAYS)]
        elif kind == 4:
            words += (
                ["with", "friends"]
                if self.chance(0.3)
                else ["with", "my", self.rng.choice(_PEOPLE)]
            )
        return words

    def clause(self, polarity: Polarity) -> tuple[list[str], tuple[Number, NounClass] | None]:
        """A clause and, where it ends in a noun that "it"/"they" may refer to, that noun."""
        kinds = ("copula", "opinion", "recommend", "think", "indefinite", "narrative")
        weights = (
            (0.45, 0.17, 0.07, 0.13, 0.12, 0.06)
            if polarity != "neutral"
            else (0.35, 0.25, 0.0, 0.1, 0.1, 0.2)
        )
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "opinion":
            return self.opinion(polarity)
        method = getattr(self, kind)
        return method(polarity), None

    def sentence(self, polarity: Polarity, *, contrast: bool = False) -> list[str]:
        words: list[str] = []
        if contrast and self.chance(0.3):
            words += [_CONTRAST_OPENER, ","]
        elif self.chance(0.12):
            words += [self.rng.choice(_OPENERS[polarity]), ","]
        clause, referent = self.clause(polarity)
        words += clause
        # "we ordered the soup" invites "and it was ...": join more often after such a clause.
        joins = self.chance(0.45 if referent is not None else 0.2)
        n_joined = (2 if self.chance(0.2) else 1) if joins else 0
        for _ in range(n_joined):  # "..., and it was cold": clauses joined by "and" / "but"
            but = polarity != "neutral" and self.chance(0.25)
            polarity = _flip(polarity) if but else polarity
            words.append("but" if but else "and")
            if referent is not None and self.chance(0.6):
                words += self.copula(polarity, refers_to=referent)
                referent = None
            else:
                clause, referent = self.clause(polarity)
                words += clause
        return [*words, "."]

    def review(self) -> list[str]:
        mood = self.rng.choices(_MOODS, _MOOD_WEIGHTS)[0]
        n_sentences = self.rng.choices((1, 2, 3), (0.35, 0.4, 0.25))[0]
        words: list[str] = []
        if mood != "neutral" and n_sentences > 1 and self.chance(0.2):
            words += self.sentence("neutral")
            n_sentences -= 1
        polarity = self.rng.choice(_SIGNED) if mood == "mixed" else _POLARITY_OF_MOOD[mood]
        for index in range(n_sentences):
            flips = mood == "mixed" and index > 0
            if flips:
                polarity = _flip(polarity)
            words += self.sentence(polarity, contrast=flips)
        return words


def generate_corpus(n: int, seed: int = 0, *, max_words: int = 40) -> list[str]:
    """Generate ``n`` reviews of 1-3 sentences, deterministically from ``seed``.

    Reviews are positive, negative, mixed or neutral (35/35/15/15 %); positive and negative ones
    mirror each other, so the mean lexicon sentiment is about 0.

    Args:
        n: Number of reviews (>= 0).
        seed: Seed of the generator; the same seed gives the same corpus on every platform.
        max_words: Longest review, in words; longer draws are redrawn. It bounds the model's
            context length (a review plus ``<bos>`` and ``<eos>`` must fit ``n_positions``).

    Returns:
        The reviews, each a lower-case string of space-separated words.

    Example:
        >>> docs = generate_corpus(3, seed=0)
        >>> len(docs), docs == generate_corpus(3, seed=0), all(parses(d) for d in docs)
        (3, True, True)
    """
    for name, value, minimum in (("n", n, 0), ("seed", seed, 0), ("max_words", max_words, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} is not an int >= {minimum}; pass e.g. {name}=100.")
    writer = _ReviewWriter(random.Random(seed))
    docs: list[str] = []
    while len(docs) < n:
        words = writer.review()
        if len(words) <= max_words:
            docs.append(" ".join(words))
    return docs


# --- Recognizer: parser combinators over word positions ---------------------------------------
#
# Each parser maps (words, start) to the set of positions where a match can end. Running out of
# words in the middle of a match yields _INCOMPLETE, which propagates to the top: the text is then
# a proper prefix of a grammatical sentence (a completion cut by a length limit). Sets of end
# positions make the inevitable ambiguity ("fresh and ..." joins adjectives or clauses) free.

_INCOMPLETE = -1


class _Parser:
    def ends(self, words: Sequence[str], start: int) -> set[int]:
        raise NotImplementedError


class _Word(_Parser):
    def __init__(self, *choices: str | Iterable[str]) -> None:
        flat: set[str] = set()
        for choice in choices:
            flat.update([choice] if isinstance(choice, str) else choice)
        self.words = frozenset(flat)

    def ends(self, words: Sequence[str], start: int) -> set[int]:
        if start == len(words):
            return {_INCOMPLETE}
        return {start + 1} if words[start] in self.words else set()


class _Article(_Parser):
    """``a`` or ``an``, whichever the next word (if any yet) calls for."""

    def ends(self, words: Sequence[str], start: int) -> set[int]:
        if start == len(words):
            return {_INCOMPLETE}
        if words[start] not in ("a", "an"):
            return set()
        if start + 1 < len(words) and words[start] != indefinite_article(words[start + 1]):
            return set()
        return {start + 1}


class _Repeat(_Parser):
    """Zero or more matches of ``part`` in a row (``part`` must consume at least one word)."""

    def __init__(self, part: _Parser) -> None:
        self.part = part

    def ends(self, words: Sequence[str], start: int) -> set[int]:
        found = {start}
        frontier = {start}
        while frontier:
            following: set[int] = set()
            for position in frontier - {_INCOMPLETE}:
                following |= self.part.ends(words, position)
            frontier = following - found
            found |= following
        return found


class _Empty(_Parser):
    def ends(self, words: Sequence[str], start: int) -> set[int]:
        return {start}


class _Seq(_Parser):
    def __init__(self, *parts: _Parser | str) -> None:
        self.parts = [_Word(p) if isinstance(p, str) else p for p in parts]

    def ends(self, words: Sequence[str], start: int) -> set[int]:
        positions = {start}
        for part in self.parts:
            following: set[int] = set()
            for position in positions:
                if position == _INCOMPLETE:
                    following.add(_INCOMPLETE)
                else:
                    following |= part.ends(words, position)
            positions = following
            if not positions:
                break
        return positions


class _Alt(_Parser):
    def __init__(self, *options: _Parser | str) -> None:
        self.options = [_Word(o) if isinstance(o, str) else o for o in options]

    def ends(self, words: Sequence[str], start: int) -> set[int]:
        found: set[int] = set()
        for option in self.options:
            found |= option.ends(words, start)
        return found


def _opt(parser: _Parser | str) -> _Parser:
    return _Alt(parser, _Empty())


def _build_sentence_parser() -> _Parser:
    subject_pronoun = _Word(_SUBJECT_PRONOUNS)

    def adjective_phrase(cls: NounClass | None) -> _Parser:
        adjective = _Seq(_opt(_Word(_DEGREE_ADVERBS)), _Word(_adjectives(cls)))
        return _Seq(adjective, _opt(_Seq(_Word("and", "but"), adjective)))

    def predicate(number: Number, cls: NounClass | None) -> _Parser:
        linking = _LINKING_VERBS[cls] if cls is not None else _LINKING_VERBS["service"]
        return _Alt(
            _Seq(_Word(_BE[number]), adjective_phrase(cls)),
            _Seq(_Word(_BE[number]), "not", _opt(_Word(_NEGATED_ADVERBS)), _Word(_adjectives(cls))),
            _Seq(_Word(linking), adjective_phrase(cls)),
        )

    def noun_phrase(number: Number, cls: NounClass, *, modified: bool = False) -> _Parser:
        modifier = _opt(_Word(_adjectives(cls))) if modified else _Empty()
        return _Seq(_Word(_DETERMINERS[number]), modifier, _Word(_nouns(cls, number)))

    noun_classes = [(n, c) for n in _NUMBERS for c in _CLASSES]
    pronoun_numbers: tuple[tuple[str, Number], ...] = (("it", "sg"), ("they", "pl"))
    copula = _Alt(
        *(_Seq(noun_phrase(n, c), predicate(n, c)) for n, c in noun_classes),
        *(_Seq(p, predicate(n, None)) for p, n in pronoun_numbers),
    )
    obj = _Alt(*(noun_phrase(n, c, modified=True) for n, c in noun_classes), "it", "them")
    food_obj = _Alt(*(noun_phrase(n, "food", modified=True) for n in _NUMBERS))
    opinion = _Alt(
        _Seq(
            subject_pronoun,
            _opt(_Word(_VERB_ADVERBS)),
            _Word(_OPINION_VERBS["positive"], _OPINION_VERBS["negative"]),
            obj,
        ),
        _Seq(subject_pronoun, _Word(_OPINION_VERBS["neutral"]), food_obj),
    )
    recommend = _Seq(
        subject_pronoun,
        _opt("would"),
        _Alt(_Seq(_opt("highly"), _RECOMMEND), _Seq(_opt("definitely"), _AVOID)),
        obj,
    )
    found = _Seq(
        subject_pronoun,
        "found",
        _Alt(
            *(_Seq(noun_phrase(n, c), adjective_phrase(c)) for n, c in noun_classes),
            _Seq(_Word("it", "them"), adjective_phrase(None)),
        ),
    )
    think = _Alt(_Seq(subject_pronoun, _Word(_THINK_VERBS), copula), found)
    demonstrative = _Seq(_Word("it", "this", "that"), _Word(_BE["sg"]))
    indefinite = _Seq(
        demonstrative,
        _Alt(
            *(
                _Seq(
                    _Article(),
                    _opt(_Word(_ARTICLE_ADVERBS)),
                    _Word(_adjectives(c)),
                    _Word(_nouns(c, "sg", countable=True)),
                )
                for c in _CLASSES
            ),
            _Seq(
                "the",
                _Word(_SUPERLATIVES.values()),
                _Word(*(_nouns(c, "sg") for c in _CLASSES)),
            ),
        ),
    )
    time = _Alt(
        _Seq("for", _Word(_MEALS)),
        _Seq("last", _Word(_LAST)),
        _Seq("on", _Word(_DAYS)),
        _Seq("with", _Alt("friends", _Seq("my", _Word(_PEOPLE)))),
    )
    narrative = _Alt(
        _Seq(subject_pronoun, _Word("came", "went"), _Word("here", "there"), _opt(time)),
        _Seq(subject_pronoun, "waited", _Word(_NUMBERS_WORDS), "minutes"),
        _Seq(
            subject_pronoun,
            "will",
            _opt(_Word(_RETURN_ADVERBS.values())),
            _Alt("return", _Seq("come", "back")),
        ),
    )
    clause = _Alt(copula, opinion, recommend, think, indefinite, narrative)
    openers = {w for words in _OPENERS.values() for w in words} | {_CONTRAST_OPENER}
    return _Seq(
        _opt(_Seq(_Word(openers), ",")),
        clause,
        _Repeat(_Seq(_Word("and", "but"), clause)),
        ".",
    )


_SENTENCE = _build_sentence_parser()


def parses(text: str, *, allow_incomplete: bool = False) -> bool:
    """Whether ``text`` is a sequence of one or more grammatical sentences of the review grammar.

    Words are compared in lower case; punctuation must be separate words (``"good ."``). An empty
    text is not grammatical.

    Args:
        text: Whitespace-separated words, e.g. a prompt followed by its completion.
        allow_incomplete: Also accept a trailing unfinished sentence that is a valid prefix of a
            grammatical one, as left by a completion truncated at a length limit.

    Example:
        >>> parses("the pizza was great . the staff were rude .")
        True
        >>> parses("the pizza were great .")  # agreement
        False
        >>> parses("the pizza was really", allow_incomplete=True)
        True
        >>> parses("great great great .")
        False
    """
    words = text.lower().split()
    if not words:
        return False
    frontier = {0}
    seen: set[int] = set()
    while frontier:
        following: set[int] = set()
        for start in frontier:
            for end in _SENTENCE.ends(words, start):
                if end == _INCOMPLETE:
                    if allow_incomplete:
                        return True
                elif end == len(words):
                    return True
                else:
                    following.add(end)
        seen |= frontier
        frontier = following - seen
    return False


def fluency(texts: Iterable[str], *, allow_incomplete: bool = False) -> float:
    """Fraction of ``texts`` that :func:`parses` accepts.

    Args:
        texts: The texts to check (at least one).
        allow_incomplete: Passed to :func:`parses`.

    Raises:
        ValueError: ``texts`` is empty.

    Example:
        >>> fluency(["the soup was cold .", "soup soup ."])
        0.5
    """
    results = [parses(t, allow_incomplete=allow_incomplete) for t in texts]
    if not results:
        raise ValueError("texts is empty; expected at least one text to measure fluency on.")
    return sum(results) / len(results)


def vocabulary() -> list[str]:
    """Every word the grammar can use, sorted: what the default tokenizer is built from.

    It is enumerated from the word categories, not from sampled text, so rare words are never
    missing.

    Example:
        >>> words = vocabulary()
        >>> {"pizza", "great", "awful", ".", ","} <= set(words)
        True
    """
    words: set[str] = set(_PUNCTUATION)
    for nouns in _NOUNS.values():
        words.update(nouns)
    for by_polarity in _ADJECTIVES.values():
        for adjectives in by_polarity.values():
            words.update(adjectives)
    for verbs in _OPINION_VERBS.values():
        words.update(verbs)
    for group in (*_DETERMINERS.values(), *_BE.values(), *_LINKING_VERBS.values()):
        words.update(group)
    for group in _OPENERS.values():
        words.update(group)
    words.update(
        (_RECOMMEND, _AVOID, _CONTRAST_OPENER, *_SUPERLATIVES.values(), *_RETURN_ADVERBS.values())
    )
    words.update(_SUBJECT_PRONOUNS + _DEGREE_ADVERBS + _VERB_ADVERBS + _THINK_VERBS)
    words.update(_MEALS + _LAST + _DAYS + _PEOPLE + _NUMBERS_WORDS)
    words.update(
        "it they them this that a an the not and but would highly found for last on with my "
        "came went here there waited minutes will return come back".split()
    )
    return sorted(words)


# --- Prompts of the RL task -------------------------------------------------------------------

# Train and test prompts use disjoint nouns, so a test score measures a policy's behaviour on
# review openings it never saw during RL.
_PROMPT_NOUNS: dict[str, tuple[str, ...]] = {
    "train": (
        "pizza", "soup", "pasta", "burger", "coffee", "dessert", "fries", "noodles", "service",
        "waiter", "staff", "place", "room", "music", "atmosphere",
    ),
    "test": (
        "salad", "steak", "curry", "cake", "tacos", "dumplings", "waitress", "chef", "servers",
        "decor", "terrace", "view",
    ),
}  # fmt: skip


def prompts(split: Literal["train", "test"] = "train") -> list[str]:
    """The default prompts of the RL task: review openings the model continues.

    Each is a prefix of a grammatical sentence (``parses(p, allow_incomplete=True)``) whose
    continuation decides the sentiment: ``"the pizza was"``, ``"i thought the service"``,
    ``"we ordered the fries and they were"``, ``"overall , the staff were"``. The two splits use
    disjoint nouns.

    Args:
        split: ``"train"`` (45 prompts) or held-out ``"test"`` (36 prompts).

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.

    Example:
        >>> prompts("train")[:2]
        ['the pizza was', 'i thought the pizza']
        >>> set(prompts("train")).isdisjoint(prompts("test"))
        True
    """
    if split not in _PROMPT_NOUNS:
        raise ValueError(f"split={split!r} is not a prompt split; expected 'train' or 'test'.")
    where = {noun: key for key, nouns in _NOUNS.items() for noun in nouns}
    texts: list[str] = []
    for noun in _PROMPT_NOUNS[split]:
        cls, number = where[noun]
        be = _BE[number][0]
        texts += [f"the {noun} {be}", f"i thought the {noun}"]
        if cls == "food":
            texts.append(f"we ordered the {noun} and {'it' if number == 'sg' else 'they'} {be}")
        else:
            texts.append(f"overall , the {noun} {be}")
    return texts
