"""The checkpoint protocol: which `checkpoint-N` a run may resume or roll back to — only one every rank finished.

The Trainer writes `checkpoint-N/` piece by piece (weights, optimizer shards per rank, scheduler, RNG per
rank, trainer state, the data scheduler's per-rank state from its callback) and nothing marks the end: a
crash half-way leaves a directory that `transformers.trainer_utils.get_last_checkpoint` would pick anyway.
`CheckpointCompletionCallback` runs after every other `on_save` (add it last), waits for all ranks, and
only then lets rank 0 write `checkpoint-N/COMPLETE` (written to a temporary name, fsynced, renamed:
atomic on POSIX). A checkpoint without the marker is never a resume point (`newest_complete_checkpoint`)
nor a rollback point (`SpikeGuard`, which uses the same function with `at_or_before`), whether or not
other checkpoints of the run carry one. `resume_plan` says in one line where a run starts and why.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..distributed import barrier

COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
"""`checkpoint-N`; renamed ones (`checkpoint-N-rolled-back`) do not match."""


def checkpoint_step(path: str | Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` directory under `run_dir`, complete or not, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        (step, path) for path in run_dir.iterdir() if path.is_dir() and (step := checkpoint_step(path)) is not None
    ]
    return sorted(found)


def is_complete(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


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


def newest_complete_checkpoint(run_dir: str | Path, at_or_before: int | None = None) -> Path | None:
    """The highest-step complete `checkpoint-N` under `run_dir` (with N <= `at_or_before` if given), or None."""
    complete = [
        path
        for step, path in list_checkpoints(run_dir)
        if is_complete(path) and (at_or_before is None or step <= at_or_before)
    ]
    return complete[-1] if complete else None


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path | None
    notice: str
    """one line for the log: fresh or from which checkpoint, and which newer ones were skipped and why"""


def resume_plan(run_dir: str | Path, resume: str) -> ResumePlan:
    """Where a run with `resume` (auto | never | a directory) starts, with the reason in words."""
    run_dir = Path(run_dir)
    existing = list_checkpoints(run_dir)
    if resume == "never":
        ignored = f"; {len(existing)} checkpoint(s) in {run_dir} are ignored" if existing else ""
        return ResumePlan(None, f"Starting fresh (resume: never){ignored}.")
    if resume != "auto":
        return ResumePlan(Path(resume), f"Resuming from {resume} (given by `resume`).")
    chosen = newest_complete_checkpoint(run_dir)
    chosen_step = checkpoint_step(chosen) if chosen else -1
    skipped = [path.name for step, path in existing if step > chosen_step]
    why = (
        f"; skipped {', '.join(skipped)}: incomplete (no {COMPLETE_MARKER} marker: the run stopped while writing it)"
        if skipped
        else ""
    )
    if chosen is None:
        where = f"no complete checkpoint in {run_dir}" if existing else f"no checkpoint in {run_dir}"
        return ResumePlan(None, f"Starting fresh: {where}{why}.")
    return ResumePlan(chosen, f"Resuming from {chosen} (step {chosen_step}, the newest complete checkpoint){why}.")


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


def ensure_completion_marking(trainer) -> None:
    """Append a `CheckpointCompletionCallback` (last, after every other `on_save`) unless one is there."""
    callbacks = trainer.callback_handler.callbacks
    for callback in [cb for cb in callbacks if isinstance(cb, CheckpointCompletionCallback)]:
        callbacks.remove(callback)
    callbacks.append(CheckpointCompletionCallback())


__all__ = [
    "CHECKPOINT_PATTERN",
    "COMPLETE_MARKER",
    "CheckpointCompletionCallback",
    "ResumePlan",
    "checkpoint_step",
    "ensure_completion_marking",
    "is_complete",
    "list_checkpoints",
    "mark_complete",
    "newest_complete_checkpoint",
    "resume_plan",
]
