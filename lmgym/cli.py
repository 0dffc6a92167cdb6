"""The ``lmgym`` console command.

Each sub-command is one module holding a config dataclass (its options, documented once) and a
function that runs it; :data:`COMMANDS` lists them. A module is imported only when its
sub-command's parser is built, so ``lmgym --help`` stays cheap to extend.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import NamedTuple

from lmgym.config_cli import add_dataclass_arguments, dataclass_from_args
from lmgym.error import Error


class Command(NamedTuple):
    """One sub-command: ``module`` holds the dataclass ``config`` and the function ``run``."""

    module: str
    config: str
    run: str
    help: str


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "lmgym.demo",
        "DemoConfig",
        "run_demo",
        "PPO on LMBandit-v0 with the embedded default model: reward before/after + a curve",
    ),
    "train": Command(
        "lmgym.training.train",
        "TrainConfig",
        "run_train",
        "Train one SB3 agent (ppo, a2c, trpo, ...) on one env: metrics, curve, checkpoints",
    ),
    "bench": Command(
        "lmgym.training.bench",
        "BenchConfig",
        "run_bench",
        "Every algo x seed on one env: results.json, results.md (mean ± 95% CI), curves.png",
    ),
    "rlhf": Command(
        "lmgym.rlhf.pipeline",
        "RLHFConfig",
        "run_rlhf",
        "The RLHF recipe end to end: SFT -> reward model -> PPO, PPO-ptx, DPO; Elo + report",
    ),
    "sft": Command(
        "lmgym.rlhf.commands",
        "SFTCommandConfig",
        "run_sft_command",
        "RLHF stage 1: SFT of a model dir on simulated best-of-n demonstrations",
    ),
    "reward-model": Command(
        "lmgym.rlhf.commands",
        "RewardModelCommandConfig",
        "run_reward_model_command",
        "RLHF stage 2: a reward model from labeler rankings of K samples of --policy",
    ),
    "ppo-rm": Command(
        "lmgym.rlhf.commands",
        "PPORMCommandConfig",
        "run_ppo_rm_command",
        "RLHF stage 3: PPO of --policy against a learned reward model (--reward-model)",
    ),
    "dpo": Command(
        "lmgym.rlhf.commands",
        "DPOCommandConfig",
        "run_dpo_command",
        "DPO of --policy on labeler preference pairs, against its frozen copy",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lmgym`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="lmgym", description="RL fine-tuning of language models as Gymnasium environments."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)  # heavy (torch, SB3): only here
        sub = commands.add_parser(
            name,
            help=command.help.replace("%", "%%"),  # argparse formats help with %
            description=f"{command.help}.\n\n{(module.__doc__ or '').strip()}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_dataclass_arguments(sub, getattr(module, command.config))
    return parser


def _quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info warnings: the command shows its own.

    Only the ``lmgym`` command does this; library users keep transformers' settings.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmgym`` command.

    A config that fails its validation ends the command with argparse's usage line and the
    validation message (exit status 2), as a bad option value does, instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_transformers()
    command = COMMANDS[args.command]
    module = importlib.import_module(command.module)
    try:
        config = dataclass_from_args(getattr(module, command.config), args)
    except (ValueError, TypeError, Error) as err:
        parser.error(f"{args.command}: {err}")
    getattr(module, command.run)(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
