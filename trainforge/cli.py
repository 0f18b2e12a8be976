"""The ``trainforge`` command line: parses arguments and hands off to the library (imports lazily)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainforge",
        description="Train and fine-tune PyTorch vision models: recipes, a Trainer, YAML experiments.",
    )
    parser.add_argument("--version", action="version", version=f"trainforge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    del commands  # subcommands (train, test, predict, export, report, config) register here
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trainforge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
