"""What `examples/pretrain.py` and `examples/sft.py` share: read and check the run config, then train.

The config is read and checked before torch or transformers is imported. A config error prints one message
that names every bad field and exits with code 2 — no traceback, no tokenizer trained, no model allocated.

`accelerate launch` cannot pass that on: its single-process launcher turns any non-zero exit of the script
into its own `CalledProcessError` traceback (exit 1), printed after our message; `torchrun`-based launchers
print a failure report per rank. So the scripts can also launch themselves: `--launch ACCELERATE_CONFIG`
checks the config in this process first and only then hands over to `accelerate launch --config_file
ACCELERATE_CONFIG <script> <same arguments>` (exec, so the exit code is accelerate's). `--check` stops after
the checks. Under a launcher started directly, only the first local rank prints the message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..distributed import is_local_main_process
from .schema import EXIT_CONFIG_ERROR, ConfigError

LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


@dataclass
class ScriptSpec:
    """One example script: how it reads its config and what it runs with a checked one."""

    script: str
    description: str
    default_config: Path
    load: Callable[[str, list[str]], Any]
    """(YAML path, overrides) -> config; raises ConfigError"""
    help_config: Callable[[], str]
    check: Callable[[Any], None]
    """launch-time checks that need no heavy import (files exist); raises ConfigError"""
    train: Callable[[Any], None]
    flags: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "--resume": ("resume", "auto | never | a checkpoint directory (overrides the YAML's `resume`)")
        }
    )
    """extra flags that set one config field: flag -> (field path, help)"""


def parse_arguments(spec: ScriptSpec, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=spec.description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(spec.default_config), help="run YAML (default: the embedded CPU demo)")
    for flag, (path, help_text) in spec.flags.items():
        parser.add_argument(flag, dest=path.replace(".", "__"), help=help_text)
    parser.add_argument("--help-config", action="store_true", help="print every config field with its doc and default")
    parser.add_argument(
        "--check", action="store_true", help="check the config and its files, then exit (0: fine, 2: not)"
    )
    parser.add_argument(
        "--launch",
        metavar="ACCELERATE_CONFIG",
        help="check here, then start `accelerate launch --config_file ACCELERATE_CONFIG` on this script",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    return parser.parse_args(argv)


def config_error(error: ConfigError, script: str) -> int:
    if is_local_main_process():
        print(f"{Path(script).name}: {error}", file=sys.stderr, flush=True)
    return EXIT_CONFIG_ERROR


def run_script(spec: ScriptSpec, argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(spec, argv)
    if args.help_config:
        print(spec.help_config())
        return 0
    overrides = list(args.overrides)
    for path in (path for path, _ in spec.flags.values()):
        if getattr(args, path.replace(".", "__"), None) is not None:
            overrides.append(f"{path}={getattr(args, path.replace('.', '__'))}")
    started = time.perf_counter()
    try:
        config = spec.load(args.config, overrides)
        spec.check(config)
    except ConfigError as error:
        return config_error(error, spec.script)
    if args.check:
        print(f"{Path(spec.script).name}: {args.config} is valid ({time.perf_counter() - started:.2f} s).")
        return 0
    if args.launch:
        return _exec_accelerate(spec, args.launch, argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    spec.train(config)
    return 0


def _exec_accelerate(spec: ScriptSpec, accelerate_config: str, argv: list[str]) -> int:
    if not Path(accelerate_config).is_file():
        return config_error(
            ConfigError([("--launch", f"accelerate config {accelerate_config} does not exist.")]), spec.script
        )
    rest, skip = [], False
    for item in argv:  # the same arguments, without --launch
        if skip:
            skip = False
        elif item == "--launch":
            skip = True
        elif not item.startswith("--launch="):
            rest.append(item)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.accelerate_cli",
        "launch",
        "--config_file",
        accelerate_config,
        spec.script,
        *rest,
    ]
    print("config valid; starting: accelerate launch --config_file", accelerate_config, spec.script, *rest, flush=True)
    os.execv(sys.executable, command)
    return 0  # not reached
