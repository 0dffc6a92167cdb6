"""``--data FILE`` of ``lmgym sft``, ``reward-model`` and ``dpo``: each format end to end on a
tiny file, and every bad input refused in one line (status 2) before any work."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from lmgym.cli import main
from lmgym.rlhf.data import heldout_split, read_preferences

PROMPTS = ["the food was", "the soup is", "the service was very", "i thought the staff were"]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(*args: str) -> dict:
    """``lmgym ARGS`` in this process; the metrics.json it wrote to --out."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--no-progress"]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "metrics.json").read_text())


def pairs(n: int = 2) -> list[dict]:
    return [{"prompt": p, "chosen": "great .", "rejected": "awful ."} for p in PROMPTS * n]


def test_sft_trains_on_demonstrations_and_measures_the_held_out_ones(tiny_lm_dir, tmp_path):
    data = write_jsonl(tmp_path / "demos.jsonl",
                       [{"prompt": p, "completion": "great ."} for p in PROMPTS * 2])  # fmt: skip
    metrics = run("sft", "--model", str(tiny_lm_dir), "--data", str(data), "--device", "cpu",
                  "--out", str(tmp_path / "sft"), "--epochs", "2", "--lr", "0.01")  # fmt: skip
    assert metrics["n_demonstrations"] == 6 and metrics["n_heldout_demonstrations"] == 2
    assert metrics["heldout_loss_after"] < metrics["heldout_loss_before"]
    assert "true_score_after" not in metrics  # the embedded task's score: not for your data


@pytest.mark.parametrize("form", ["pairs", "rankings"])
def test_reward_model_trains_on_pairs_or_rankings(form, tiny_lm_dir, tmp_path):
    records = pairs() if form == "pairs" else [
        {"prompt": p, "completions": ["great .", "good .", "bad .", "awful ."]}
        for p in PROMPTS * 2
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "prefs.jsonl", records)
    metrics = run("reward-model", "--policy", str(tiny_lm_dir), "--data", str(data),
                  "--out", str(tmp_path / "rm"), "--epochs", "1")  # fmt: skip
    per_ranking = 1 if form == "pairs" else 6
    assert metrics["n_heldout_rankings"] == 2 and metrics["n_train_rankings"] == 6
    assert metrics["n_train_pairs"] == 6 * per_ranking
    assert 0 <= metrics["heldout_accuracy"] <= 1 and "oracle_accuracy" not in metrics


def test_dpo_trains_on_pairs_and_measures_the_held_out_ones(tiny_lm_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs())
    metrics = run("dpo", "--policy", str(tiny_lm_dir), "--data", str(data),
                  "--out", str(tmp_path / "dpo"), "--epochs", "2", "--lr", "0.01")  # fmt: skip
    assert metrics["n_rankings"] == 6 and metrics["n_pairs"] == 6
    assert metrics["n_heldout_pairs"] == 2 and metrics["heldout_reward_accuracy"] == 1.0


def test_the_held_out_part_is_a_seeded_share_of_the_prompts(tmp_path) -> None:
    items = read_preferences(write_jsonl(tmp_path / "p.jsonl", pairs()))
    train, held = heldout_split(items, lambda item: item[0], seed=0)
    assert (train, held) == heldout_split(items, lambda item: item[0], seed=0)
    assert len({p for p, _ in held}) == 1 and not {p for p, _ in held} & {p for p, _ in train}


GOOD_PAIR = '{"prompt": "a", "chosen": "b", "rejected": "c"}'


@pytest.mark.parametrize(
    ("command", "lines", "fragment"),
    [
        ("sft", None, "does not exist"),
        ("sft", "\n\n", "is empty (no records)"),
        ("sft", '{"prompt": "a", "completion": "b"}\n{"prompt": "a",', "line 2: invalid JSON"),
        ("sft", '["a", "b"]', "line 1: a JSON list, not an object"),
        ("sft", '{"prompt": "a"}', "line 1: field 'completion' is missing"),
        ("sft", '{"prompt": 3, "completion": "b"}', "line 1: field 'prompt' is a int"),
        ("sft", '{"prompt": "a", "completion": " "}', "line 1: field 'completion' is empty"),
        ("dpo", GOOD_PAIR + '\n{"prompt": "a", "chosen": "b"}', "line 2: field 'rejected'"),
        ("dpo", '{"prompt": "a", "completions": ["b"]}', "line 1: field 'completions' is"),
        ("dpo", '{"prompt": "a", "completions": ["b", 2]}', "field 'completions[1]' is a int"),
        ("dpo", '{"prompt": "a", "completions": ["b", "c"], "chosen": "b"}', "either a pair"),
        ("reward-model", GOOD_PAIR, "holds 1 distinct prompt(s)"),
    ],
    ids=[
        "missing",
        "empty",
        "json",
        "not_object",
        "no_field",
        "type",
        "blank",
        "pair_field",
        "short_ranking",
        "ranking_type",
        "both",
        "one_prompt",
    ],  # fmt: skip
)
def test_bad_data_is_refused_in_one_line_before_any_work(
    command, lines, fragment, tiny_lm_dir, tmp_path, capsys
) -> None:
    data = tmp_path / "data.jsonl"
    if lines is not None:
        data.write_text(lines)
    out = tmp_path / "out"
    model = ["--model" if command == "sft" else "--policy", str(tiny_lm_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *model, "--data", str(data), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"data={str(data)!r}" in err and fragment in err, err
    assert not out.exists()
