"""Where LM environments get their prompts, tokenized once and held as ids.

A prompt list is tokenized at construction (bad prompts fail before any episode runs); a prompt
callable is tokenized when it is drawn, with a cache, so no text is tokenized twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

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
        if callable(prompts):
            self._draw_fn = prompts
            return
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts={prompts!r:.80} is not a list of strings or a callable; expected e.g. "
                "prompts=['the food was', 'i thought the staff'] or prompts=lambda rng: ..."
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
        """Token ids of ``text`` (cached), validated against ``max_prompt_tokens``."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if not isinstance(text, str):
            raise TypeError(f"{where}={text!r} is not a str; expected prompt text.")
        ids = np.asarray(self.tokenizer(text)["input_ids"], dtype=np.int64)
        if ids.size == 0:
            raise ValueError(f"{where}={text!r} has no tokens; expected a non-empty prompt.")
        if self.tokenizer.pad_token_id is not None and np.any(ids == self.tokenizer.pad_token_id):
            raise ValueError(
                f"{where}={text!r} contains the pad token {self.tokenizer.pad_token!r}; the "
                "observation marks padding with it, so prompts must not contain it."
            )
        if ids.size > self.max_prompt_tokens:
            if not self.truncate_prompts:
                raise ValueError(
                    f"{where}={text!r} has {ids.size} tokens, more than "
                    f"max_prompt_tokens={self.max_prompt_tokens}; raise max_prompt_tokens, "
                    "shorten the prompt, or pass truncate_prompts=True to keep its last tokens."
                )
            ids = ids[-self.max_prompt_tokens :]
        if len(self._cache) >= _MAX_CACHED_PROMPTS and self._draw_fn is not None:
            self._cache.clear()  # a callable may never repeat itself: keep memory bounded
        self._cache[text] = ids
        return ids

    def pad(self, ids: np.ndarray, pad_token_id: int) -> np.ndarray:
        """Right-pad ``ids`` with ``pad_token_id`` to ``max_prompt_tokens`` (a new array)."""
        out = np.full(self.max_prompt_tokens, pad_token_id, dtype=np.int64)
        out[: ids.size] = ids
        return out
