"""`CheckpointCompletionCallback`: the `COMPLETE` marker written once every rank has finished a checkpoint.

The Trainer writes `checkpoint-N/` piece by piece (weights, optimizer shards per rank, scheduler, RNG per
rank, trainer state, the data scheduler's per-rank state from its callback) and nothing marks the end.
This callback runs after every other `on_save` (it must be last), waits for all ranks, and only then lets
rank 0 write the marker (`protocol.mark_complete`) with the manifest (sizes and hashes of every file) that
resume verifies, and the world size that wrote it (a resume on another one converts DeepSpeed's shards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..distributed import barrier, world_size
from .protocol import CHECKPOINT_PREFIX, mark_complete, prune_complete_checkpoints


class CheckpointCompletionCallback(TrainerCallback):
    """Marks each checkpoint complete once all ranks (and all earlier `on_save` callbacks) are done with it.

    With `keep`, it also deletes the oldest complete checkpoints beyond the newest `keep`, after the marking (see
    `protocol.prune_complete_checkpoints` for why this replaces the Trainer's own `save_total_limit` rotation).
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its optimizer shard, RNG state and data state
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, state.global_step, world_size=world_size())
                if self.keep is not None:
                    prune_complete_checkpoints(args.output_dir, self.keep)
        barrier()  # nobody proceeds (or gets killed) believing a checkpoint is final before it is
        return control


def ensure_completion_marking(trainer: Any, keep: int | None = None) -> None:
    """Append a `CheckpointCompletionCallback` (last, after every other `on_save`) unless one is there.

    `keep` (checkpoints to keep) replaces the one of a callback already installed only when given.
    """
    callbacks = trainer.callback_handler.callbacks
    present = [cb for cb in callbacks if isinstance(cb, CheckpointCompletionCallback)]
    for callback in present:
        callbacks.remove(callback)
    if keep is None and present:
        keep = present[-1].keep
    callbacks.append(CheckpointCompletionCallback(keep))


__all__ = ["CheckpointCompletionCallback", "ensure_completion_marking"]
