"""FSDP2 (`torch.distributed.fsdp.fully_shard`) through accelerate's plugin, from the run config's `train.fsdp`.

The HF Trainer already drives FSDP2: `TrainingArguments(fsdp=True, fsdp_config={"version": 2, ...})` becomes
accelerate's `FullyShardedDataParallelPlugin`, which shards every decoder layer (then the embedding, the
final norm with the head, and the root) with `fully_shard`, checkpoints through torch DCP and resumes from it.
This module only maps the run config onto that and fills the three gaps measured with transformers 5.24 and
accelerate 1.15:

- **Mixed precision.** `TrainingArguments` has no field for FSDP's `MixedPrecisionPolicy`; accelerate then
  uses the run's precision for both the parameters and the gradient reduction (bf16 reduce-scatter). We set
  the policy on the plugin before the model is wrapped: bf16 parameters, fp32 reduction (what torchtitan and
  OLMo-core run), unless `train.fsdp.reduce_dtype: bf16`.
- **CPU processes.** accelerate picks its FSDP branch only for accelerator devices: with `use_cpu` (how it
  opens a gloo group on a CUDA-less machine) it silently prepares the model with DDP instead, although
  torch's `fully_shard` runs on CPU over gloo. `fsdp_on_cpu_state` opens the gloo process state first and
  presents it as multi-device, so that the plugin is taken; the model is then sharded on CPU (parameters
  become `DTensor`s with `Shard(0)` over the ranks). For tests and sharding checks, not speed.
- **The final model.** With sharded checkpoints (the default: each rank writes its shard in parallel, and DCP
  reshards on load, so a run resumes on another number of processes), `Trainer.save_model` writes no weights;
  `save_full_model` switches the plugin to a full state dict for that save (accelerate's documented pattern),
  so `final/` is an ordinary `from_pretrained` directory.

One more trap, in every FSDP2 save: `fully_shard` changes the model's class to a generated `FSDP<Name>` defined
in torch's `_fsdp_init` module, and `save_pretrained` copies "the model's code" from the class's module and
names it in `auto_map`: the saved directory got torch's `_fsdp_*.py` files and
`"AutoModelForCausalLM": "_fsdp_init.FSDPWontonForCausalLM"`, which no fresh process can load.
`KeepModelIdentity` gives the generated class the module and name of the class it wraps once the Trainer has
wrapped the model (`isinstance` and FSDP's hooks are unaffected).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback

STATE_DICT_TYPES = {"sharded": "SHARDED_STATE_DICT", "full": "FULL_STATE_DICT"}
"""`train.fsdp.state_dict_type` -> accelerate's name."""

DEFAULT_LAYER_CLASSES = ["WontonDecoderLayer"]
"""What `fully_shard` wraps one by one: the model's `_no_split_modules`."""


def fsdp_training_arguments(fsdp: Any) -> dict[str, Any]:
    """`TrainingArguments` fields for FSDP2 from a `train.fsdp` section (`{}` when the section is null)."""
    if fsdp is None:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": list(fsdp.layer_classes or DEFAULT_LAYER_CLASSES),
            "reshard_after_forward": fsdp.reshard_after_forward,
            "activation_checkpointing": fsdp.activation_checkpointing,
            "state_dict_type": STATE_DICT_TYPES[fsdp.state_dict_type],
        },
    }


