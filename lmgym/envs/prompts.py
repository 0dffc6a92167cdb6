"""Where LM environments get their prompts, tokenized once and held as ids.

A prompt list is tokenized at construction (bad prompts fail before any episode runs); a prompt
callable is tokenized when it is drawn, with a cache, so no text is tokenized twice.

A prompt is text, or a chat: a list of messages such as ``[{"role": "user", "content": "..."}]``.
A chat is rendered with the tokenizer's chat template and its generation prompt (the opening of
the assistant's turn), so the completion is the assistant's reply; the tokenizer's EOS token ends
it (chat checkpoints set EOS to their end-of-turn token, e.g. Qwen's ``<|im_end|>``). What the
env reports as the prompt (``info["prompt"]``, the reward function's ``prompts``) is the user's
text: the last user message's content, without template markup. A reward function that wants
the rendered form takes ``prompt_ids`` and decodes them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from lmgym.error import short_repr

__all__ = [
    "ChatMessages",
    "Prompt",
    "PromptSource",
    "PromptSpec",
    "check_chat",
    "check_encodable",
    "is_chat",
]

ChatMessages = Sequence[Mapping[str, str]]
"""A chat prompt: messages ``{"role": ..., "content": ...}``, ending with the user's turn."""

Prompt = str | ChatMessages
"""One prompt: text, or a chat rendered with the tokenizer's chat template."""

PromptSpec = Sequence[Prompt] | Callable[[np.random.Generator], Prompt]
"""A list of prompts, or a function that draws one prompt from the env's ``np_random``."""

_MAX_CACHED_PROMPTS = 65_536


class PromptSource:
    """Draws prompts from a list or a callable and returns their token ids.

    Args:
        prompts: A non-empty list of prompts (texts or chats), or ``f(np_random) -> prompt``.
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
        self._cache: dict[str, tuple[str, np.ndarray]] = {}
        self._draw_fn: Callable[[np.random.Generator], Prompt] | None = None
        self._texts: list[Prompt] = []
        self._warned_unknown = False
        if callable(prompts):
            self._draw_fn = prompts
            return
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts={short_repr(prompts)} is not a list of strings (or chats) or a callable; "
                "expected "
                "e.g. prompts=['the food was', 'i thought the staff'], a list of chats "
                "([[{'role': 'user', 'content': '...'}], ...]) or prompts=lambda rng: ..."
            )
        if len(prompts) == 0:
            raise ValueError(
                "prompts=[] is empty; expected at least one prompt text, or omit prompts= to use "
                "the default prompt set."
            )
        if is_chat(prompts):
            raise TypeError(
                f"prompts={short_repr(prompts)} is one chat, not a list of prompts; expected a "
                "list of chats, e.g. prompts=[[{'role': 'user', 'content': '...'}]]."
            )
        self._texts = list(prompts)
        for index, text in enumerate(self._texts):
            self.prepare(text, where=f"prompts[{index}]")

    def __len__(self) -> int:
        """Number of prompts in the list (0 for a callable source)."""
        return len(self._texts)

    @property
    def texts(self) -> list[Prompt]:
        """The prompt list (empty for a callable source)."""
        return list(self._texts)

    def draw(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """Draw one prompt with ``rng`` (the env's ``np_random``); return its text and ids."""
        if self._draw_fn is not None:
            return self.prepare(self._draw_fn(rng), where="the prompts callable's result")
        return self.prepare(self._texts[int(rng.integers(len(self._texts)))])

    def encode(self, text: Prompt, *, where: str = "prompt") -> np.ndarray:
        """Token ids of a prompt (text or chat; cached), validated against ``max_prompt_tokens``."""
        return self.prepare(text, where=where)[1]

    def prepare(self, prompt: Prompt, *, where: str = "prompt") -> tuple[str, np.ndarray]:
        """The text the env reports for ``prompt`` and its token ids (cached).

        Raises ``TypeError`` for something that is neither text nor a chat, and ``ValueError``
        for a chat with no chat template, or text the tokenizer cannot encode, with no tokens,
        holding the pad token, or too long; each names ``where``.
        """
        if isinstance(prompt, str):
            key, shown, text, special = prompt, prompt, prompt, True
        elif is_chat(prompt):
            messages = check_chat(prompt, where)
            key = json.dumps(messages)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            shown = next(m["content"] for m in reversed(messages) if m["role"] == "user")
            text, special = self._render_chat(messages, where), False
        else:
            raise TypeError(
                f"{where}={short_repr(prompt)} has type {type(prompt).__name__}; expected prompt "
                "text (a str) or a chat (a list of {'role': ..., 'content': ...} messages)."
            )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        ids = self._encode_text(text, where, add_special_tokens=special)
        if len(self._cache) >= _MAX_CACHED_PROMPTS and self._draw_fn is not None:
            self._cache.clear()  # a callable may never repeat itself: keep memory bounded
        self._cache[key] = (shown, ids)
        return shown, ids

    def _render_chat(self, messages: list[dict[str, str]], where: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{where} is a chat, but the tokenizer {type(self.tokenizer).__name__} has no "
                "chat template; expected a chat model's tokenizer (one with "
                "tokenizer.chat_template set). Pass the prompt as plain text, or set "
                "tokenizer.chat_template before creating the env."
            )
        rendered = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        assert isinstance(rendered, str), type(rendered)
        return rendered

    def _encode_text(self, text: str, where: str, *, add_special_tokens: bool) -> np.ndarray:
        check_encodable(text, where)
        # A rendered chat already holds the template's special tokens (BOS included).
        encoded = self.tokenizer(
            text,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=self.tokenizer.is_fast,
        )
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        self._warn_unknown_words(text, ids, encoded.get("offset_mapping"), where)
        if ids.size == 0:
            raise ValueError(
                f"{where}={short_repr(text)} has no tokens; expected a non-empty prompt."
            )
        if self.tokenizer.pad_token_id is not None and np.any(ids == self.tokenizer.pad_token_id):
            if not add_special_tokens:  # a rendered chat: the template wrote the pad token
                raise ValueError(
                    f"{where} renders with the chat template to {short_repr(text)}, which "
                    f"contains the pad token {self.tokenizer.pad_token!r} (pad == EOS, the "
                    "end-of-turn token the template writes); the observation marks padding "
                    "with it, so prompts must not contain it. Fix: give the tokenizer a pad "
                    "token the template never writes, e.g. tokenizer.pad_token = "
                    "'<|endoftext|>' where the vocabulary has one."
                )
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


def is_chat(value: Any) -> bool:
    """Whether ``value`` is a chat (a non-empty list of message mappings), not text."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def check_chat(messages: ChatMessages, where: str) -> list[dict[str, str]]:
    """The chat as plain dicts, or a ``ValueError`` naming ``where`` and what is wrong.

    Every message needs a string ``role`` and ``content``, and some message must be the user's
    (its content is what the env reports as the prompt).

    Example:
        >>> check_chat([{"role": "user", "content": "hi"}], "prompts[0]")
        [{'role': 'user', 'content': 'hi'}]
    """
    out = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(
                f"{where}[{index}]={short_repr(dict(message))} is not a chat message; expected "
                "{'role': str, 'content': str}, e.g. {'role': 'user', 'content': 'hello'}."
            )
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise ValueError(
            f"{where}={short_repr(out)} has no user message; expected a chat that ends with the "
            "user's turn, e.g. [{'role': 'user', 'content': '...'}]."
        )
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
