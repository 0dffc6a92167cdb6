"""The ``info`` of an LM env step, built once for the bandit and the token env, single or vector.

A step of a batch of envs yields columns (one array per key, one entry per env). A single env's
``info`` is one row of them as plain Python values; a vector env's is the columns themselves in
Gymnasium's vector format, with a ``_key`` mask per key saying which envs hold a value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["info_columns", "object_array", "row_info", "vector_info"]


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (strings, arrays), as Gymnasium's vector infos hold them.

    Example:
        >>> object_array(["a", "b"])
        array(['a', 'b'], dtype=object)
    """
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def info_columns(
    *,
    prompts: list[str],
    completions: list[str],
    reward_model: np.ndarray,
    kl: np.ndarray,
    kl_coef: float,
    kl_form: str,
    completion_length: np.ndarray,
    eos: np.ndarray,
    length_limited: np.ndarray,
    episode_kl: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The reward parts of a batch of envs as (B,) arrays (new arrays, never views), by key.

    ``reward == reward_model - kl_coef * kl`` holds row by row. ``episode_kl`` (Σ k_t so far)
    is the token env's only extra key.

    Example:
        >>> columns = info_columns(prompts=["a"], completions=["b"],
        ...     reward_model=np.array([1.0]), kl=np.array([2.0]), kl_coef=0.5,
        ...     kl_form="policy", completion_length=np.array([1]), eos=np.array([True]),
        ...     length_limited=np.array([False]))
        >>> row_info(columns, {}, np.array([False]), 0)["kl"]
        2.0
    """
    n = len(prompts)
    columns: dict[str, np.ndarray] = {
        "prompt": object_array(prompts),
        "completion": object_array(completions),
        "reward_model": np.asarray(reward_model, dtype=np.float64).copy(),
        "kl": np.asarray(kl, dtype=np.float64).copy(),
        "kl_coef": np.full(n, kl_coef, dtype=np.float64),
        "kl_form": object_array([kl_form] * n),
    }
    if episode_kl is not None:
        columns["episode_kl"] = np.asarray(episode_kl, dtype=np.float64).copy()
    columns["completion_length"] = np.asarray(completion_length, dtype=np.int64).copy()
    columns["eos"] = np.asarray(eos, dtype=np.bool_).copy()
    columns["length_limited"] = np.asarray(length_limited, dtype=np.bool_).copy()
    return columns


def row_info(
    columns: dict[str, np.ndarray],
    reward_parts: dict[str, np.ndarray],
    parts_rows: np.ndarray,
    index: int,
) -> dict[str, Any]:
    """One env's ``info``: row ``index`` of ``columns`` as plain Python values (new objects).

    ``reward_parts`` (each part's score of a ``WeightedSum`` reward) is added where
    ``parts_rows[index]``: the rows that were scored.
    """
    info: dict[str, Any] = {}
    for key, column in columns.items():
        value = column[index]
        info[key] = value.item() if isinstance(value, np.generic) else value
    if reward_parts and parts_rows[index]:
        info["reward_parts"] = {k: float(v[index]) for k, v in reward_parts.items()}
    return info


def vector_info(
    columns: dict[str, np.ndarray],
    reward_parts: dict[str, np.ndarray],
    parts_rows: np.ndarray,
    rows: np.ndarray,
) -> dict[str, Any]:
    """The ``info`` of the envs where ``rows`` is True, in Gymnasium's vector format.

    Arrays over all envs plus a ``_key`` mask per key; built column by column rather than env
    by env, so a batch of 64 costs a few array copies, not 64 dict merges. ``reward_parts`` is
    a nested dict of the same form, held by the rows in ``rows & parts_rows``.
    """
    info: dict[str, Any] = {key: column.copy() for key, column in columns.items()}
    with_parts = rows & parts_rows
    if reward_parts and with_parts.any():
        parts: dict[str, Any] = {k: v.astype(np.float64) for k, v in reward_parts.items()}
        parts.update({f"_{k}": with_parts.copy() for k in reward_parts})
        info["reward_parts"] = parts
    info.update({f"_{key}": rows.copy() for key in list(info)})
    return info
