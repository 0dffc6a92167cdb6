"""Parquet files of logged episodes: the JSONL format's fields as columns, through pyarrow.

A Parquet file holds one episode a row, with the columns of the JSONL format (see
:mod:`lmgym.offline.dataset`): ``prompt`` (string), ``prompt_ids`` and ``completion_ids``
(lists of int64), ``rewards`` (list of float64) or ``reward`` (float64), ``dones`` (list of
int8, optional) and ``tokenizer`` (string; Parquet's dictionary encoding stores the one
fingerprint once). Since every row of a Parquet file has every column, a null counts as a
field left out: a file may hold both ``reward`` and ``rewards`` columns if each row fills one.

This module only moves records between a file and Python dicts; the dataset checks each record
exactly as it checks a JSONL line, so both formats refuse the same things with the same
messages. pyarrow is optional (the ``parquet`` extra: ``pip install -e '.[parquet]'``) and is
imported only when a Parquet file is read or written, so importing lmgym stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["INSTALL", "read_records", "write_records"]

INSTALL = (
    "Parquet files of episodes need pyarrow, an optional dependency: pip install -e '.[parquet]' "
    "in lmgym's clone (the parquet extra), or pip install pyarrow. JSONL files (save_jsonl / "
    "load_jsonl) need nothing extra."
)
"""What the ImportError says when pyarrow is missing."""

_BATCH_ROWS = 1024  # rows converted to Python at a time: a large file is not held twice


def _pyarrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or a ModuleNotFoundError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ModuleNotFoundError(INSTALL, name="pyarrow") from err
    return pyarrow, pyarrow.parquet


def write_records(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Write episode records (:meth:`~lmgym.offline.dataset.Episode.as_record`) to ``path``.

    The directory of ``path`` is created once pyarrow is known to be installed.
    """
    pa, pq = _pyarrow()
    schema = pa.schema(
        [
            ("prompt", pa.string()),
            ("prompt_ids", pa.list_(pa.int64())),
            ("completion_ids", pa.list_(pa.int64())),
            ("rewards", pa.list_(pa.float64())),
            ("dones", pa.list_(pa.int8())),
            ("tokenizer", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(list(records), schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_records(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, record)`` for each row of the Parquet file ``path``, rows counted from 1.

    A record is the row as a dict without its null fields, ready for the JSONL checks.

    Raises:
        ModuleNotFoundError: pyarrow is not installed (:data:`INSTALL`).
        ValueError: ``path`` is not a readable Parquet file; the message starts with ``where``.
    """
    pa, pq = _pyarrow()
    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(_unreadable(where, err)) from None
    return _rows(parquet_file, where, pa.ArrowException)


def _rows(
    parquet_file: Any, where: str, arrow_error: type[Exception]
) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    try:
        for batch in parquet_file.iter_batches(batch_size=_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield row, {name: value for name, value in record.items() if value is not None}
    except (arrow_error, OSError) as err:
        raise ValueError(_unreadable(f"{where}, after row {row}", err)) from None


def _unreadable(where: str, err: Exception) -> str:
    return (
        f"{where}: not a readable Parquet file ({err}); expected one episode a row, as "
        "EpisodeDataset.save_parquet writes."
    )
