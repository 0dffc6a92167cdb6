"""Logged text episodes for offline RL: the dataset type, its file formats and its checks.

An episode is one prompt and the completion a policy wrote for it, with the rewards it was paid
and where it ended: what offline RL (ILQL, filtered BC) learns from without asking a reward
model again. Token ids are stored as they were generated, so nothing is re-tokenized; the
tokenizer they belong to is recorded as a fingerprint (:func:`tokenizer_fingerprint`), and a
dataset read for another tokenizer is refused, since its ids would mean other words.

An episode is saved as one JSON object a line of a JSONL file (:meth:`EpisodeDataset.save_jsonl`;
blank lines are skipped, other keys are kept out), or as one row of a Parquet file
(:meth:`EpisodeDataset.save_parquet`, which needs pyarrow, the ``parquet`` extra; see
:mod:`lmgym.offline.parquet`). Both are read through the same checks, with the same messages.
The fields (the Parquet file's columns):

* ``prompt`` (str): the prompt text;
* ``prompt_ids`` (list of int, non-empty): the prompt's token ids, unpadded;
* ``completion_ids`` (list of int, non-empty): the completion's counted token ids (up to and
  including EOS, if it ended there);
* ``rewards`` (list of float, one per completion token), or ``reward`` (one float, paid at the
  last token);
* ``dones`` (optional list of 0/1, one per completion token; default: 1 at the last token):
  1 where the episode ended, so that nothing is bootstrapped past it; only the last token may
  carry a 1 (a 0 there means the episode was cut and its value is bootstrapped);
* ``tokenizer`` (str): the fingerprint of the tokenizer of the ids.

Example:
    >>> import os, tempfile
    >>> data = EpisodeDataset([Episode("the soup was", [1, 5], [7, 2], [0.0, 1.0])], "abc123")
    >>> path = data.save_jsonl(os.path.join(tempfile.mkdtemp(), "episodes.jsonl"))
    >>> EpisodeDataset.load_jsonl(path).episodes[0].completion_ids
    [7, 2]
    >>> path = data.save_parquet(path.with_suffix(".parquet"))
    >>> EpisodeDataset.load(path) == data  # the loader follows the suffix
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmgym.offline import parquet

if TYPE_CHECKING:  # the file format needs no transformers: `lmgym ilql --help` stays cheap
    from transformers import PreTrainedTokenizerBase

__all__ = ["Episode", "EpisodeDataset", "tokenizer_fingerprint"]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of ``tokenizer``'s vocabulary and special tokens (16 hex digits).

    Two tokenizers with the same fingerprint map every id to the same token.

    Example:
        >>> from lmgym.models.loading import DEFAULT_MODEL_DIR, load_tokenizer
        >>> len(tokenizer_fingerprint(load_tokenizer(DEFAULT_MODEL_DIR)))
        16
    """
    described = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
        "special": [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id],
    }
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


@dataclass
class Episode:
    """One logged episode: a prompt, the completion written for it, its rewards and end.

    Attributes:
        prompt: The prompt text.
        prompt_ids: The prompt's token ids, unpadded.
        completion_ids: The completion's counted token ids (T of them).
        rewards: One reward per completion token (T floats); an env that pays once pays at
            the last token.
        dones: One flag per completion token; 1 where the episode ended (no bootstrap past
            it). ``None``: ended at the last token.
    """

    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int]
    rewards: list[float]
    dones: list[int] | None = None

    def __post_init__(self) -> None:
        if self.dones is None:
            self.dones = [0] * (len(self.completion_ids) - 1) + [1]

    @property
    def total_reward(self) -> float:
        """The episode's return (γ = 1): the sum of its rewards."""
        return float(sum(self.rewards))

    def as_record(self, tokenizer_hash: str) -> dict[str, Any]:
        """The episode as one record: a JSONL line, or a Parquet row."""
        return {
            "prompt": self.prompt,
            "prompt_ids": list(self.prompt_ids),
            "completion_ids": list(self.completion_ids),
            "rewards": list(self.rewards),
            "dones": list(self.dones or []),
            "tokenizer": tokenizer_hash,
        }


