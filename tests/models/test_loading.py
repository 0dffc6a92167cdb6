from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmgym.error import ModelLoadError
from lmgym.models.loading import load_model
from tests.conftest import build_tiny_model, build_tiny_tokenizer


def test_load_model_from_directory(tiny_lm_dir: Path) -> None:
    model, tokenizer = load_model(tiny_lm_dir)
    assert not model.training
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert tokenizer.pad_token == "<pad>"
    assert (tiny_lm_dir / "model.safetensors").is_file()


def test_load_model_disables_dropout(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    model.config.resid_pdrop = 0.3
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.config.resid_pdrop == 0.0
    assert all(m.p == 0.0 for m in loaded.modules() if isinstance(m, torch.nn.Dropout))
    # Train mode (as SB3 sets it for updates) must not change the outputs.
    ids = torch.tensor([[1, 5, 6, 7]])
    loaded.train()
    a = loaded(ids).logits
    b = loaded(ids).logits
    torch.testing.assert_close(a, b)


def test_missing_path_names_argument(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match=r"model=.*nope.*does not exist"):
        load_model(missing)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        load_model(tmp_path)


def test_tokenizer_larger_than_embedding(tiny_lm_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_lm_dir, tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    small = build_tiny_model(vocab_size=8)
    small.save_pretrained(tmp_path / "m")
    assert json.loads(config_path.read_text())["vocab_size"] == 8 != config["vocab_size"]
    with pytest.raises(ModelLoadError, match=r"tokenizer has \d+ tokens but .* only 8 rows"):
        load_model(tmp_path / "m")


def test_model_object_needs_tokenizer() -> None:
    model = build_tiny_model(len(build_tiny_tokenizer()))
    with pytest.raises(ValueError, match="tokenizer=None"):
        load_model(model)


def test_bad_model_type() -> None:
    with pytest.raises(TypeError, match="model=42"):
        load_model(42)  # type: ignore[arg-type]


def test_trust_remote_code_is_off_by_default(tiny_lm_dir: Path, monkeypatch) -> None:
    seen = {}
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    import lmgym.models.loading as loading

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(tiny_lm_dir)
    assert seen["trust_remote_code"] is False
    assert seen["local_files_only"] is True


def _remote_code_dir(tmp_path: Path, tiny_lm_dir: Path) -> tuple[Path, Path]:
    """A model directory whose ``auto_map`` points at code that writes a marker file."""
    model_dir = tmp_path / "remote"
    shutil.copytree(tiny_lm_dir, model_dir)
    marker = tmp_path / "remote-code-ran"
    (model_dir / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    pass\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n"
    )
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForCausalLM": "evil.EvilModel",
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir, marker


@pytest.mark.parametrize("flag", ["no", "false", 1, 0, None], ids=repr)
def test_trust_remote_code_must_be_a_real_bool(
    tiny_lm_dir: Path, tmp_path: Path, flag: object
) -> None:
    model_dir, marker = _remote_code_dir(tmp_path, tiny_lm_dir)
    with pytest.raises(TypeError, match=r"trust_remote_code=.* is not a bool; expected True or"):
        load_model(model_dir, trust_remote_code=flag)  # type: ignore[arg-type]
    assert not marker.exists()


def test_env_refuses_a_string_trust_remote_code(tiny_lm_dir: Path, tmp_path: Path) -> None:
    import gymnasium as gym

    import lmgym  # noqa: F401

    model_dir, marker = _remote_code_dir(tmp_path, tiny_lm_dir)
    for env_id in ("LMBandit-v0", "LMToken-v0"):
        with pytest.raises(TypeError, match="trust_remote_code='no'"):
            gym.make(env_id, model=str(model_dir), trust_remote_code="no")
    assert not marker.exists()


def test_remote_code_stays_off_with_false(tiny_lm_dir: Path, tmp_path: Path) -> None:
    model_dir, marker = _remote_code_dir(tmp_path, tiny_lm_dir)
    try:
        load_model(model_dir, trust_remote_code=False)
    except (ValueError, OSError):
        pass  # transformers may refuse the auto_map outright; either way nothing ran
    assert not marker.exists()


def test_remote_code_fixture_really_runs_with_true(tiny_lm_dir: Path, tmp_path: Path) -> None:
    # Guards the tests above: their directory's code does run when the user opts in.
    model_dir, marker = _remote_code_dir(tmp_path, tiny_lm_dir)
    load_model(model_dir, trust_remote_code=True)
    assert marker.read_text() == "ran"


def test_classifier_reward_refuses_a_string_trust_remote_code(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from lmgym.rewards import SequenceClassifierReward

    model_dir, marker = _remote_code_dir(tmp_path, tiny_lm_dir)
    with pytest.raises(TypeError, match="trust_remote_code='no' .* is not a bool"):
        SequenceClassifierReward(model_dir, trust_remote_code="no")  # type: ignore[arg-type]
    assert not marker.exists()
