"""The checkpoint protocol: which `checkpoint-N` a run may resume or roll back to — only one every rank finished.

Below both `training`/`chat` (resume) and `callbacks` (SpikeGuard's rollback, `add_monitors`), so neither of
those imports the other for it. `protocol` reads and writes the run directory with the standard library only
(`wonton-hf plot-run` orders checkpoints without importing torch); `completion` is the Trainer callback that
writes the marker. Names load on first use.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "CHECKPOINT_PATTERN": "protocol",
    "CHECKPOINT_PREFIX": "protocol",
    "COMPLETE_MARKER": "protocol",
    "HASH_ALGORITHM": "protocol",
    "CheckpointIntegrityError": "protocol",
    "ResumePlan": "protocol",
    "Verification": "protocol",
    "build_manifest": "protocol",
    "file_hash": "protocol",
    "newest_verified_checkpoint": "protocol",
    "read_marker": "protocol",
    "verify_checkpoint": "protocol",
    "checkpoint_step": "protocol",
    "is_complete": "protocol",
    "list_checkpoints": "protocol",
    "prune_complete_checkpoints": "protocol",
    "mark_complete": "protocol",
    "newest_complete_checkpoint": "protocol",
    "resume_plan": "protocol",
    "shared_resume_plan": "resume",
    "CheckpointSaveError": "storage",
    "DiskSpaceCallback": "storage",
    "guard_checkpoint_saves": "storage",
    "CheckpointCompletionCallback": "completion",
    "ensure_completion_marking": "completion",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