@dataclass
class EpisodeDataset:
    """Logged episodes and the fingerprint of the tokenizer their ids belong to.

    Attributes:
        episodes: The episodes (at least one).
        tokenizer_hash: :func:`tokenizer_fingerprint` of the ids' tokenizer.
        source: Where the episodes came from (a file, or a description), for error messages.

    Example:
        >>> data = EpisodeDataset([Episode("p", [1], [5], [1.0]), Episode("p", [1], [6], [0.0])],
        ...                       "abc")
        >>> data.mean_return(), len(data.top_fraction(0.5))
        (0.5, 1)
    """

    episodes: list[Episode]
    tokenizer_hash: str
    source: str = field(default="episodes", compare=False)

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError(
                f"{self.source}: no episodes; expected at least one logged episode, e.g. from "
                "lmgym.offline.record_episodes(env, n=2000)."
            )
        for row, episode in enumerate(self.episodes, start=1):
            _check_episode(episode, f"{self.source}, row {row}")

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def returns(self) -> list[float]:
        """Every episode's return, in order."""
        return [episode.total_reward for episode in self.episodes]

    def mean_return(self) -> float:
        """The mean return of the episodes: the behaviour policy's mean reward."""
        return float(sum(self.returns()) / len(self.episodes))

    def top_fraction(self, fraction: float) -> EpisodeDataset:
        """The ``fraction`` of episodes with the highest returns (at least one): filtered BC's data.

        Ties at the cut are broken by order in the dataset (stable sort).
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction={fraction!r} is not a number; pass e.g. fraction=0.1.")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction!r} must lie in (0, 1]; pass e.g. fraction=0.1.")
        keep = max(1, round(fraction * len(self.episodes)))
        order = sorted(range(len(self.episodes)), key=lambda i: -self.episodes[i].total_reward)
        chosen = sorted(order[:keep])
        return EpisodeDataset(
            [self.episodes[i] for i in chosen],
            self.tokenizer_hash,
            source=f"top {fraction:.0%} of {self.source}",
        )

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
        """Refuse episodes of another tokenizer, or ids outside ``[0, vocab_size)``.

        Raises:
            ValueError: naming the source, the row and the field.
        """
        expected = tokenizer_fingerprint(tokenizer)
        if self.tokenizer_hash != expected:
            raise ValueError(
                f"{self.source}: field 'tokenizer' is {self.tokenizer_hash!r} but the model's "
                f"tokenizer is {expected!r}; the episodes were recorded with another tokenizer, "
                "so their ids would mean other words. Record them again with this model's "
                "tokenizer, or train the model they were recorded for."
            )
        for row, episode in enumerate(self.episodes, start=1):
            for name in ("prompt_ids", "completion_ids"):
                ids: list[int] = getattr(episode, name)
                bad = [i for i in ids if not 0 <= i < vocab_size]
                if bad:
                    raise ValueError(
                        f"{self.source}, row {row}: field {name!r} holds id {bad[0]} outside the "
                        f"vocabulary [0, {vocab_size}); expected ids of the model's tokenizer. "
                        "Was the file recorded with another model?"
                    )

    def save_jsonl(self, path: str | Path) -> Path:
        """Write one JSON object per episode to ``path`` (its directory is created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(e.as_record(self.tokenizer_hash)) for e in self.episodes]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def save_parquet(self, path: str | Path) -> Path:
        """Write one Parquet row per episode to ``path`` (its directory is created).

        The columns are the JSONL fields (see the module). Needs pyarrow.

        Raises:
            ModuleNotFoundError: pyarrow is not installed (the ``parquet`` extra).
        """
        path = Path(path)
        parquet.write_records([e.as_record(self.tokenizer_hash) for e in self.episodes], path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        vocab_size: int | None = None,
    ) -> EpisodeDataset:
        """Read a ``.jsonl`` (:meth:`load_jsonl`) or ``.parquet`` (:meth:`load_parquet`) file.

        Raises:
            ValueError: another suffix, or what the chosen loader refuses.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".parquet"):
            raise ValueError(
                f"data={str(path)!r} has the suffix {suffix or 'none'!r}; expected a .jsonl or "
                "a .parquet file of episodes (the suffix chooses the reader). Rename the file "
                "if it holds one of them."
            )
        loader = cls.load_jsonl if suffix == ".jsonl" else cls.load_parquet
        return loader(path, tokenizer=tokenizer, vocab_size=vocab_size)

    @classmethod
    def load_jsonl(
        cls,
        path: str | Path,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        vocab_size: int | None = None,
    ) -> EpisodeDataset:
        """Read and check a JSONL file of episodes (see the module for the format).

        With ``tokenizer`` (and ``vocab_size``, default ``len(tokenizer)``) the episodes are
        also checked to belong to it (:meth:`check_tokenizer`).

        Raises:
            ValueError: a missing file, invalid JSON, a wrong or missing field, an empty
                episode, rewards or dones of the wrong length, rows of different tokenizers:
                one line naming the file, the row (its line number) and the field.
        """
        path = Path(path)
        where = f"data={str(path)!r}"
        _check_is_file(path, where, "a JSONL file of episodes, one a line")
        records = _jsonl_records(path, where)
        return cls._from_records(records, where, "one JSON object a line", tokenizer, vocab_size)

    @classmethod
    def load_parquet(
        cls,
        path: str | Path,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        vocab_size: int | None = None,
    ) -> EpisodeDataset:
        """Read and check a Parquet file of episodes, one a row; needs pyarrow.

        Each row goes through :meth:`load_jsonl`'s checks (a null counts as a field left out),
        and ``tokenizer`` and ``vocab_size`` mean what they mean there.

        Raises:
            ModuleNotFoundError: pyarrow is not installed (the ``parquet`` extra).
            ValueError: a missing or unreadable file, or what :meth:`load_jsonl` refuses: one
                line naming the file, the row (counted from 1) and the field.
        """
        path = Path(path)
        where = f"data={str(path)!r}"
        _check_is_file(path, where, "a Parquet file of episodes, one a row")
        records = parquet.read_records(path, where)
        return cls._from_records(records, where, "one episode a row", tokenizer, vocab_size)

    @classmethod
    def _from_records(
        cls,
        records: Iterable[tuple[int, Any]],
        where: str,
        layout: str,
        tokenizer: PreTrainedTokenizerBase | None,
        vocab_size: int | None,
    ) -> EpisodeDataset:
        """The dataset of ``(row, record)`` pairs, each checked; errors start with ``where``."""
        episodes: list[Episode] = []
        tokenizer_hash: str | None = None
        for row, record in records:
            at = f"{where}, row {row}"
            episode, row_hash = _episode_from_record(record, at)
            if tokenizer_hash is not None and row_hash != tokenizer_hash:
                raise ValueError(
                    f"{at}: field 'tokenizer' is {row_hash!r} but earlier rows have "
                    f"{tokenizer_hash!r}; one file holds the ids of one tokenizer."
                )
            tokenizer_hash = row_hash
            episodes.append(episode)
        if tokenizer_hash is None:
            raise ValueError(f"{where} holds no episodes; expected {layout}.")
        data = cls(episodes, tokenizer_hash, source=where)
        if tokenizer is not None:
            data.check_tokenizer(tokenizer, len(tokenizer) if vocab_size is None else vocab_size)
        return data


def _check_is_file(path: Path, where: str, expected: str) -> None:
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"{where} {state}; expected {expected}.")


def _jsonl_records(path: Path, where: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object)`` for each non-blank line of the JSONL file ``path``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}, row {number}: invalid JSON ({err.msg} at column {err.colno}); "
                "expected one episode object a line."
            ) from None


def _episode_from_record(record: Any, at: str) -> tuple[Episode, str]:
    """The episode of one record (a JSONL line or a Parquet row) and its tokenizer fingerprint.

    Raises:
        ValueError: naming ``at`` (the file and the row) and the field.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{at}: a JSON {type(record).__name__}, not an episode object.")
    prompt = _field(record, "prompt", at, str)
    tokenizer_hash = _field(record, "tokenizer", at, str)
    prompt_ids = _int_list(record, "prompt_ids", at)
    completion_ids = _int_list(record, "completion_ids", at)
    if "rewards" in record and "reward" in record:
        raise ValueError(f"{at}: both 'reward' and 'rewards' are given; keep one of them.")
    if "reward" in record:
        final = _number(record["reward"], at, "reward")
        rewards = [0.0] * (len(completion_ids) - 1) + [final] if completion_ids else [final]
    elif "rewards" in record:
        values = record["rewards"]
        if not isinstance(values, list):
            raise ValueError(f"{at}: field 'rewards' is not a list; expected one float a token.")
        rewards = [_number(value, at, "rewards") for value in values]
    else:
        raise ValueError(
            f"{at}: field 'rewards' is missing; expected 'rewards' (one float per completion "
            "token) or 'reward' (one float, paid at the last token)."
        )
    dones = None
    if "dones" in record:
        dones = _int_list(record, "dones", at, allow_empty=True)
    return Episode(prompt, prompt_ids, completion_ids, rewards, dones), tokenizer_hash


