"""The ``lmgym`` console command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lmgym.config_cli import add_dataclass_arguments, dataclass_from_args


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lmgym`` and its sub-commands."""
    from lmgym import demo as demo_module  # heavy (torch, SB3): only when the parser is built

    parser = argparse.ArgumentParser(
        prog="lmgym", description="RL fine-tuning of language models as Gymnasium environments."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="PPO on LMBandit-v0 with the embedded default model: reward before/after + a curve",
        description=(demo_module.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(demo, demo_module.DemoConfig)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmgym`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lmgym.demo import DemoConfig, run_demo

        run_demo(dataclass_from_args(DemoConfig, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
