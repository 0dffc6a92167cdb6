"""The pieces of a text game: the conversation's token ids, and the default describe / parse.

:class:`~lmgym.envs.text_game.TextGameEnv` plays any Gymnasium env with a discrete action space
as a conversation: the game's state is described in text (``describe``), the LM answers, and the
answer is read back into an action (``parse``). This module holds what the env is built from:

- :class:`ConversationCodec`: the conversation so far as token ids, either plain text segments
  (the LM's own reply ids kept as it wrote them) or a chat rendered by the tokenizer's template;
- :class:`ActionNames`: the default ``parse``, which finds an action's name in the reply;
- :class:`AnsiDescription`: the default ``describe`` for envs with ``render_mode="ansi"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from transformers import PreTrainedTokenizerBase

from lmgym.envs.prompts import check_encodable
from lmgym.error import short_repr

__all__ = [
    "ActionNames",
    "AnsiDescription",
    "ConversationCodec",
    "ConversationState",
    "Describe",
    "Parse",
    "check_description",
    "reply_length",
]

Describe = Callable[[gym.Env, Any, dict[str, Any]], str]
"""``describe(game, observation, info) -> str``: the game's state in words, for the LM.

``game`` is the inner env (its layout, map or rules may live there, not in the observation)."""

Parse = Callable[[str], Any]
"""``parse(reply) -> action``: the inner env's action the reply names, or ``None`` if none."""


def check_description(text: Any, where: str) -> str:
    """Return ``text`` if ``describe`` gave a non-empty string, else raise naming ``where``.

    Example:
        >>> check_description("the cat is at ( 0 , 0 ) .", "describe")
        'the cat is at ( 0 , 0 ) .'
    """
    if not isinstance(text, str):
        raise TypeError(
            f"{where} returned {short_repr(text)} (type {type(text).__name__}); expected the "
            "game's state as a str, e.g. 'The cat is at (1, 2). Which way?'. Fix the describe "
            "function (signature describe(game, observation, info) -> str)."
        )
    if not text.strip():
        raise ValueError(
            f"{where} returned {text!r}, an empty text; expected a description of the game's "
            "state for the LM to answer."
        )
    check_encodable(text, where)
    return text


@dataclass(frozen=True)
class ConversationState:
    """A conversation at one moment: its messages and the token ids the LM reads.

    Attributes:
        messages: ``(role, text)`` pairs: ``system``, ``user`` (the game speaks) and
            ``assistant`` (the LM's replies, decoded). Always the whole conversation.
        ids: The token ids the LM reads (no padding), int64: the whole conversation, or, with
            a window of recent turns, its opening and those turns.
        segments: Without a chat template, the pieces ``ids`` is joined from: the opening's
            ids, then each turn's (the reply's own ids and the game's answer). Empty with one.
    """

    messages: tuple[tuple[str, str], ...]
    ids: np.ndarray
    segments: tuple[np.ndarray, ...] = ()


class ConversationCodec:
    """Turns a conversation into token ids, one turn at a time.

    Without a chat template the ids are segments laid end to end: the opening (system text and
    the first description, with the tokenizer's special tokens, e.g. a BOS), then each reply's
    own token ids as the LM wrote them (up to and including its EOS), then the game's answer.
    The LM therefore sees its earlier replies exactly as it sampled them; nothing is decoded and
    re-encoded. With a chat template the messages are rendered by the template, with the
    generation prompt, and tokenized again each turn (the earlier replies as their decoded text,
    which is what a chat model sees at inference).

    With ``recent_turns=k`` the LM reads the opening and only the last ``k`` turns (a turn: a
    reply and the game's answer to it); the turns between are left out of ``ids`` (they stay in
    ``messages``). A game whose every description holds its whole state loses nothing by it,
    and every turn then costs the LM the same few dozen tokens, however long the game.

    Args:
        tokenizer: The env's tokenizer.
        chat: Render with ``tokenizer.chat_template`` (the tokenizer must have one).
        pad_token_id: Marks padding in observations: no conversation may hold it.
        recent_turns: Turns the LM reads after the opening; ``None``: all of them.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        chat: bool,
        pad_token_id: int,
        recent_turns: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.chat = chat
        self.pad_token_id = pad_token_id
        self.recent_turns = recent_turns

    def opening(self, system: str | None, text: str) -> ConversationState:
        """The conversation's first turn: optional system text, then the first description."""
        messages: tuple[tuple[str, str], ...] = ((("system", system),) if system else ()) + (
            ("user", text),
        )
        if self.chat:
            return ConversationState(messages, self._render(messages))
        plain = f"{system}\n{text}" if system else text
        ids = self._encode(plain, special=True, where="describe")
        return ConversationState(messages, ids, (ids,))

    def extend(
        self, state: ConversationState, reply_ids: np.ndarray, reply: str, answer: str
    ) -> ConversationState:
        """``state`` followed by the LM's reply (its counted ids) and the game's answer."""
        messages = state.messages + (("assistant", reply), ("user", answer))
        if self.chat:
            opened = 2 if messages[0][0] == "system" else 1
            said = messages[opened:]  # two messages a turn: the reply, the game's answer
            if self.recent_turns is not None:
                said = said[-2 * self.recent_turns :]
            return ConversationState(messages, self._render(messages[:opened] + said))
        own = reply_ids[reply_ids != self.pad_token_id]  # a pad id ends a reply; it is no text
        answer_ids = self._encode("\n" + answer, special=False, where="describe")
        segments = state.segments + (np.concatenate([own, answer_ids]),)
        turns = segments[1:]
        if self.recent_turns is not None:
            turns = turns[-self.recent_turns :]
        return ConversationState(messages, np.concatenate([segments[0], *turns]), segments)

    def _render(self, messages: tuple[tuple[str, str], ...]) -> np.ndarray:
        chat = [{"role": role, "content": text} for role, text in messages]
        rendered = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=False
        )
        assert isinstance(rendered, str), type(rendered)
        # The template writes its own special tokens (BOS included).
        return self._encode(rendered, special=False, where="the chat template's rendering")

    def _encode(self, text: str, *, special: bool, where: str) -> np.ndarray:
        ids = np.asarray(
            # verbose=False: a conversation past the model's positions is the env's to report.
            self.tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"],
            dtype=np.int64,
        )
        if np.any(ids == self.pad_token_id):
            raise ValueError(
                f"{where} gave {short_repr(text)}, which contains the pad token "
                f"{self.tokenizer.pad_token!r}; the observation marks padding with it, so the "
                "conversation must not contain it. Remove it from the text (or give the "
                "tokenizer a pad token that no text uses)."
            )
        return ids


