"""``lmgym rlhf``: its config, its evaluator, and a subprocess smoke run of ``--quick``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2LMHeadModel

from lmgym.cli import build_parser
from lmgym.config_cli import _field_docs, dataclass_from_args
from lmgym.evaluation import PolicyEvaluator
from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.rlhf import pipeline
from lmgym.rlhf.pipeline import RLHFConfig, command_line
from tests.conftest import build_tiny_tokenizer
from tests.helpers import exec_doc_blocks


def test_quick_shrinks_sizes_and_explicit_sizes_win() -> None:
    default, quick = RLHFConfig(), RLHFConfig(quick=True)
    for name, (full, small) in pipeline._SIZES.items():
        assert getattr(default, name) == full and getattr(quick, name) == small, name
    assert RLHFConfig(quick=True, ppo_steps=512).ppo_steps == 512


def test_docstring_states_the_sizes_the_code_uses() -> None:
    docs = _field_docs(RLHFConfig)  # what --help shows
    for name, (full, small) in pipeline._SIZES.items():
        match = re.search(r"\(None: (\d+), or (\d+) with --quick\)", docs[name])
        assert match, name
        assert (int(match[1]), int(match[2])) == (full, small), name


def test_cli_builds_the_config() -> None:
    args = build_parser("rlhf").parse_args(["rlhf", "--quick", "--kl-sweep", "0.01", "0.3"])
    config = dataclass_from_args(RLHFConfig, args)
    assert config.quick and config.kl_sweep == [0.01, 0.3]
    assert config.ppo_steps == pipeline._SIZES["ppo_steps"][1]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rm_k": 10}, "rm_k=10"),
        ({"rm_k": 1}, "rm_k=1"),
        ({"ppo_steps": 0}, "ppo_steps=0"),
        ({"kl_sweep": [0.1]}, "repeats kl_coef=0.1"),
        ({"kl_sweep": [-1.0]}, r"kl_sweep\[0\]=-1.0"),
        ({"ptx_coef": 0.0}, "ptx_coef=0.0"),
        ({"labeler_temperature": -0.5}, "labeler_temperature=-0.5"),
        ({"threads": 0}, "threads=0"),
        ({"seed": -1}, "seed=-1"),
        ({"elo_bootstrap": -1}, "elo_bootstrap=-1"),
    ],
    ids=["k10", "k1", "steps0", "sweep_dup", "sweep_neg", "ptx0", "temp", "threads", "seed", "elo"],
)
def test_config_rejects_bad_values(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        RLHFConfig(**kwargs)


def test_config_is_frozen_and_states_its_command() -> None:
    config = RLHFConfig(quick=True, kl_sweep=[0.3])
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]
    assert command_line(config) == "lmgym rlhf --quick --kl-sweep 0.3"
    assert RLHFConfig(quick=True, ppo_steps=512).ppo_steps == 512
    assert "--ppo-steps 512" in command_line(RLHFConfig(quick=True, ppo_steps=512))


def test_stages_are_a_list_built_from_the_config() -> None:
    names = [name for name, _ in pipeline.stages(RLHFConfig(kl_sweep=[0.01, 0.5]))]
    assert names == ["SFT", "reward model", "PPO β=0.1", "PPO β=0.01", "PPO β=0.5", "PPO-ptx",
                     "DPO", "evaluation", "Elo", "report"]  # fmt: skip


def count_great(prompts, completions):
    return [float(c.split().count("great")) for c in completions]


def test_evaluator_scores_the_reference_at_zero_kl(tiny_lm_dir: Path, tmp_path: Path) -> None:
    prompts = ["the food was", "i thought the staff"]
    evaluator = PolicyEvaluator(tiny_lm_dir, count_great, prompts, samples=3, corpus_docs=8)
    row = evaluator(tiny_lm_dir)
    assert row["kl"] == pytest.approx(0.0, abs=1e-5)
    assert len(row["completions"]) == 6
    assert 0.0 <= row["fluency"] <= 1.0 and row["corpus_loss"] > 0
    assert evaluator(tiny_lm_dir) == row  # seeded: the same samples every call
    other = tmp_path / "other"  # same tokenizer, other weights: KL > 0
    GPT2LMHeadModel.from_pretrained(tiny_lm_dir).apply(
        lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None
    ).save_pretrained(other)
    build_tiny_tokenizer().save_pretrained(other)
    assert evaluator(other)["kl"] > 0.01


def test_evaluator_rejects_a_policy_with_another_tokenizer(tiny_lm_dir: Path) -> None:
    evaluator = PolicyEvaluator(tiny_lm_dir, count_great, ["the food was"], corpus_docs=8)
    with pytest.raises(ValueError, match="another tokenizer"):
        evaluator(DEFAULT_MODEL_DIR)


@pytest.mark.slow
def test_rlhf_quick_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "rlhf"
    result = subprocess.run(
        [sys.executable, "-m", "lmgym.cli", "rlhf", "--quick", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("results.md", "results.json", "rm_vs_true.png", "reward_vs_kl.png", "elo.png"):
        assert (out / name).stat().st_size > 1000, name
    results = json.loads((out / "results.json").read_text())
    assert {
        "config",
        "wall_time_s",
        "reward_model",
        "policies",
        "elo",
        "ppo_runs",
        "checks",
        "plots",
    } <= set(results)
    assert {"base", "SFT", "PPO", "PPO-ptx", "DPO"} <= set(results["policies"])
    for row in results["policies"].values():
        assert {"true_score", "rm_score", "kl", "fluency", "corpus_loss"} <= set(row)
    assert results["policies"]["SFT"]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 <= results["reward_model"]["heldout_accuracy"] <= 1.0
    assert {row["player"] for row in results["elo"]} == set(results["policies"])
    assert {"SFT", "reward model", "PPO-ptx", "DPO", "evaluation", "Elo", "total"} <= set(
        results["wall_time_s"]
    )
    assert results["wall_time_s"]["total"] < 600
    md = (out / "results.md").read_text()
    assert "| policy | true score | RM score" in md and "## Elo" in md
    assert "Held-out prompts" in result.stdout


def test_rlhf_doc_code_runs(capsys) -> None:
    assert exec_doc_blocks("docs/rlhf.md") == 3
    out = capsys.readouterr().out
    assert "[32] 1" in out and "ptx loss" in out
    assert out.count("| PPO |") == 1 and "| policy | Elo |" in out
