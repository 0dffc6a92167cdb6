from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmgym.models.corpus import parses
from lmgym.models.loading import DEFAULT_MODEL_DIR
from lmgym.models.pretrain import PretrainConfig, build_parser, main

TINY_ARGS = [
    "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--train-docs", "64",
    "--eval-docs", "16", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "model"
    assert main(["--out", str(out), *TINY_ARGS]) == 0
    return out


def test_pretrain_saves_a_loadable_model(tiny_run: Path) -> None:
    assert (tiny_run / "model.safetensors").is_file()
    assert not list(tiny_run.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(tiny_run)
    tokenizer = AutoTokenizer.from_pretrained(tiny_run)
    assert model.config.model_type == "gpt2"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    for field in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        assert getattr(model.config, field) == 0.0
    ids = tokenizer("the pizza was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


def test_pretrain_writes_summary_and_leaves_no_staging(tiny_run: Path) -> None:
    summary = json.loads((tiny_run / "training_summary.json").read_text())
    assert summary["steps"] == 3
    assert summary["config"]["n_embd"] == 16
    assert summary["held_out_perplexity"] > 1
    assert summary["parameters"] > 0
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == ["model"]


def test_pretrain_replaces_existing_output_and_is_seeded(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert main(["--out", str(out), *TINY_ARGS]) == 0
    assert not (out / "stale.txt").exists()
    first = load_file(tiny_run / "model.safetensors")
    second = load_file(out / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_cli_has_an_option_per_field() -> None:
    help_text = build_parser().format_help()
    for name in PretrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text
    assert "--no-progress" in help_text
    args = build_parser().parse_args(["--out", "x", "--schedule", "linear", "--steps", "7"])
    assert (args.schedule, args.steps, args.out) == ("linear", 7, Path("x"))


def test_cli_reports_bad_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "m"), "--steps", "0"]) == 2
    assert "steps=0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -5}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"train_docs": 10, "batch_size": 64}, "train_docs"),
        ({"n_embd": 30, "n_head": 4}, "n_embd"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"warmup_steps": 1500, "steps": 1500}, "warmup_steps"),
        ({"eval_seed": 0, "seed": 0}, "eval_seed"),
        ({"n_positions": 30}, "n_positions"),
        ({"schedule": "step"}, "schedule"),
        ({"num_threads": 0}, "num_threads"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"steps": 2.5}, "steps"),
    ],
)
def test_bad_config_raises_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field}="):
        PretrainConfig(out=Path("unused"), **overrides)


# --- the shipped default model (its loading, not its quality: see benchmarks/) ----------------


def test_shipped_default_model_loads() -> None:
    assert (DEFAULT_MODEL_DIR / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert all(getattr(model.config, f) == 0.0 for f in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert total < 20 * 2**20
    summary = json.loads((DEFAULT_MODEL_DIR / "training_summary.json").read_text())
    assert summary["config"]["steps"] == summary["steps"]
    ids = tokenizer("the pizza was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert parses(tokenizer.decode(out[0], skip_special_tokens=True), allow_incomplete=True)
