"""Launches that cannot train what the user asked for, refused before anything is built (pretraining and SFT).

The traps, measured with accelerate 1.15 and DeepSpeed 0.19 on CPU machines: a DeepSpeed config in a process
no launcher started fails deep inside DeepSpeed (`No module named 'mpi4py'`); `accelerate launch --cpu
--num_processes 2` starts one process; `use_cpu: false` with several processes and no CUDA device makes each
process train its own copy; a DeepSpeed config with ACCELERATE_USE_CPU set (the DDP-on-CPU setting) stops inside
accelerate with an AttributeError. Each is cheap to see from the environment and expensive to find in a result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..distributed import world_size


class LaunchError(ValueError):
    """The process was started in a way that cannot train correctly; the message says how to launch."""


def _parent_command_line() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _requested_processes(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--num_processes="):
            return int(arg.split("=", 1)[1])
        if arg == "--num_processes" and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


def check_launch(config: Any, script: str = "examples/pretrain.py") -> None:
    """Refuse starts that would not train what the user asked for (see the module docstring).

    `config` is any run config with `train.deepspeed` and `train.use_cpu` (pretraining and SFT share this);
    `script` is the entry point named in the launch commands the messages suggest.
    """
    launched = "WORLD_SIZE" in os.environ
    if config.train.deepspeed and not launched:
        raise LaunchError(
            "`train.deepspeed` is set but this process was not started by a distributed launcher (plain `python` "
            "fails inside DeepSpeed with `No module named 'mpi4py'`). Launch with:\n"
            f"  accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml {script} ...\n"
            "or, without a GPU: --config_file examples/configs/accelerate/deepspeed_zero2_cpu.yaml"
        )
    if config.train.deepspeed and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        raise LaunchError(
            "`train.deepspeed` is set and so is ACCELERATE_USE_CPU (accelerate's CPU mode, for DDP on CPU): the "
            "Trainer would stop inside accelerate with \"'AcceleratorState' object has no attribute "
            "'mixed_precision'\". Unset ACCELERATE_USE_CPU (and `--cpu`): DeepSpeed on a CUDA-less machine is set "
            "up by the run itself."
        )
    _check_fsdp_launch(config, script, launched)
    parent = _parent_command_line()
    requested = _requested_processes(parent) if any("accelerate" in part for part in parent[:3]) else None
    if not launched and requested and requested > 1:
        raise LaunchError(
            f"`accelerate launch` was asked for {requested} processes but started one (it does so with `--cpu`). "
            f"Two CPU processes: `accelerate launch --config_file examples/configs/accelerate/multi_cpu.yaml {script}` "
            f"or `torchrun --nproc_per_node 2 {script}`."
        )
    if launched and world_size() > 1 and config.train.use_cpu is False and not torch.cuda.is_available():
        raise LaunchError(
            "`train.use_cpu: false` with several processes and no CUDA device: each process would train its own "
            "copy. Remove the setting (CPU is chosen automatically) or run on GPUs."
        )


def _check_fsdp_launch(config: Any, script: str, launched: bool) -> None:
    """FSDP2 needs a process group (one process is fine); the run config holds its settings, so an FSDP launcher
    config without `train.fsdp` (or with DeepSpeed) is refused rather than guessed."""
    fsdp = getattr(config.train, "fsdp", None)
    env_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    env_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if fsdp is not None and not launched:
        raise LaunchError(
            "`train.fsdp` is set but this process was not started by a distributed launcher (FSDP needs a process "
            "group, even for one process). Launch with:\n"
            f"  accelerate launch --config_file examples/configs/accelerate/fsdp2.yaml {script} ...\n"
            f"or, without a GPU: --config_file examples/configs/accelerate/fsdp2_cpu.yaml, or `torchrun "
            f"--nproc_per_node N {script} ...`"
        )
    if fsdp is not None and env_deepspeed:
        raise LaunchError(
            "`train.fsdp` is set but the launcher config is DeepSpeed's: use fsdp2.yaml / fsdp2_cpu.yaml."
        )
    if fsdp is None and env_fsdp:
        raise LaunchError(
            "The launcher config asks for FSDP but the run config has no `train.fsdp` section (it holds the FSDP "
            "settings): add `train.fsdp: {}` (or the override `train.fsdp={}`), or launch with another config."
        )


__all__ = ["LaunchError", "check_launch"]
