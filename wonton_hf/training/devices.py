"""Where and in which precision a run computes, and the DeepSpeed- and FSDP-on-CPU process states (pretraining
and SFT).

Both build their `TrainingArguments` through `device_arguments`, so the accelerate/DeepSpeed world-size trap
on CUDA-less machines is handled in one place.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def deepspeed_on_cpu_state() -> dict[str, Any]:
    """A DeepSpeed process state over gloo, made before `TrainingArguments` and handed to it.

    accelerate 1.15 drops DeepSpeed when told `cpu`, and without `cpu` on a CUDA-less machine it counts one
    process while DeepSpeed counts all of them (batch-size assertion, or silently unsharded training).
    Opening the state ourselves with an explicit gloo backend gives DeepSpeed's CPU accelerator and the
    Trainer the same world.
    """
    from accelerate import PartialState

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(cpu=False, backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def precision_flags(precision: str, use_cpu: bool) -> dict[str, bool]:
    """`auto`: bf16 on CUDA devices that support it, fp32 otherwise (CPU bf16 autocast is slower here)."""
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def device_arguments(train: Any) -> dict[str, Any]:
    """`use_cpu`, the precision flags and, for DeepSpeed on a CUDA-less machine, the process state it needs.

    `train` is the `train` section of a pretraining or SFT run config (`use_cpu`, `deepspeed`, `precision`).
    """
    use_cpu = train.use_cpu if train.use_cpu is not None else not torch.cuda.is_available()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed, if installed, warns that it guessed CPU
    extra: dict[str, Any] = {}
    if use_cpu and train.deepspeed:
        use_cpu, extra = False, deepspeed_on_cpu_state()
    elif use_cpu and getattr(train, "fsdp", None) is not None and "WORLD_SIZE" in os.environ:
        from .fsdp import fsdp_on_cpu_state

        extra = fsdp_on_cpu_state()  # else accelerate silently falls back to DDP on CPU
    return {"use_cpu": use_cpu, **precision_flags(train.precision, use_cpu), **extra}


__all__ = ["deepspeed_on_cpu_state", "device_arguments", "precision_flags"]
