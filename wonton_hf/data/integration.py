"""Putting the scheduler under a `transformers.Trainer`: the arguments it needs and the callbacks it uses.

By default Accelerate reads an `IterableDataset` on rank 0 and dispatches slices of each batch to the other
ranks. The scheduler shards itself (by rank and DataLoader worker, `layout.py`), so dispatching would make
rank 0 read everything and the other ranks' shards go unread. `training_arguments` turns it off and sets the two
other arguments the scheduler relies on; `attach` adds the callbacks in the right place.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainingArguments
from transformers.data.data_collator import default_data_collator

from .callbacks import DataSchedulerCallback, MixtureFeedbackCallback, MixtureFileCallback
from .collator import PackedWindowCollator
from .mixture import Exp3Feedback
from .scheduler import OnlineDataScheduler

REQUIRED_ARGUMENTS: dict[str, Any] = {"remove_unused_columns": False, "ignore_data_skip": True}
"""`source_ids`/`data_state` must reach the model call; the scheduler resumes itself instead of skipping batches."""


def accelerator_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """An `accelerator_config` dict with `dispatch_batches=False` (each rank reads its own shard)."""
    merged = dict(config or {})
    if merged.get("dispatch_batches") is True:
        raise ValueError(
            "accelerator_config `dispatch_batches=True` conflicts with OnlineDataScheduler, which shards itself; "
            "remove it."
        )
    merged["dispatch_batches"] = False
    merged.setdefault("split_batches", False)
    return merged


def training_arguments(**kwargs: Any) -> TrainingArguments:
    """`TrainingArguments(**kwargs)` set up for the scheduler; conflicting explicit values are an error."""
    for name, value in REQUIRED_ARGUMENTS.items():
        if name in kwargs and kwargs[name] != value:
            raise ValueError(
                f"TrainingArguments `{name}={kwargs[name]!r}` conflicts with OnlineDataScheduler; use {value!r}."
            )
        kwargs[name] = value
    config = kwargs.get("accelerator_config")
    if config is not None and not isinstance(config, dict):
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    kwargs["accelerator_config"] = accelerator_config(config)
    return TrainingArguments(**kwargs)


def attach(
    trainer: Trainer,
    scheduler: OnlineDataScheduler,
    *,
    mixture_file: str | None = None,
    mixture_every_n_steps: int = 50,
    feedback: Exp3Feedback | None = None,
    resume_from: str | None = None,
    held_out: Any = None,
) -> DataSchedulerCallback:
    """Adds the scheduler's callbacks to `trainer`; returns the tracking callback.

    The tracker goes first in the callback list so the `data/*` metrics it adds to each log reach the
    reporting callbacks (TensorBoard, W&B...) that come after it.
    """
    if trainer.train_dataset is not scheduler:
        raise ValueError("attach(): `trainer.train_dataset` must be the OnlineDataScheduler being attached.")
    if trainer.data_collator is default_data_collator:
        trainer.data_collator = PackedWindowCollator()
    elif not isinstance(trainer.data_collator, PackedWindowCollator):
        raise ValueError(
            f"attach(): the Trainer's data_collator is {type(trainer.data_collator).__name__}; use "
            "`PackedWindowCollator` (it keeps source_ids and data_state for the callbacks)."
        )
    tracker = DataSchedulerCallback(scheduler, resume_from=resume_from)
    trainer.callback_handler.callbacks.insert(0, tracker)
    if mixture_file is not None:
        trainer.add_callback(MixtureFileCallback(scheduler, mixture_file, every_n_steps=mixture_every_n_steps))
    if feedback is not None:
        trainer.add_callback(MixtureFeedbackCallback(tracker, feedback, held_out=held_out))
    return tracker


__all__ = ["REQUIRED_ARGUMENTS", "accelerator_config", "attach", "training_arguments"]
