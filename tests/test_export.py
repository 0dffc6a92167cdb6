"""``lmgym export``: a train run's LM out as a model directory, and every bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file

from lmgym.cli import main
from lmgym.export import ExportConfig, run_export
from lmgym.training.checkpoint import load_checkpoint
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def lm_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PPO run of the LM policy on LMBandit-v0 (trained in-process)."""
    out = tmp_path_factory.mktemp("export") / "run"
    main(["train", "--env", "LMBandit-v0", "--model", str(tiny_lm_dir), "--steps", "16",
          "--n-envs", "2", "--eval-episodes", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    return out


def exit_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0), capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lmgym: error: export: "), err
    return lines[0]


def trained_lm_tensors(run: Path) -> dict[str, torch.Tensor]:
    """The policy's LM weights in the run's checkpoint, by the LM's own parameter names."""
    policy = load_safetensors_bytes(load_checkpoint(run / "checkpoint.zip").members[
        "policy.safetensors"])  # fmt: skip
    return {k.removeprefix("lm."): v for k, v in policy.items() if k.startswith("lm.")}


def test_export_round_trip_loads_the_trained_lm(lm_run, tiny_lm_dir, tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM, pipeline

    out = tmp_path / "model"
    assert main(["export", str(lm_run), "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "exported the LM of ppo on LMBandit-v0 (seed 0, step 32;" in shown
    assert f"from_pretrained({str(out)!r})" in shown
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= files  # fmt: skip
    assert not list(tmp_path.glob(".model.*")), "the staging directory was left behind"
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 too
    assert "local_files_only" not in tokenizer_config

    model = AutoModelForCausalLM.from_pretrained(out)
    exported = model.state_dict()
    trained = trained_lm_tensors(lm_run)
    initial = load_file(tiny_lm_dir / "model.safetensors")
    assert trained.keys() - {"lm_head.weight"} <= exported.keys()
    for name, tensor in trained.items():
        assert torch.equal(exported[name], tensor), name
    # The trained weights, not the initial ones: PPO moved them.
    assert any(not torch.equal(exported[k], initial[k]) for k in initial if k in exported)

    generator = pipeline("text-generation", model=str(out))
    text = generator("the food was", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("the food was") and len(text) > len("the food was")


def test_export_over_an_earlier_export_needs_overwrite(lm_run, tmp_path, capsys) -> None:
    out = tmp_path / "model"
    run_export(ExportConfig(run_dir=lm_run, out=out))
    before = (out / "model.safetensors").stat().st_mtime_ns
    status, err = exit_of(["export", str(lm_run), "--out", str(out)], capsys)
    assert status == 2 and "is not empty" in one_line(err) and "--overwrite" in err
    assert main(["export", str(lm_run), "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_never_deletes_files_of_another_kind(lm_run, tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("keep me")
    status, err = exit_of(["export", str(lm_run), "--out", str(out), "--overwrite"], capsys)
    assert status == 2 and "notes.txt" in one_line(err)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_empty_out_is_filled(lm_run, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_export(ExportConfig(run_dir=lm_run, out=tmp_path / "empty"))
    assert "model.safetensors" in result.files and (tmp_path / "empty" / "config.json").exists()


def test_a_failed_export_leaves_nothing(lm_run, tmp_path, monkeypatch) -> None:
    from lmgym.agents import LMActorCriticPolicy

    def full_disk(self, path) -> None:
        (Path(path) / "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LMActorCriticPolicy, "save_pretrained", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_export(ExportConfig(run_dir=lm_run, out=tmp_path / "model"))
    assert list(tmp_path.iterdir()) == []


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lmgym.lock", "tb"))
    return copy


def test_an_mlp_policy_run_is_refused_in_one_line(lm_run, tmp_path, capsys) -> None:
    run = copy_run(lm_run, tmp_path)
    marker = json.loads((run / "run.json").read_text())
    marker["identity"]["policy"] = "mlp"
    (run / "run.json").write_text(json.dumps(marker))
    status, err = exit_of(["export", str(run), "--out", str(tmp_path / "model")], capsys)
    assert status == 2
    assert "only LM-policy runs (lmgym train --policy lm" in one_line(err)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("missing dir", "does not exist; expected the --out directory of an `lmgym train` run"),
        ("no run.json", "holds no run.json"),
        ("bench run", "holds a bench run"),
        ("run.json garbage", "run.json is damaged"),
        ("no checkpoint", "has no checkpoint.zip"),
        ("checkpoint garbage", "it is not a readable zip file"),
        ("weights of another model", "policy.safetensors"),
    ],
)
def test_a_bad_run_dir_is_one_line_and_status_2(lm_run, tmp_path, capsys, damage, fragment):
    run = copy_run(lm_run, tmp_path)
    if damage == "missing dir":
        shutil.rmtree(run)
    elif damage == "no run.json":
        (run / "run.json").unlink()
    elif damage == "bench run":
        marker = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**marker, "kind": "bench"}))
    elif damage == "run.json garbage":
        (run / "run.json").write_text("{not json")
    elif damage == "no checkpoint":
        (run / "checkpoint.zip").unlink()
    elif damage == "checkpoint garbage":
        (run / "checkpoint.zip").write_bytes(b"PK\x03\x04 torn")
    else:  # a checkpoint from a run of another model: its tensors do not fit the rebuilt policy
        import zipfile

        with zipfile.ZipFile(run / "checkpoint.zip") as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        from safetensors.torch import save

        policy = load_safetensors_bytes(members["policy.safetensors"])
        policy["lm.transformer.wte.weight"] = policy["lm.transformer.wte.weight"][:-1]
        members["policy.safetensors"] = save(policy)
        with zipfile.ZipFile(run / "checkpoint.zip", "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    status, err = exit_of(["export", str(run), "--out", str(tmp_path / "model")], capsys)
    assert status == 2
    assert fragment in one_line(err)
    assert not (tmp_path / "model").exists()


def test_export_smoke_run(lm_run, tmp_path) -> None:
    result = run_cli("export", str(lm_run), "--out", str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exported the LM of ppo" in result.stdout
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("kind", ["a file", "/proc"])
def test_an_out_that_cannot_be_written_is_one_line(lm_run, tmp_path, capsys, kind) -> None:
    if kind == "a file":
        out = tmp_path / "file"
        out.write_text("keep me")
    else:
        out = Path("/proc/lmgym-model")
    status, err = exit_of(["export", str(lm_run), "--out", str(out)], capsys)
    assert status == 2 and f"out={str(out)!r}" in one_line(err)
    if kind == "a file":
        assert out.read_text() == "keep me"