def reply_length(reply_ids: np.ndarray, eos_token_id: int, pad_token_id: int) -> int:
    """Tokens a reply counts: up to and including its first EOS or pad id, else all of them.

    The LM envs' rule (an action's text ends at the first EOS or pad id).

    Example:
        >>> reply_length(np.array([7, 2, 9]), eos_token_id=2, pad_token_id=0)
        2
        >>> reply_length(np.array([7, 8, 9]), eos_token_id=2, pad_token_id=0)
        3
    """
    ends = np.flatnonzero((reply_ids == eos_token_id) | (reply_ids == pad_token_id))
    return int(ends[0]) + 1 if ends.size else int(reply_ids.size)


class ActionNames:
    """The default ``parse``: the action whose name the reply says first (``None`` if none).

    Names are matched as whole words, ignoring case, so ``"Up!"`` reads as ``up`` and
    ``"upward"`` does not. When a reply names several actions the earliest one counts.

    Args:
        names: One name per action of a ``Discrete(n)`` space, in action order.
        start: The space's ``start`` (the first action's value).

    Example:
        >>> parse = ActionNames(("up", "right", "down", "left"))
        >>> parse("I go Left."), parse("down then up"), parse("jump") is None
        (3, 2, True)
    """

    def __init__(self, names: Sequence[str], start: int = 0) -> None:
        if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
            raise TypeError(
                f"action_names={short_repr(names)} is not a list of non-empty strings; expected "
                "one name per action in action order, e.g. ('up', 'right', 'down', 'left')."
            )
        lowered = [n.strip().lower() for n in names]
        if len(set(lowered)) != len(lowered):
            raise ValueError(
                f"action_names={short_repr(list(names))} repeats a name; expected one distinct "
                "name per action, so a reply names one action."
            )
        self.names = tuple(names)
        self.start = int(start)
        alternatives = "|".join(re.escape(n) for n in sorted(lowered, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)
        self._index = {name: i for i, name in enumerate(lowered)}

    def __call__(self, reply: str) -> int | None:
        """The action the reply names first, or ``None``."""
        match = self._pattern.search(reply)
        if match is None:
            return None
        return self.start + self._index[match.group(1).lower()]

    def choices(self) -> str:
        """The names as a list for a question: ``"up, right, down or left"``."""
        if len(self.names) == 1:
            return self.names[0]
        return ", ".join(self.names[:-1]) + f" or {self.names[-1]}"


class AnsiDescription:
    """The default ``describe``: the game's ``ansi`` rendering and the question.

    Needs the inner env built with ``render_mode="ansi"``.

    Args:
        question: The text after the picture, e.g. ``"Which move: up, right, down or left?"``.
    """

    def __init__(self, question: str) -> None:
        self.question = question

    def __call__(self, game: gym.Env, observation: Any, info: dict[str, Any]) -> str:
        """``game.render()`` followed by the question."""
        picture = game.render()
        if not isinstance(picture, str):
            raise TypeError(
                f"the game's render() returned {type(picture).__name__}, not text; the default "
                "describe needs the game made with render_mode='ansi'. Pass describe=... ."
            )
        return f"{picture.strip()}\n{self.question}"
