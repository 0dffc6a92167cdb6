"""The ``lmgym`` console command.

Each sub-command is one module holding a config dataclass (its options, documented once) and a
function that runs it; :data:`COMMANDS` lists them. Only the module of the sub-command that is
asked for is imported, and only its parser is built: ``lmgym --help`` lists the commands from
their help strings alone, and the command modules load torch and SB3 when their work starts,
so any ``--help`` answers at once.

The run functions return their results and log; they do not print. What a command shows on
stdout when it succeeds is its ``render`` function's text (the demo's tables, the bench's
results table, the train run's before/after line).

What a person sees when a command fails is decided here, once for every command: one line on
stderr, ``lmgym: error: COMMAND: MESSAGE``, and the exit status

- 2 for bad input: an option that fails its config's validation (the output location included,
  checked before any work), or an lmgym error about what the user gave (a run directory in use
  or damaged, a model that does not load);
- 1 when the work itself failed on the way (an OS error such as a full disk, failed bench runs);
- 130 on Ctrl-C (``lmgym: COMMAND: interrupted``, with what was kept when there is something to
  say).

Anything else is a bug in lmgym and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn

from lmgym.config_cli import add_dataclass_arguments, dataclass_from_args
from lmgym.error import Error
from lmgym.training.rundir import check_out_location

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    """One sub-command: ``module`` holds the dataclass ``config`` and the function ``run``.

    ``render``, when set, names a function ``(config, result) -> str`` of the module: the text
    the command prints on stdout once ``run`` has returned ``result``.
    """

    module: str
    config: str
    run: str
    help: str
    render: str | None = None


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "lmgym.demo",
        "DemoConfig",
        "run_demo",
        "PPO on LMBandit-v0 (the embedded task, or yours: --model/--reward/--prompts): reward "
        "before/after + a curve",
        "render_demo",
    ),
    "train": Command(
        "lmgym.training.train",
        "TrainConfig",
        "run_train",
        "Train one SB3 agent (ppo, a2c, trpo, ...) on one env: metrics, curve, checkpoints",
        "render_train",
    ),
    "bench": Command(
        "lmgym.training.bench",
        "BenchConfig",
        "run_bench",
        "Every algo x seed on one env: results.json, results.md (mean ± 95% CI), curves.png",
        "render_bench",
    ),
    "rlhf": Command(
        "lmgym.rlhf.pipeline",
        "RLHFConfig",
        "run_rlhf",
        "The RLHF recipe end to end: SFT -> reward model -> PPO, PPO-ptx, DPO; Elo + report",
        "render_rlhf",
    ),
    "sft": Command(
        "lmgym.rlhf.commands",
        "SFTCommandConfig",
        "run_sft_command",
        "RLHF stage 1: SFT of a model dir on simulated best-of-n demonstrations",
        "render_metrics",
    ),
    "reward-model": Command(
        "lmgym.rlhf.commands",
        "RewardModelCommandConfig",
        "run_reward_model_command",
        "RLHF stage 2: a reward model from labeler rankings of K samples of --policy",
        "render_metrics",
    ),
    "ppo-rm": Command(
        "lmgym.rlhf.commands",
        "PPORMCommandConfig",
        "run_ppo_rm_command",
        "RLHF stage 3: PPO of --policy against a learned reward model (--reward-model)",
        "render_metrics",
    ),
    "dpo": Command(
        "lmgym.rlhf.commands",
        "DPOCommandConfig",
        "run_dpo_command",
        "DPO of --policy on labeler preference pairs, against its frozen copy",
        "render_metrics",
    ),
    "export": Command(
        "lmgym.export",
        "ExportConfig",
        "run_export",
        "The fine-tuned LM of a train run (LM policy) as a Hugging Face model directory",
        "render_export",
    ),
    "ilql": Command(
        "lmgym.offline.command",
        "ILQLCommandConfig",
        "run_ilql_command",
        "Offline RL: ILQL and filtered BC on logged episodes (--data FILE or --collect N), "
        "evaluated on held-out prompts: table, curve, models",
        "render_ilql",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``lmgym``, with the options of the sub-command ``command``.

    Every sub-command is listed (with its help string), but only ``command``'s module is
    imported and its options added: the others stay unloaded. With ``command=None`` the parser
    serves ``lmgym --help`` and the errors of a missing or unknown sub-command.

    Example:
        >>> build_parser("train").parse_args(["train", "--env", "CatGrid-v0"]).env
        'CatGrid-v0'
    """
    parser = argparse.ArgumentParser(
        prog="lmgym", description="RL fine-tuning of language models as Gymnasium environments."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, entry in COMMANDS.items():
        help_text = entry.help.replace("%", "%%")  # argparse formats help with %
        if name != command:
            commands.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(entry.module)
        sub = commands.add_parser(
            name,
            help=help_text,
            description=f"{entry.help}.\n\n{(module.__doc__ or '').strip()}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_dataclass_arguments(sub, getattr(module, entry.config))
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``, or None: its first word that is not an option.

    ``lmgym`` itself takes no option with a value, so that word is the sub-command's name.
    """
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in COMMANDS else None


def _quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info warnings: the command shows its own.

    Only the ``lmgym`` command does this; library users keep transformers' settings.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _fail(name: str, message: str, status: int) -> NoReturn:
    """End the command with one line on stderr and ``status``."""
    print(f"lmgym: error: {name}: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmgym`` command; 0 on success, else SystemExit (see the module doc).

    Example:
        >>> main(["demo", "--steps", "0"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    name = "lmgym"
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(_command_in(argv)).parse_args(argv)
        name = args.command
        command = COMMANDS[name]
        module = importlib.import_module(command.module)
        try:
            config = dataclass_from_args(getattr(module, command.config), args)
            if config.out is not None:  # every command writes to --out: check it before work
                check_out_location(config.out)
        except (ValueError, TypeError, Error) as err:
            _fail(name, str(err), 2)
        _quiet_transformers()
        result: Any = getattr(module, command.run)(config)
        if command.render is not None:
            print(getattr(module, command.render)(config, result), flush=True)
    except KeyboardInterrupt as err:
        print(f"lmgym: {name}: interrupted" + (f". {err}" if str(err) else ""), file=sys.stderr)
        raise SystemExit(130) from None
    except Error as err:
        _fail(name, str(err), 2 if isinstance(err, ValueError | TypeError) else 1)
    except OSError as err:
        _fail(name, str(err), 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
