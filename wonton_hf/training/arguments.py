"""The `TrainingArguments` fields pretraining and SFT map the same way from their run configs, mapped once.

Pretraining passes them to `TrainingArguments`, SFT to TRL's `SFTConfig` (a subclass); each adds its own
fields (steps, schedule details, packing) on top.
"""

from __future__ import annotations

from typing import Any

from ..distributed import world_size
from .devices import device_arguments
from .fsdp import fsdp_training_arguments


def common_training_arguments(config: Any) -> dict[str, Any]:
    """The `TrainingArguments` fields every run sets the same way, from a pretraining or SFT run config."""
    train = config.train
    return dict(
        output_dir=str(config.run_dir),
        run_name=config.run_name,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(world_size()),
        activation_checkpointing=train.gradient_checkpointing,  # transformers 5.24's name (the old one warns)
        deepspeed=train.deepspeed,
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        save_total_limit=None,  # rotation after the COMPLETE marker: run_callbacks passes train.save_total_limit
        report_to=train.report_to,
        seed=train.seed,
        data_seed=train.seed,
        **device_arguments(train),  # use_cpu, precision, and the DeepSpeed- or FSDP-on-CPU process state
        **fsdp_training_arguments(train.fsdp),  # FSDP2 (train.fsdp); the mixed-precision policy: fsdp.prepare_fsdp
    )


def optimizer_arguments(opt: Any) -> dict[str, Any]:
    """AdamW and the LR schedule from an `OptimizerFields` section (pretraining's `optimizer`, SFT's `train`)."""
    return dict(
        learning_rate=opt.learning_rate,
        adam_beta1=opt.betas[0],
        adam_beta2=opt.betas[1],
        weight_decay=opt.weight_decay,
        max_grad_norm=opt.max_grad_norm,
        lr_scheduler_type=opt.lr_scheduler_type,
    )


def scheduler_kwargs(opt: Any, max_steps: int) -> dict[str, Any]:
    """`lr_scheduler_kwargs` for the schedules whose floor or phases the run config sets (transformers' own
    schedulers: `get_cosine_with_min_lr_schedule_with_warmup`, `get_wsd_schedule`)."""
    if opt.lr_scheduler_type == "cosine_with_min_lr":
        return {"min_lr_rate": opt.min_lr_rate}
    if opt.lr_scheduler_type == "warmup_stable_decay":
        # the stable phase is what warm-up and decay leave of `num_training_steps` (the Trainer passes max_steps)
        return {
            "num_decay_steps": opt.wsd_decay_steps(max_steps),
            "decay_type": opt.decay_type,
            "min_lr_ratio": opt.min_lr_rate,
        }
    return {}


__all__ = ["common_training_arguments", "optimizer_arguments", "scheduler_kwargs"]
