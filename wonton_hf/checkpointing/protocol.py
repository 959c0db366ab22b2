"""Reading and writing the checkpoint protocol in a run directory, with the standard library only.

A crash half-way through a save leaves a `checkpoint-N/` that `transformers.trainer_utils.get_last_checkpoint`
would pick anyway. A checkpoint counts only once it holds the `COMPLETE` marker (written to a temporary name,
fsynced, renamed: atomic on POSIX) by `completion.CheckpointCompletionCallback`. A checkpoint without the
marker is never a resume point (`newest_complete_checkpoint`) nor a rollback point (`SpikeGuard`, which uses
the same function with `at_or_before`), whether or not other checkpoints of the run carry one. `resume_plan`
says in one line where a run starts and why.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_PREFIX = "checkpoint"
"""transformers' `trainer_utils.PREFIX_CHECKPOINT_DIR`, spelled out: importing it imports torch (a test keeps
them equal)."""
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
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


__all__ = [
    "CHECKPOINT_PATTERN",
    "CHECKPOINT_PREFIX",
    "COMPLETE_MARKER",
    "ResumePlan",
    "checkpoint_step",
    "is_complete",
    "list_checkpoints",
    "mark_complete",
    "newest_complete_checkpoint",
    "resume_plan",
]
