"""Parquet files of episodes: the round trip, the JSONL checks row by row, pyarrow missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmgym.cli import build_parser
from lmgym.config_cli import dataclass_from_args
from lmgym.models.loading import DEFAULT_MODEL_DIR, load_tokenizer
from lmgym.offline.command import ILQLCommandConfig
from lmgym.offline.dataset import Episode, EpisodeDataset, tokenizer_fingerprint
from tests.conftest import build_tiny_tokenizer


@pytest.fixture(scope="module")
def episodes() -> EpisodeDataset:
    """Episodes of the tiny tokenizer: per-token rewards, a cut episode, a one-token one."""
    return EpisodeDataset(
        [
            Episode("the soup was", [1, 5, 6], [7, 8, 2], [0.0, -0.25, 1.5]),
            Episode("the cat", [1, 9], [10, 11], [0.5, 0.0], dones=[0, 0]),  # cut: bootstrapped
            Episode("a", [1], [2], [-1.0]),
        ],
        tokenizer_fingerprint(build_tiny_tokenizer()),
    )


def test_jsonl_to_parquet_round_trip_keeps_every_episode(episodes, tmp_path: Path) -> None:
    from_jsonl = EpisodeDataset.load_jsonl(episodes.save_jsonl(tmp_path / "e.jsonl"))
    path = from_jsonl.save_parquet(tmp_path / "sub" / "e.parquet")
    loaded = EpisodeDataset.load_parquet(path, tokenizer=build_tiny_tokenizer())
    assert loaded == episodes
    assert loaded.episodes[1].dones == [0, 0]
    assert loaded.source == f"data={str(path)!r}"
    assert EpisodeDataset.load(path) == EpisodeDataset.load(tmp_path / "e.jsonl") == episodes
    assert pq.read_table(path).column_names == [
        "prompt", "prompt_ids", "completion_ids", "rewards", "dones", "tokenizer"
    ]  # fmt: skip


GOOD = {"prompt": "p", "prompt_ids": [1, 4], "completion_ids": [5, 2], "rewards": [0.0, 1.0],
        "tokenizer": "abc"}  # fmt: skip


def write(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def two_rows(**second: object) -> dict[str, pa.Array]:
    """GOOD twice as columns, the second row changed by ``second`` (a value, or a typed array)."""
    columns = {}
    for name in GOOD.keys() | second.keys():
        change = second.get(name, GOOD.get(name))
        if isinstance(change, pa.Array):
            columns[name] = change
        else:
            columns[name] = pa.array([GOOD.get(name), change])
    return columns


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({k: pa.array([v]) for k, v in GOOD.items() if k != "prompt"},
         "row 1: field 'prompt' is missing; expected a str"),
        (two_rows(prompt=None), "row 2: field 'prompt' is missing"),
        (two_rows(prompt=pa.array([3, 4])), "row 1: field 'prompt' is a int, expected a str"),
        (two_rows(prompt_ids=pa.array([[1.0], [1.5]])),
         "row 1: field 'prompt_ids' holds 1.0; expected a list of int ids"),
        (two_rows(completion_ids=pa.array([[5, 2], [5, None]])),
         "row 2: field 'completion_ids' holds None"),
        (two_rows(completion_ids=[]), "row 2: field 'completion_ids' is empty"),
        (two_rows(rewards=[1.0]), "row 2: field 'rewards' has 1 value\\(s\\) for 2 completion"),
        (two_rows(rewards=[0.0, float("inf")]), "row 2: field 'rewards' holds inf"),
        (two_rows(reward=pa.array([None, 1.0])), "row 2: both 'reward' and 'rewards'"),
        (two_rows(dones=pa.array([[0, 1], [1, 1]])), "row 2: field 'dones' is \\[1, 1\\]"),
        (two_rows(tokenizer="other"), "row 2: field 'tokenizer' is 'other' but earlier rows"),
    ],
    ids=["no-prompt-column", "null-prompt", "int-prompt", "float-ids", "null-id", "empty",
         "reward-length", "inf", "both", "dones", "mixed-tokenizers"],
)  # fmt: skip
def test_bad_rows_name_the_file_row_and_field(columns, message, tmp_path: Path) -> None:
    path = write(tmp_path / "bad.parquet", columns)
    with pytest.raises(ValueError, match=message) as error:
        EpisodeDataset.load_parquet(path)
    assert str(error.value).startswith(f"data={str(path)!r}, row ")


def test_reward_and_rewards_columns_may_share_a_file(tmp_path: Path) -> None:
    columns = two_rows(rewards=None, reward=pa.array([None, 0.5], pa.float64()))
    episodes = EpisodeDataset.load_parquet(write(tmp_path / "mixed.parquet", columns)).episodes
    assert [e.rewards for e in episodes] == [[0.0, 1.0], [0.0, 0.5]]
    assert episodes[1].dones == [0, 1]


def test_unreadable_empty_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    path.write_text('{"prompt": "p"}\n')
    with pytest.raises(ValueError, match="e.parquet'.*not a readable Parquet file"):
        EpisodeDataset.load_parquet(path)
    empty = {k: pa.array([], pa.string()) for k in ("prompt", "tokenizer")}
    with pytest.raises(ValueError, match="holds no episodes; expected one episode a row"):
        EpisodeDataset.load_parquet(write(path, empty))
    with pytest.raises(ValueError, match="does not exist; expected a Parquet file"):
        EpisodeDataset.load_parquet(tmp_path / "none.parquet")
    with pytest.raises(ValueError, match="suffix '.csv'; expected a .jsonl or a .parquet"):
        EpisodeDataset.load(tmp_path / "e.csv")


def test_another_tokenizer_or_ids_outside_the_vocabulary_are_refused(
    episodes, tmp_path: Path
) -> None:
    path = episodes.save_parquet(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="recorded with another tokenizer"):
        EpisodeDataset.load_parquet(path, tokenizer=load_tokenizer(DEFAULT_MODEL_DIR))
    with pytest.raises(ValueError, match="row 1: field 'prompt_ids' holds id 5 outside"):
        EpisodeDataset.load_parquet(path, tokenizer=build_tiny_tokenizer(), vocab_size=5)


def test_without_pyarrow_both_say_how_to_install_it(
    episodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = episodes.save_parquet(tmp_path / "e.parquet")
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # `import pyarrow` now fails
    install = "pip install -e '.\\[parquet\\]' in lmgym's clone"
    with pytest.raises(ModuleNotFoundError, match=install):
        episodes.save_parquet(tmp_path / "new" / "e.parquet")
    assert not (tmp_path / "new").exists()  # refused before anything was written
    with pytest.raises(ModuleNotFoundError, match=install):
        EpisodeDataset.load_parquet(path)
    assert EpisodeDataset.load_jsonl(episodes.save_jsonl(tmp_path / "e.jsonl")) == episodes


def parse(*args: str) -> ILQLCommandConfig:
    return dataclass_from_args(ILQLCommandConfig, build_parser("ilql").parse_args(["ilql", *args]))


def test_ilql_data_takes_a_parquet_file(episodes, tmp_path: Path) -> None:
    path = episodes.save_parquet(tmp_path / "e.parquet")
    assert parse("--data", str(path), "--out", str(tmp_path / "o")).data == path
    path.write_bytes(path.read_bytes()[:-40])  # a cut file is refused before anything loads
    with pytest.raises(ValueError, match="e.parquet'.*not a readable Parquet file"):
        parse("--data", str(path), "--out", str(tmp_path / "o"))
    other = tmp_path / "e.txt"
    other.write_text("")
    with pytest.raises(ValueError, match="data=.*e.txt' has the suffix '.txt'; expected a .jsonl"):
        parse("--data", str(other), "--out", str(tmp_path / "o"))
