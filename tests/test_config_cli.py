"""Options built from config dataclasses: inherited field docs and literal percent signs."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from lmgym.config_cli import _field_docs, add_dataclass_arguments, dataclass_from_args


@dataclasses.dataclass
class Stage:
    """A stage's config.

    Attributes:
        lr: Peak learning rate.
        seed: Seeds the batch order.
    """

    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0.")


@dataclasses.dataclass(kw_only=True)
class Inputs:
    """Where a command reads from.

    Attributes:
        policy: Directory of the policy.
    """

    policy: Path


@dataclasses.dataclass(kw_only=True)
class Command(Stage, Inputs):
    """A command: the stage's config plus its inputs; it re-documents only ``seed``.

    Attributes:
        out: Where to write (100% of the outputs).
        seed: Seeds everything the command draws.
    """

    out: Path = Path("runs")


def help_of(cls: type) -> str:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls)
    return " ".join(parser.format_help().split())


def test_field_docs_walk_the_mro_nearest_class_wins() -> None:
    assert _field_docs(Command) == {
        "policy": "Directory of the policy.",
        "lr": "Peak learning rate.",
        "seed": "Seeds everything the command draws.",
        "out": "Where to write (100% of the outputs).",
    }
    assert _field_docs(Stage)["seed"] == "Seeds the batch order."  # the base is untouched


def test_inherited_fields_get_their_base_help_and_a_percent_sign_survives() -> None:
    text = help_of(Command)
    assert "--lr LR Peak learning rate. (default: 0.001)" in text
    assert "--policy POLICY Directory of the policy. (required)" in text
    assert "(100% of the outputs)" in text


def test_subclass_config_is_built_and_validated_by_the_base() -> None:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Command)
    config = dataclass_from_args(Command, parser.parse_args(["--policy", "p", "--lr", "0.1"]))
    assert config == Command(policy=Path("p"), lr=0.1)
    with pytest.raises(ValueError, match="lr=-1.0 must be > 0"):
        dataclass_from_args(Command, parser.parse_args(["--policy", "p", "--lr", "-1"]))
