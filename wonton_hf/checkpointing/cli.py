"""`wonton-hf verify-checkpoint`: argument parsing only; the work is `protocol.verify_checkpoint` (stdlib only, so
the check answers in well under a second plus the reading, without importing torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check a checkpoint's files against the sizes and hashes recorded when it was marked complete"


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify-checkpoint",
        help=HELP,
        description="Re-read every file of a checkpoint and compare its size and SHA-256 hash with the manifest in "
        "its COMPLETE marker (what a resume does before loading it). Given a run directory, checks each of its "
        "checkpoints. Exit status 0 when all pass, 1 when one fails or is incomplete.",
    )
    parser.add_argument("directory", help="a checkpoint-N directory, or a run directory holding several")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .protocol import checkpoint_step, list_checkpoints, verify_checkpoint

    directory = Path(args.directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    targets = (
        [directory] if checkpoint_step(directory) is not None else [path for _, path in list_checkpoints(directory)]
    )
    if not targets:
        raise FileNotFoundError(f"no checkpoint-N directory in {directory}")
    results = [verify_checkpoint(path) for path in targets]
    for result in results:
        print(result.summary())
    return 0 if all(result.ok for result in results) else 1
