"""``lmgym ilql``: its options are checked in-process; one quick run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmgym.cli import build_parser, main
from lmgym.config_cli import dataclass_from_args
from lmgym.offline.command import ILQLCommandConfig, results_table
from tests.helpers import run_cli


def parse(*args: str) -> ILQLCommandConfig:
    return dataclass_from_args(ILQLCommandConfig, build_parser("ilql").parse_args(["ilql", *args]))


def test_options_come_from_the_config(tmp_path: Path) -> None:
    config = parse("--collect", "100", "--out", str(tmp_path / "o"), "--betas", "0", "2",
                   "--tau", "0.9")  # fmt: skip
    assert config.collect == 100 and config.betas == (0.0, 2.0) and config.tau == 0.9
    quick = parse("--quick", "--out", str(tmp_path / "q"))
    assert (quick.collect, quick.epochs, quick.eval_samples) == (64, 1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one, --data FILE"),
        (["--collect", "10", "--data", "x.jsonl"], "does not exist"),
        (["--collect", "0"], "collect=0 is not an int >= 1"),
        (["--collect", "10", "--betas", "-1"], "one or more finite numbers >= 0"),
        (["--collect", "10", "--tau", "1"], "tau=1.0 must lie in \\(0, 1\\)"),
        (["--collect", "10", "--beta", "-2"], "beta=-2.0 must be a finite number >= 0"),
    ],
    ids=["neither", "missing-file", "collect", "betas", "tau", "beta"],
)
def test_bad_options_are_refused(args, message, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        parse(*args, "--out", str(tmp_path / "o"))


def test_a_bad_data_file_stops_the_command_before_any_work(tmp_path: Path, capsys) -> None:
    data = tmp_path / "episodes.jsonl"
    data.write_text('{"prompt": "p", "prompt_ids": [1], "completion_ids": [], "reward": 1.0, '
                    '"tokenizer": "abc"}\n')  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["ilql", "--data", str(data), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lmgym: error: ilql:" in err and "row 1: field 'completion_ids' is empty" in err
    assert not (tmp_path / "out").exists()


def test_a_used_out_dir_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds files; pass --overwrite"):
        parse("--collect", "10", "--out", str(tmp_path / "o"))


def test_quick_run_writes_models_table_curve_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "ilql"
    done = run_cli("ilql", "--quick", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("metrics.json", "results.md", "curve.png", "episodes.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "model" / "ilql.json").is_file()
    assert (out / "filtered_bc" / "config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rm_calls"] == metrics["n_episodes"] == 64
    rows = metrics["heldout"]
    assert list(rows) == ["behaviour (base model)", "filtered BC (top 10%)", "ILQL β=0",
                          "ILQL β=4", "online PPO (same RM budget)"]  # fmt: skip
    assert rows["online PPO (same RM budget)"]["rm_calls"] == 64  # 16 envs x 4 steps
    assert rows["online PPO (same RM budget)"]["kl"] > 0.0  # it trained: it left the base model
    assert rows["behaviour (base model)"]["kl"] == pytest.approx(0.0, abs=1e-4)
    for row in rows.values():
        assert row["n"] == 36  # one completion per held-out prompt
        assert row["reward"] == pytest.approx(row["reward_model"] - 0.05 * row["kl"], abs=1e-4)
    assert "| ILQL β=4 | 64 |" in done.stdout
    assert results_table(metrics) in (out / "results.md").read_text()
