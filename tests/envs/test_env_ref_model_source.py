"""A ``ref_model`` that does not load is reported as ``ref_model=``, not as ``model=``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmgym.error import ModelLoadError
from tests.envs.conftest import make_lm_env


@pytest.mark.parametrize("env_id", ["LMBandit-v0", "LMToken-v0"])
def test_an_uncached_ref_model_hub_id_names_ref_model(
    tiny_lm_dir: Path, env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as caught:
        make_lm_env(env_id, tiny_lm_dir, ref_model="tiny-org/surely-not-in-any-cache")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "ref_model='tiny-org/surely-not-in-any-cache' is not a local directory, and as a hub id"
    )
    assert "HF_HUB_OFFLINE=0" in message and "model='" not in message.replace("ref_model='", "")


def test_a_missing_ref_model_directory_names_ref_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=rf"^ref_model='{missing}' does not exist"):
        make_lm_env("LMBandit-v0", tiny_lm_dir, ref_model=missing)
