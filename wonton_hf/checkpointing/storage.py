"""Saves that fail say why: a full or read-only output directory is named as such, before or during a save.

Measured before this module: a disk that fills during `torch.save` surfaces as `RuntimeError: [enforce fail at
inline_container.cc:672] . unexpected pos ...` (safetensors: `SafetensorError ... IoError(Os { code: 28 ...`),
which names neither the disk nor the directory. Two guards, both installed by `guard_checkpoint_saves`:

* before each save (`DiskSpaceCallback.on_step_end`, when the Trainer has decided to save): the free space of
  the output directory against the size of the last complete checkpoint (its manifest), or an estimate from the
  parameter count before the first one. Below `warn_factor` x that size a warning (one per save) says how many
  checkpoints still fit; below 1x the run stops with the directory and the space needed, *before* writing
  anything (a stop there loses only the steps since the last checkpoint, which the message says);
* during a save (`trainer._save_checkpoint` wrapped on the instance, so pretraining's `Trainer` and SFT's
  `SFTTrainer` get the same): any exception is examined — errno, the text of torch's and safetensors' errors,
  and a look at the directory afterwards (free space, read-only mount, write permission) — and re-raised as
  `CheckpointSaveError` saying what it is.

Nothing already saved is touched by a failed save: old checkpoints are deleted (`save_total_limit`) only once the
new one is marked complete (`completion.CheckpointCompletionCallback`), and the failed `checkpoint-N/` has no
`COMPLETE` marker, so no resume or rollback reads it.
Each rank checks its own view of the directory (node-local disks differ) and all ranks agree before stopping,
so no rank is left waiting in a collective for one that stopped.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..distributed import gather_object, rank
from .protocol import CHECKPOINT_PREFIX, list_checkpoints, read_marker

logger = logging.getLogger(__name__)

_OS_CAUSES = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied (the directory is not writable by this user)",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an I/O error (failing disk or lost network file system)",
}
_FULL_DISK_TEXT = ("unexpected pos", "No space left", "StorageFull", "code: 28", "file write failed")


class CheckpointSaveError(RuntimeError):
    """A checkpoint cannot be (or could not be) written; the message names the directory and the cause."""


def _gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (the output directory may not exist before the first save)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(directory: str | Path) -> int:
    return shutil.disk_usage(_existing(Path(directory))).free


def last_checkpoint_bytes(run_dir: str | Path) -> int | None:
    """Size of the newest complete checkpoint, from its manifest (or `du` of it for a marker without one)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        record = read_marker(path)
        if not record:
            continue
        files = record.get("files")
        if isinstance(files, dict):
            return sum(int(entry["size"]) for entry in files.values())
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def estimated_checkpoint_bytes(model: Any) -> int:
    """Before the first checkpoint: weights in their dtype plus two fp32 Adam moments per parameter."""
    return sum(p.numel() * (p.element_size() + 8) for p in model.parameters())


def space_problem(
    directory: str | Path, needed: int, warn_factor: float, basis: str = "the size of the last checkpoint"
) -> tuple[str, str] | None:
    """`("error" | "warning", message)` when `directory` has less than `needed` (x `warn_factor`) bytes free."""
    free = free_bytes(directory)
    if free < needed:
        return (
            "error",
            f"Not enough space to save a checkpoint in {directory}: {_gb(free)} free, {_gb(needed)} needed ({basis}). "
            f"Free space there (or lower `save_total_limit`), then rerun the same command: it resumes from the last "
            f"complete checkpoint.",
        )
    if free < needed * warn_factor:
        return (
            "warning",
            f"Disk space is running out in {directory}: {_gb(free)} free, {int(free // max(needed, 1))} more "
            f"checkpoint(s) of {_gb(needed)} fit.",
        )
    return None


def writability_problem(directory: str | Path) -> str | None:
    """Why `directory` (or the parent it would be created in) cannot be written, or None."""
    target = _existing(Path(directory))
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return _OS_CAUSES[errno.EROFS]
    except OSError:
        pass
    if not os.access(target, os.W_OK):
        return _OS_CAUSES[errno.EACCES]
    return None


