"""Your own data for the RLHF stages: JSONL files of demonstrations, preferences and rankings.

``lmgym sft``, ``lmgym reward-model`` and ``lmgym dpo`` take ``--data FILE`` in place of their
simulated labelers. A file holds one JSON object per line (blank lines are skipped, other keys
are ignored):

* demonstrations (``sft``): ``{"prompt": "...", "completion": "..."}``;
* pairwise preferences (``reward-model``, ``dpo``): ``{"prompt", "chosen", "rejected"}``;
* rankings of K >= 2 completions (``reward-model``, ``dpo``):
  ``{"prompt": "...", "completions": [best, ..., worst]}``. A ranking is read as a
  :class:`~lmgym.rlhf.rankings.Ranking` of its completions in that order, and a pair as a
  ranking of two, so both train the reward model and DPO as the simulated rankings do.

Every problem is a one-line ``ValueError`` naming the file, the line and the field, raised when
the command's config is built: before any model is loaded or any output directory is touched.
The stages hold out :func:`heldout_split`'s share of the prompts to measure on. This module
imports nothing heavy, so building the commands' parsers stays cheap.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "prefs.jsonl")
    >>> _ = open(path, "w").write('{"prompt": "the soup was", "chosen": "great .", '
    ...                           '"rejected": "cold ."}')
    >>> read_preferences(path)
    [('the soup was', ['great .', 'cold .'])]
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = [
    "HELDOUT_FRACTION",
    "check_data",
    "heldout_split",
    "read_demonstrations",
    "read_preferences",
]

HELDOUT_FRACTION = 0.1
"""Share of the distinct prompts whose records SFT and DPO hold out to measure on."""

Kind = Literal["demonstrations", "preferences"]
T = TypeVar("T")

_DEMO = '{"prompt": "...", "completion": "..."}'
_PAIR = '{"prompt": "...", "chosen": "...", "rejected": "..."}'
_RANKING = '{"prompt": "...", "completions": ["best", "...", "worst"]}'


def _records(path: str | Path, expected: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line; a one-line ValueError otherwise."""
    path = Path(path)
    where = f"data={str(path)!r}"
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"{where} {state}; expected a JSONL file, one {expected} a line.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not UTF-8 text ({err.reason}); save it as UTF-8.") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}, line {number}: invalid JSON ({err.msg} at column {err.colno}); "
                f"expected one object a line, {expected}."
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{where}, line {number}: a JSON {type(record).__name__}, not an object; "
                f"expected {expected}."
            )
        records.append((number, record))
    if not records:
        raise ValueError(f"{where} is empty (no records); expected one {expected} a line.")
    return records


def _text(where: str, record: dict[str, Any], field: str, expected: str) -> str:
    """``record[field]`` if it is a string (a non-blank one, except the prompt)."""
    if field not in record:
        raise ValueError(f"{where}: field {field!r} is missing; expected {expected}.")
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: field {field!r} is a {type(value).__name__}, not a string; expected "
            f"{expected}."
        )
    if field != "prompt" and not value.strip():
        raise ValueError(f"{where}: field {field!r} is empty; expected some text.")
    return value


def read_demonstrations(path: str | Path) -> list[tuple[str, str]]:
    """``(prompt, completion)`` pairs of a JSONL file of demonstrations, for SFT.

    Raises:
        ValueError: A missing or empty file, invalid JSON, or a line without string
            ``prompt`` and ``completion`` fields; the message names the file, line and field.
    """
    demos = []
    for number, record in _records(path, _DEMO):
        where = f"data={str(path)!r}, line {number}"
        demos.append((_text(where, record, "prompt", _DEMO),
                      _text(where, record, "completion", _DEMO)))  # fmt: skip
    return demos


def read_preferences(path: str | Path) -> list[tuple[str, list[str]]]:
    """``(prompt, completions best first)`` of a JSONL file of pairs and/or rankings.

    A pair ``{"prompt", "chosen", "rejected"}`` gives ``(prompt, [chosen, rejected])``; a ranking
    ``{"prompt", "completions": [best, ..., worst]}`` gives its K >= 2 completions in order.

    Raises:
        ValueError: A missing or empty file, invalid JSON, a line that is neither a pair nor a
            ranking (or both), or fields of the wrong type; the message names the file, line and
            field.
    """
    expected = f"{_PAIR} or {_RANKING}"
    items = []
    for number, record in _records(path, expected):
        where = f"data={str(path)!r}, line {number}"
        prompt = _text(where, record, "prompt", expected)
        if "completions" in record:
            if "chosen" in record or "rejected" in record:
                raise ValueError(
                    f"{where}: field 'completions' next to 'chosen'/'rejected'; a line is "
                    f"either a pair, {_PAIR}, or a ranking, {_RANKING}."
                )
            completions = record["completions"]
            if not isinstance(completions, list) or len(completions) < 2:
                raise ValueError(
                    f"{where}: field 'completions' is {json.dumps(completions)[:60]}; expected "
                    "a list of K >= 2 strings, best first."
                )
            for index, text in enumerate(completions):
                _text(where, {f"completions[{index}]": text}, f"completions[{index}]", _RANKING)
            items.append((prompt, list(completions)))
        else:
            items.append((prompt, [_text(where, record, "chosen", _PAIR),
                                   _text(where, record, "rejected", _PAIR)]))  # fmt: skip
    return items


def check_data(kind: Kind, *, min_prompts: int = 1) -> Any:
    """A config field check: None, or a path whose records are valid ``kind`` (read once here).

    ``min_prompts`` > 1 also asks for that many distinct prompts (a stage that must hold some
    out to measure on).

    Example:
        >>> check_data("demonstrations")("data", "no/such.jsonl")
        Traceback (most recent call last):
        ...
        ValueError: data='no/such.jsonl' does not exist; expected a JSONL file, one {"prompt": "...", "completion": "..."} a line.
    """  # noqa: E501 - a doctest traceback line cannot be wrapped
    read = read_demonstrations if kind == "demonstrations" else read_preferences

    def check(name: str, value: Any) -> Path | None:
        if value is None:
            return None
        prompts = {item[0] for item in read(value)}
        if len(prompts) < min_prompts:
            raise ValueError(
                f"{name}={str(value)!r} holds {len(prompts)} distinct prompt(s); the stage holds "
                f"out part of the prompts to measure on, so it needs at least {min_prompts}."
            )
        return Path(value)

    return check


def heldout_split(
    items: Sequence[T], prompt_of: Any, seed: int, fraction: float = HELDOUT_FRACTION
) -> tuple[list[T], list[T]]:
    """``(train, heldout)``: the items of a seeded ``fraction`` of the distinct prompts held out.

    At least one prompt is held out and at least one kept; a file with a single distinct prompt
    holds out nothing (``heldout`` is empty). The same file and seed give the same split.

    Example:
        >>> items = [("a", 1), ("b", 2), ("a", 3)]
        >>> train, held = heldout_split(items, lambda item: item[0], seed=0, fraction=0.5)
        >>> sorted(train + held) == sorted(items), len({p for p, _ in held})
        (True, 1)
    """
    distinct = sorted({prompt_of(item) for item in items})
    if len(distinct) < 2:
        return list(items), []
    n_heldout = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    heldout = set(random.Random(seed).sample(distinct, n_heldout))
    return ([item for item in items if prompt_of(item) not in heldout],
            [item for item in items if prompt_of(item) in heldout])  # fmt: skip
