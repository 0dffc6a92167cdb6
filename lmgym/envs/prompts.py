"""Where LM environments get their prompts, tokenized once and held as ids.

A prompt list is tokenized at construction (bad prompts fail before any episode runs); a prompt
callable is tokenized when it is drawn, with a cache, so no text is tokenized twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from lmgym.error import short_repr

__all__ = ["PromptSource", "PromptSpec", "check_encodable"]

PromptSpec = Sequence[str] | Callable[[np.random.Generator], str]
"""A list of prompt texts, or a function that draws one prompt text from the env's ``np_random``."""

_MAX_CACHED_PROMPTS = 65_536


class PromptSource:
    """Draws prompts from a list or a callable and returns their token ids.

    Args:
        prompts: A non-empty list of texts, or ``f(np_random) -> str``.
        tokenizer: Tokenizes each prompt once (special tokens included, e.g. a BOS).
        max_prompt_tokens: Longest allowed prompt, in tokens.
        truncate_prompts: Keep the *last* ``max_prompt_tokens`` tokens of a longer prompt (the
            end is what the completion continues) instead of raising.
    """

    def __init__(
        self,
        prompts: PromptSpec,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_tokens: int,
        truncate_prompts: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.truncate_prompts = truncate_prompts
        self._cache: dict[str, np.ndarray] = {}
        self._draw_fn: Callable[[np.random.Generator], str] | None = None
        self._texts: list[str] = []
        self._warned_unknown = False
        if callable(prompts):
            self._draw_fn = prompts
            return
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts={short_repr(prompts)} is not a list of strings or a callable; expected "
                "e.g. prompts=['the food was', 'i thought the staff'] or prompts=lambda rng: ..."
            )
        if len(prompts) == 0:
            raise ValueError(
                "prompts=[] is empty; expected at least one prompt text, or omit prompts= to use "
                "the default prompt set."
            )
        self._texts = list(prompts)
        for index, text in enumerate(self._texts):
            self.encode(text, where=f"prompts[{index}]")

    def __len__(self) -> int:
        """Number of prompts in the list (0 for a callable source)."""
        return len(self._texts)

    @property
    def texts(self) -> list[str]:
        """The prompt list (empty for a callable source)."""
        return list(self._texts)

    def draw(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """Draw one prompt with ``rng`` (the env's ``np_random``); return its text and ids."""
        if self._draw_fn is not None:
            text = self._draw_fn(rng)
            return text, self.encode(text, where="the prompts callable's result")
        text = self._texts[int(rng.integers(len(self._texts)))]
        return text, self._cache[text]

    def encode(self, text: str, *, where: str = "prompt") -> np.ndarray:
        """Token ids of ``text`` (cached), validated against ``max_prompt_tokens``.

        Raises ``TypeError`` for a non-string and ``ValueError`` for text the tokenizer cannot
        encode, with no tokens, holding the pad token, or too long; each names ``where``.
        """
        if not isinstance(text, str):
            raise TypeError(
                f"{where}={short_repr(text)} has type {type(text).__name__}; expected prompt "
                "text (a str)."
            )
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        check_encodable(text, where)
        encoded = self.tokenizer(text, return_offsets_mapping=self.tokenizer.is_fast)
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        self._warn_unknown_words(text, ids, encoded.get("offset_mapping"), where)
        if ids.size == 0:
            raise ValueError(
                f"{where}={short_repr(text)} has no tokens; expected a non-empty prompt."
            )
        if self.tokenizer.pad_token_id is not None and np.any(ids == self.tokenizer.pad_token_id):
            raise ValueError(
                f"{where}={short_repr(text)} contains the pad token "
                f"{self.tokenizer.pad_token!r}; the observation marks padding with it, so "
                "prompts must not contain it. Remove it from the prompt."
            )
        if ids.size > self.max_prompt_tokens:
            if not self.truncate_prompts:
                raise ValueError(
                    f"{where}={short_repr(text)} has {ids.size} tokens, more than "
                    f"max_prompt_tokens={self.max_prompt_tokens}; raise max_prompt_tokens, "
                    "shorten the prompt, or pass truncate_prompts=True to keep its last tokens."
                )
            ids = ids[-self.max_prompt_tokens :]
        if len(self._cache) >= _MAX_CACHED_PROMPTS and self._draw_fn is not None:
            self._cache.clear()  # a callable may never repeat itself: keep memory bounded
        self._cache[text] = ids
        return ids

    def _warn_unknown_words(
        self, text: str, ids: np.ndarray, offsets: list[tuple[int, int]] | None, where: str
    ) -> None:
        """Warn, once per source, that the tokenizer turned words of a prompt into its unk token.

        A word-level vocabulary (the embedded model knows a few hundred lowercase words) maps
        anything else to ``<unk>``: the agent then sees a prompt other than the one written.
        """
        unk = self.tokenizer.unk_token_id
        if self._warned_unknown or unk is None or not np.any(ids == unk):
            return
        if offsets is not None:
            unknown = [
                text[start:end] for (start, end), i in zip(offsets, ids, strict=True) if i == unk
            ]
        else:
            unknown = [f"{int(np.sum(ids == unk))} word(s)"]
        shown = ", ".join(repr(word) for word in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        warnings.warn(
            f"{where}={short_repr(text, 80)}: the tokenizer does not know {shown}{more}, which "
            f"become {self.tokenizer.unk_token!r}. The embedded model knows "
            f"{len(self.tokenizer)} tokens (lowercase review words; see docs/default-model.md); "
            "pass model= and tokenizer= of your own model for other text. (Warned once per env.)",
            stacklevel=3,
        )
        self._warned_unknown = True

    def pad(self, ids: np.ndarray, pad_token_id: int) -> np.ndarray:
        """Right-pad ``ids`` with ``pad_token_id`` to ``max_prompt_tokens`` (a new array)."""
        out = np.full(self.max_prompt_tokens, pad_token_id, dtype=np.int64)
        out[: ids.size] = ids
        return out


def check_encodable(text: str, where: str) -> None:
    r"""Raise a ``ValueError`` naming ``where`` if ``text`` is not valid Unicode.

    Python strings may hold lone surrogates (``"\ud814"``, e.g. from a bad decode with
    ``errors="surrogateescape"``); tokenizers refuse them with an unrelated ``TypeError``.

    Example:
        >>> check_encodable("the food", "prompts[0]")
        >>> check_encodable("bad \ud814", "prompts[1]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: prompts[1]='bad \ud814' holds '\ud814' at character 4, which is not valid ...
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{where}={short_repr(text)} holds {text[err.start]!r} at character {err.start}, "
            "which is not valid Unicode (a lone surrogate) and which no tokenizer can encode; "
            "expected valid text. Fix the text's decoding, or drop such characters with "
            "text.encode('utf-8', 'ignore').decode('utf-8')."
        ) from None