def _field(record: dict[str, Any], name: str, at: str, kind: type) -> Any:
    if name not in record:
        raise ValueError(f"{at}: field {name!r} is missing; expected a {kind.__name__}.")
    value = record[name]
    if not isinstance(value, kind):
        raise ValueError(
            f"{at}: field {name!r} is a {type(value).__name__}, expected a {kind.__name__}."
        )
    return value


def _int_list(record: dict[str, Any], name: str, at: str, *, allow_empty: bool = True) -> list[int]:
    values = _field(record, name, at, list)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ValueError(f"{at}: field {name!r} holds {bad[0]!r}; expected a list of int ids.")
    return list(values)


def _number(value: Any, at: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{at}: field {name!r} holds {value!r}; expected finite numbers.")
    return float(value)


def _check_episode(episode: Episode, at: str) -> None:
    """Refuse an empty episode, or rewards/dones that do not give one value per token."""
    if not episode.prompt_ids:
        raise ValueError(f"{at}: field 'prompt_ids' is empty; expected the prompt's token ids.")
    n = len(episode.completion_ids)
    if n == 0:
        raise ValueError(
            f"{at}: field 'completion_ids' is empty: an episode with no completion token has "
            "no transition to learn from; drop it."
        )
    if len(episode.rewards) != n:
        raise ValueError(
            f"{at}: field 'rewards' has {len(episode.rewards)} value(s) for {n} completion "
            "token(s); expected one reward per token (or one 'reward' for the last token)."
        )
    dones: Sequence[int] = episode.dones or []
    if len(dones) != n:
        raise ValueError(
            f"{at}: field 'dones' has {len(dones)} flag(s) for {n} completion token(s); "
            "expected one 0/1 flag per token."
        )
    if any(flag not in (0, 1) for flag in dones) or any(dones[:-1]):
        raise ValueError(
            f"{at}: field 'dones' is {list(dones)!r:.80}; expected 0 everywhere but the last "
            "token, which is 1 if the episode ended there (0 if it was cut)."
        )