def describe_save_failure(error: BaseException, directory: str | Path, needed: int | None) -> str:
    """What a failed save was, in words: the OS cause if there is one, else what the directory shows now."""
    cause = None
    for exc in (error, error.__cause__, error.__context__):
        if isinstance(exc, OSError) and exc.errno in _OS_CAUSES:
            cause = _OS_CAUSES[exc.errno]
            break
    if cause is None:
        cause = writability_problem(directory)
    free = None
    try:
        free = free_bytes(directory)
    except OSError:
        pass
    text = str(error)
    if cause is None and (
        any(marker in text for marker in _FULL_DISK_TEXT) or (needed and free is not None and free < needed)
    ):
        cause = "the disk is full (a write stopped short)"
    space = f"; {_gb(free)} free there" if free is not None else ""
    space += f", the last checkpoint took {_gb(needed)}" if needed else ""
    return (
        f"Saving a checkpoint to {directory} failed: {cause or 'an error while writing'}{space}. The checkpoints "
        f"already complete are untouched; the partial one has no COMPLETE marker and is never resumed from (delete it "
        f"to free its space). Original error: {type(error).__name__}: {text[:300]}"
    )


def _agree(problem: tuple[str, str] | None) -> list[tuple[int, tuple[str, str]]]:
    """Every rank's problem (rank, problem), on every rank: a stop decided by one rank is taken by all."""
    return [(r, p) for r, p in enumerate(gather_object(problem)) if p is not None]


class DiskSpaceCallback(TrainerCallback):
    """Checks free space before each save (see the module docstring); stops every rank, with the reason."""

    def __init__(self, warn_factor: float = 2.0) -> None:
        self.warn_factor = warn_factor
        self.model: Any = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not control.should_save:
            return control
        run_dir = Path(args.output_dir)
        needed, basis = last_checkpoint_bytes(run_dir), "the size of the last checkpoint"
        if needed is None and model is not None:
            needed, basis = estimated_checkpoint_bytes(model), "estimated: weights + two fp32 Adam moments"
        unwritable = writability_problem(run_dir)
        problem: tuple[str, str] | None = None
        if unwritable:
            problem = ("error", f"Cannot save a checkpoint in {run_dir}: {unwritable}.")
        elif needed:
            problem = space_problem(run_dir, needed, self.warn_factor, basis)
        found = _agree(problem)
        errors = [
            f"rank {r}: {message}" if len(found) > 1 else message for r, (kind, message) in found if kind == "error"
        ]
        if errors:
            raise CheckpointSaveError(
                f"Stopping at step {state.global_step} before its checkpoint: " + " | ".join(dict.fromkeys(errors))
            )
        if found and rank() == found[0][0]:
            logger.warning(found[0][1][1])
        return control


def guard_checkpoint_saves(trainer: Any, warn_factor: float = 2.0) -> None:
    """Install both guards on `trainer` (idempotent): the free-space check before saves, clear errors during them."""
    callbacks = trainer.callback_handler.callbacks
    if not any(isinstance(cb, DiskSpaceCallback) for cb in callbacks):
        trainer.add_callback(DiskSpaceCallback(warn_factor))
    if getattr(trainer._save_checkpoint, "_wonton_guarded", False):
        return
    original = trainer._save_checkpoint

    @functools.wraps(original)
    def save_checkpoint(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except CheckpointSaveError:
            raise
        except Exception as error:  # noqa: BLE001 - examined and re-raised with its cause named
            directory = Path(trainer.args.output_dir) / f"{CHECKPOINT_PREFIX}-{trainer.state.global_step}"
            needed = last_checkpoint_bytes(trainer.args.output_dir)
            message = describe_save_failure(error, directory, needed)
            logger.error(message)
            raise CheckpointSaveError(message) from error

    save_checkpoint._wonton_guarded = True  # type: ignore[attr-defined]
    trainer._save_checkpoint = save_checkpoint


__all__ = [
    "CheckpointSaveError",
    "DiskSpaceCallback",
    "describe_save_failure",
    "estimated_checkpoint_bytes",
    "free_bytes",
    "guard_checkpoint_saves",
    "last_checkpoint_bytes",
    "space_problem",
    "writability_problem",
]
