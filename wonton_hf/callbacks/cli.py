"""`wonton-hf plot-run RUN_DIR`: parse arguments, call `plot.plot_run`, print where the PNGs went."""

from __future__ import annotations

import argparse


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot-run",
        help="render a run's loss and monitor metrics to PNGs",
        description="Render loss, stability, throughput and spike-guard metrics of a Trainer run to PNG files.",
    )
    parser.add_argument(
        "run_dir", help="the Trainer's output_dir (trainer_state.json, checkpoint-*/ or TensorBoard events)"
    )
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR/plots)")
    parser.set_defaults(func=_plot_run)


def _plot_run(args: argparse.Namespace) -> int:
    from .plot import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0
