"""`wonton-hf`: one console command, a subcommand per capability.

This module only wires argument parsers to library functions. Each capability's package exposes
`add_subcommands(subparsers)`; its parser sets `func`, which receives the parsed arguments.

Only the module of the subcommand being run is imported: `wonton-hf --help` lists the subcommands from the
table below without importing any of them (several pull in torch and transformers, ~4-10 s on a CPU
machine), so it answers in a fraction of a second. A test keeps the table equal to what the modules register.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert-checkpoint": (
        "wonton_hf.convert.cli",
        "convert an original Wonton .pt checkpoint to a save_pretrained directory",
    ),
    "eval": (
        "wonton_hf.evaluation.cli",
        "score a checkpoint on the paper's benchmarks with lm-eval and write a paper-style report",
    ),
    "eval-report": ("wonton_hf.evaluation.cli", "lay out an lm-eval results JSON like the paper's Tables 2-4"),
    "eval-chat": (
        "wonton_hf.evaluation.judge.cli",
        "rate base and chat models' answers 1-10 with an LLM judge (MT-Bench), chat minus base as in the paper",
    ),
    "tokenizer": ("wonton_hf.tokenization.cli", "train, compare or convert tokenizers (paper section 2.3)"),
    "plot-run": ("wonton_hf.callbacks.cli", "render a run's loss and monitor metrics to PNGs"),
    "average-checkpoints": (
        "wonton_hf.training.cli",
        "average the weights of a run's last K complete checkpoints into a model directory",
    ),
    "verify-checkpoint": (
        "wonton_hf.checkpointing.cli",
        "check a checkpoint's files against the sizes and hashes recorded when it was marked complete",
    ),
    "chat": ("wonton_hf.chat.cli", "talk to a chat model in the terminal ([INST] template, streamed replies)"),
}
"""subcommand -> (module whose `add_subcommands` registers it, one-line help)"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of `command` (its module imported), or the light listing of every subcommand."""
    parser = argparse.ArgumentParser(prog="wonton-hf", description="Wonton training system on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in SUBCOMMANDS:
        importlib.import_module(SUBCOMMANDS[command][0]).add_subcommands(subparsers)
    else:
        for name, (_, help_text) in SUBCOMMANDS.items():
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _command(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        # Expected user errors (bad config, missing files, wrong checkpoint keys, remote code without
        # consent): one clear message, exit 2.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"wonton-hf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
