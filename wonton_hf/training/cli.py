"""`wonton-hf average-checkpoints RUN_DIR --last K --output DIR`: parse arguments, call `averaging`, print the result."""

from __future__ import annotations

import argparse


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "average-checkpoints",
        help="average the weights of a run's last K complete checkpoints into a model directory",
        description="Average the weights of RUN_DIR's last K complete checkpoints (checkpoint-N/ with a COMPLETE "
        "marker) into a directory that AutoModelForCausalLM.from_pretrained loads.",
    )
    parser.add_argument("run_dir", help="the run directory holding checkpoint-N/ folders")
    parser.add_argument(
        "--last", type=int, required=True, help="how many of the newest complete checkpoints to average"
    )
    parser.add_argument("--output", default=None, help="model directory to write (default: RUN_DIR/final-averaged)")
    parser.set_defaults(func=_average)


def _average(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .averaging import average_checkpoints

    output = args.output or str(Path(args.run_dir) / "final-averaged")
    report = average_checkpoints(args.run_dir, args.last, output)
    steps = ", ".join(str(s) for s in report.steps)
    print(
        f"Averaged {len(report.steps)} checkpoints (steps {steps}; {report.parameters:,} parameters) "
        f"in {report.seconds:.1f} s -> {report.output}"
    )
    return 0
