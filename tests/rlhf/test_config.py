"""The one validation mechanism of the RLHF configs, and the one training loop."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lmgym.rlhf.commands import DPOCommandConfig, SFTCommandConfig
from lmgym.rlhf.config import SFTConfig, StageConfig, integer, number, path
from lmgym.rlhf.fit import fit


@dataclass(frozen=True, kw_only=True)
class Base(StageConfig):
    steps: int = integer(4)

    def _validate(self) -> None:
        if self.steps == 13:
            raise ValueError("steps=13 is unlucky; expected another int, e.g. steps=12.")


@dataclass(frozen=True, kw_only=True)
class Child(Base):
    lr: float = number(1e-3)
    out: Path | None = path()

    def _validate(self) -> None:  # does not call Base._validate: it runs anyway
        if self.lr > 1:
            raise ValueError(f"lr={self.lr} is above 1; expected a small rate, e.g. lr=1e-3.")


def test_a_subclass_cannot_drop_its_bases_checks() -> None:
    with pytest.raises(ValueError, match="steps=0 is not an int >= 1"):
        Child(steps=0)
    with pytest.raises(ValueError, match="steps=13 is unlucky"):
        Child(steps=13)
    with pytest.raises(ValueError, match="lr=2"):
        Child(lr=2)
    with pytest.raises(ValueError, match=r"lr=-1.0 must be a finite number > 0; pass one, e.g."):
        Child(lr=-1.0)


def test_a_config_is_frozen_and_normalised() -> None:
    config = Child(out="runs/x")  # type: ignore[arg-type]
    assert config.out == Path("runs/x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3  # type: ignore[misc]
    assert config.as_dict() == {"steps": 4, "lr": 1e-3, "out": "runs/x"}


@pytest.mark.parametrize("cls", [SFTConfig, SFTCommandConfig, DPOCommandConfig])
def test_every_checked_field_of_a_composed_config_is_checked(cls, tmp_path: Path) -> None:
    from lmgym.models.loading import DEFAULT_MODEL_DIR

    needed = {"policy": DEFAULT_MODEL_DIR} if cls is DPOCommandConfig else {}
    for field in dataclasses.fields(cls):
        if "check" not in field.metadata or field.name in needed:
            continue
        bad = "x" if field.type in ("Path | None", "Path") else -1
        if field.name == "out":
            bad = tmp_path / "file"
            bad.write_text("not a directory")
        with pytest.raises((ValueError, TypeError)):
            cls(**needed, **{field.name: bad})


def test_fit_runs_the_steps_and_is_seeded() -> None:
    def train() -> list[float]:
        torch.manual_seed(0)
        layer = torch.nn.Linear(2, 1)
        x = torch.randn(8, 2)
        return fit(
            layer, itertools.repeat(x), lambda b: layer(b).pow(2).mean(), total_steps=5,
            lr=0.1, weight_decay=0.0, max_grad_norm=1.0, warmup_fraction=0.2, progress=False,
        )  # fmt: skip

    first = train()
    assert len(first) == 5 and first[-1] < first[0]
    assert train() == first


@pytest.mark.parametrize("command", ["sft", "reward-model", "dpo"])
def test_device_is_checked_when_the_config_is_built(command, capsys) -> None:
    from lmgym.cli import main
    from lmgym.models.loading import DEFAULT_MODEL_DIR

    policy = [] if command == "sft" else ["--policy", str(DEFAULT_MODEL_DIR)]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--device", "tpu", *policy])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device='tpu' is not a device" in err


def test_a_device_this_machine_lacks_is_refused() -> None:
    import torch

    from lmgym.rlhf.config import SFTConfig

    assert SFTConfig().device == "cpu" and SFTConfig(device="auto").device == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:0' but this machine has no CUDA"):
            SFTConfig(device="cuda:0")
