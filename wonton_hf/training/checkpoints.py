"""Which checkpoint a run may resume from: only one that every rank finished writing.

The Trainer writes `checkpoint-N/` piece by piece (weights, optimizer shards per rank, scheduler, RNG per
rank, trainer state, the data scheduler's per-rank state from its callback) and nothing marks the end: a
crash half-way leaves a directory that `transformers.trainer_utils.get_last_checkpoint` would pick anyway.
`CheckpointCompletionCallback` runs after every other `on_save` (add it last), waits for all ranks, and
only then lets rank 0 write `checkpoint-N/COMPLETE` (written to a temporary name, fsynced, renamed:
atomic on POSIX). `newest_complete_checkpoint` ignores any directory without it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

COMPLETE_MARKER = "COMPLETE"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def mark_complete(checkpoint_dir: str | Path, step: int) -> Path:
    """Atomically write the marker that makes `checkpoint_dir` a resume point."""
    checkpoint_dir = Path(checkpoint_dir)
    marker = checkpoint_dir / COMPLETE_MARKER
    tmp = checkpoint_dir / f".{COMPLETE_MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"step": step, "time": time.time()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, marker)
    return marker


def newest_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-step `checkpoint-N` under `run_dir` that carries the completion marker, or None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    steps = [
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and (path / COMPLETE_MARKER).is_file()
    ]
    return max(steps)[1] if steps else None


class CheckpointCompletionCallback(TrainerCallback):
    """Marks each checkpoint complete once all ranks (and all earlier `on_save` callbacks) are done with it."""

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its optimizer shard, RNG state and data state
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, state.global_step)
        barrier()  # nobody proceeds (or gets killed) believing a checkpoint is final before it is
        return control
