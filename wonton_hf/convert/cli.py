"""`wonton-hf convert-checkpoint`: argument parsing only; the work is in `checkpoint.py`."""

from __future__ import annotations

import argparse


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert an original Wonton .pt checkpoint to a save_pretrained directory",
        description="Convert an original Wonton GPTModel state dict (.pt) into a Hugging Face directory that "
        "AutoModelForCausalLM loads (with wonton_hf installed, or with trust_remote_code=True).",
    )
    parser.add_argument("checkpoint", help="the original .pt file (state dict, or under 'module' / 'state_dict')")
    parser.add_argument(
        "--config", required=True, help="a preset name (e.g. wonton-7b) or a config.json / its directory"
    )
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .checkpoint import convert_checkpoint

    model = convert_checkpoint(args.checkpoint, args.config, args.output, dtype=args.dtype)
    count = sum(p.numel() for p in model.parameters())
    print(f"Wrote {args.output} ({count:,} parameters, {model.dtype}).")
    print(f"Load it with: AutoModelForCausalLM.from_pretrained({args.output!r}, trust_remote_code=True)")
    return 0
