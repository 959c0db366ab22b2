"""What the scheduler needs from the Trainer, checked when training starts: a clear error, not wrong data."""

from __future__ import annotations

from typing import Any


def check_training_arguments(args: Any) -> None:
    """The three TrainingArguments the scheduler needs (`wonton_hf.data.training_arguments` sets them)."""
    config = args.accelerator_config
    dispatch = config.get("dispatch_batches") if isinstance(config, dict) else getattr(config, "dispatch_batches", None)
    problems = []
    if dispatch is not False and args.world_size > 1:
        problems.append("accelerator_config.dispatch_batches must be False (each rank reads its own shard)")
    if args.remove_unused_columns:
        problems.append("remove_unused_columns must be False (source_ids/data_state reach the callback)")
    if not args.ignore_data_skip:
        problems.append("ignore_data_skip must be True (the scheduler resumes itself; skipping batches would replay)")
    if problems:
        raise ValueError(
            "TrainingArguments not set up for OnlineDataScheduler: "
            + "; ".join(problems)
            + ". Build them with `wonton_hf.data.training_arguments(...)`."
        )


def check_batching(scheduler: Any, args: Any) -> None:
    """The scheduler's workers derive the optimizer step from its batch size and accumulation: they must agree."""
    for name, theirs in (
        ("batch_size", args.per_device_train_batch_size),
        ("gradient_accumulation_steps", args.gradient_accumulation_steps),
    ):
        ours = getattr(scheduler.settings, name)
        if ours != theirs:
            raise ValueError(
                f"OnlineDataScheduler `{name}`={ours} but the Trainer uses {theirs}; build the "
                "scheduler with the same values (its workers derive the optimizer step from them)."
            )
    if scheduler.world_size != args.world_size:
        raise ValueError(
            f"OnlineDataScheduler `world_size`={scheduler.world_size} but the Trainer runs {args.world_size} processes; "
            "leave `rank`/`world_size` unset to take them from the launcher."
        )
