"""The resume plan every rank agrees on: decided (and verified) once, on rank 0.

Verifying re-reads and hashes every file of a checkpoint; doing it on every rank would multiply the reads by
the number of processes on a node, and ranks that disagreed (one sees a file damaged, another does not) would
load different states. Rank 0 decides; the others receive its plan, or its error (raised everywhere, so no
rank waits in a collective for one that stopped).
"""

from __future__ import annotations

from pathlib import Path

from ..distributed import broadcast_object, is_main_process
from .protocol import CheckpointIntegrityError, ResumePlan, resume_plan


def shared_resume_plan(run_dir: str | Path, resume: str) -> ResumePlan:
    """`protocol.resume_plan` (verified) on rank 0, the same plan on every rank."""
    outcome: tuple[ResumePlan | None, str | None] = (None, None)
    if is_main_process():
        try:
            outcome = (resume_plan(run_dir, resume), None)
        except CheckpointIntegrityError as error:
            outcome = (None, str(error))
    plan, error = broadcast_object(outcome)
    if error is not None:
        raise CheckpointIntegrityError(error)
    return plan


__all__ = ["shared_resume_plan"]