def fsdp_on_cpu_state() -> dict[str, Any]:
    """A gloo process state that accelerate's FSDP branch accepts, made before `TrainingArguments` (see the
    module docstring); returns the `TrainingArguments` fields that make the Trainer use it."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True)  # gloo over the launcher's ranks (MULTI_CPU)
    if state.distributed_type == DistributedType.MULTI_CPU:
        # accelerate 1.15 sets DistributedType.FSDP only when the process state is multi-device; the device
        # stays the CPU (already set), and AcceleratorState replaces this type with FSDP when the Trainer builds it.
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    return {"accelerator_config": {"use_configured_state": True}}


def mixed_precision_policy(precision_flags: dict[str, bool], reduce_dtype: str) -> Any:
    """bf16/fp16 parameters with `reduce_dtype` gradient reduction; None in fp32 (nothing to cast)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    param = torch.bfloat16 if precision_flags.get("bf16") else torch.float16 if precision_flags.get("fp16") else None
    if param is None:
        return None
    reduce = torch.float32 if reduce_dtype == "fp32" else param
    return MixedPrecisionPolicy(param_dtype=param, reduce_dtype=reduce, output_dtype=param)


def prepare_fsdp(trainer: Any, fsdp: Any) -> None:
    """Before `train()` wraps the model: the mixed-precision policy of `train.fsdp` on accelerate's plugin.

    Also checks that the Trainer really runs FSDP2 when the run config asked for it (a DDP fallback would
    train, but with the whole optimizer state on every rank and a checkpoint format resume does not expect).
    """
    if fsdp is None:
        return
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if not getattr(trainer, "is_fsdp_enabled", False) or plugin is None or plugin.fsdp_version != 2:
        raise RuntimeError(
            "`train.fsdp` is set but the Trainer did not enable FSDP2 "
            f"(distributed type {trainer.accelerator.state.distributed_type}); launch with torchrun or "
            "`accelerate launch --config_file examples/configs/accelerate/fsdp2.yaml` (fsdp2_cpu.yaml without a GPU)."
        )
    trainer.add_callback(KeepModelIdentity())
    flags = {"bf16": trainer.args.bf16, "fp16": trainer.args.fp16}
    policy = mixed_precision_policy(flags, fsdp.reduce_dtype)
    if policy is not None:
        plugin.mixed_precision_policy = policy


class KeepModelIdentity(TrainerCallback):
    """Once the model is wrapped: the generated `FSDP<Name>` class reports the wrapped class's module and name,
    so `save_pretrained` copies the model's own code and writes a loadable `auto_map` (module docstring)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from torch.distributed.fsdp import FSDPModule

        if model is None or not isinstance(model, FSDPModule):
            return
        generated = type(model)
        wrapped = next(c for c in generated.__mro__[1:] if not issubclass(c, FSDPModule))
        generated.__module__, generated.__name__ = wrapped.__module__, wrapped.__name__
        generated.__qualname__ = wrapped.__qualname__


def is_fsdp(trainer: Any) -> bool:
    return bool(getattr(trainer, "is_fsdp_enabled", False))


def save_full_model(trainer: Any, output_dir: str) -> None:
    """`trainer.save_model(output_dir)` with the full (gathered) state dict, whatever the checkpoints use: the
    final model is a plain `from_pretrained` directory. Every rank must call it (the gather is a collective)."""
    plugin = trainer.accelerator.state.fsdp_plugin if is_fsdp(trainer) else None
    if plugin is None:
        trainer.save_model(output_dir)
        return
    previous = plugin.state_dict_type
    _switch_state_dict_type(plugin, "FULL_STATE_DICT")
    try:
        trainer.save_model(output_dir)
    finally:
        _switch_state_dict_type(plugin, previous)


def _switch_state_dict_type(plugin: Any, kind: Any) -> None:
    # `set_state_dict_type` builds the matching state-dict configs only where none is set yet
    plugin.state_dict_config = plugin.optim_state_dict_config = None
    plugin.set_state_dict_type(kind)


def launched_with_fsdp() -> bool:
    """`accelerate launch` with an FSDP config sets this for the processes it starts."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


__all__ = [
    "DEFAULT_LAYER_CLASSES",
    "KeepModelIdentity",
    "STATE_DICT_TYPES",
    "fsdp_on_cpu_state",
    "fsdp_training_arguments",
    "launched_with_fsdp",
    "mixed_precision_policy",
    "prepare_fsdp",
    "save_full_model",
]
