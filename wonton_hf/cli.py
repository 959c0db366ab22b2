"""`wonton-hf`: one console command, a subcommand per capability.

This module only wires argument parsers to library functions. Each capability's package exposes
`add_subcommands(subparsers)`; its parser sets `func`, which receives the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Packages that contribute subcommands, imported lazily so `wonton-hf --help` stays fast.
SUBCOMMAND_MODULES = [
    "wonton_hf.convert.cli",
    "wonton_hf.evaluation.cli",
    "wonton_hf.tokenization.cli",
    "wonton_hf.callbacks.cli",
    "wonton_hf.chat.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wonton-hf", description="Wonton training system on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        # Expected user errors (bad config, missing files, wrong checkpoint keys): one clear line, exit 2.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"wonton-hf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
