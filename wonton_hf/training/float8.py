"""float8 training of the decoder layers' linears: torchao through accelerate (`train.float8` in the run config).

accelerate 1.15 does the work: `Accelerator(mixed_precision="fp8", kwargs_handlers=[AORecipeKwargs(config)])`
swaps every `nn.Linear` whose sides are multiples of 16 for torchao's `Float8Linear` in `prepare()` (except the
first and the last linear, which it keeps in bf16 for stability: here layer 0's `qkv_proj` and `lm_head`, whose
weight the chunked loss uses directly anyway), and runs the forward under bf16 autocast. The Trainer builds its
Accelerator with `mixed_precision` from `bf16`/`fp16` and no recipe, so `Float8Trainer` changes only that hook
(`_build_accelerator_args`).

Refused before anything is built, with one message naming `train.float8` and the fix, where it cannot work:
without torchao (the `float8` extra), without a CUDA device (CPU runs, `train.use_cpu: true`), or on a GPU below
compute capability 8.9 (float8 tensor cores: Ada L4/L40/RTX 4090, Hopper H100/H200, Blackwell). accelerate itself
would, on an older GPU, log a warning and train in fp16 instead: a different run than the one asked for.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from transformers import Trainer

from .schema import ConfigError

MIN_CAPABILITY = (8, 9)
"""Compute capability of the first NVIDIA GPUs with float8 tensor cores (Ada Lovelace; Hopper is 9.0)."""

__all__ = ["Float8Trainer", "MIN_CAPABILITY", "check_float8", "float8_problems", "recipe_kwargs"]


def float8_problems(float8: Any, use_cpu: bool | None) -> list[tuple[str, str]]:
    """Why this process cannot train in float8 (empty when it can); `float8` is the `train.float8` section."""
    if float8 is None:
        return []
    fix = "set `train.float8: null` to train in bf16"
    if use_cpu or not torch.cuda.is_available():
        where = "train.use_cpu is true" if use_cpu else "this process sees no CUDA device"
        return [
            (
                "train.float8",
                f"float8 matmuls need an NVIDIA GPU of compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} "
                f"(H100/H200, L4/L40, RTX 4090, B200) and {where}: {fix}.",
            )
        ]
    if importlib.util.find_spec("torchao") is None:
        return [("train.float8", f"needs torchao: `pip install 'wonton_hf[float8]'`, or {fix}.")]
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        if capability < MIN_CAPABILITY:
            return [
                (
                    "train.float8",
                    f"GPU {index} ({torch.cuda.get_device_name(index)}) has compute capability "
                    f"{capability[0]}.{capability[1]}, below the {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} float8 needs "
                    f"(accelerate would silently train in fp16 instead): {fix}.",
                )
            ]
    return []


def check_float8(config: Any) -> None:
    """Raise `ConfigError` naming `train.float8` when this process cannot train in float8 (see the module doc)."""
    problems = float8_problems(getattr(config.train, "float8", None), config.train.use_cpu)
    if problems:
        raise ConfigError(problems, getattr(config, "WHAT", "run config"))


def recipe_kwargs(recipe: str) -> Any:
    """accelerate's `AORecipeKwargs` for a torchao recipe name.

    tensorwise scaling also casts the weights to float8 before FSDP2's all-gather (half the bytes of bf16);
    `pad_inner_dim` keeps `torch._scaled_mm`'s multiple-of-16 rule for any inner dimension.
    """
    import dataclasses

    from accelerate.utils import AORecipeKwargs
    from torchao.float8 import Float8LinearConfig

    config = Float8LinearConfig.from_recipe_name(recipe)
    config = dataclasses.replace(config, pad_inner_dim=True, enable_fsdp_float8_all_gather=recipe == "tensorwise")
    return AORecipeKwargs(config=config)


class Float8Trainer(Trainer):
    """A `Trainer` whose Accelerator trains in float8 (`mixed_precision="fp8"`, torchao's recipe `float8_recipe`)."""

    def __init__(self, *args: Any, float8_recipe: str = "tensorwise", **kwargs: Any) -> None:
        self.float8_recipe = float8_recipe  # read by `_build_accelerator_args`, which `Trainer.__init__` calls
        super().__init__(*args, **kwargs)

    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        args = super()._build_accelerator_args(**kwargs)
        args["mixed_precision"] = "fp8"
        args["kwargs_handlers"] = [*args.get("kwargs_handlers", []), recipe_kwargs(self.float8_recipe)]
        return args
