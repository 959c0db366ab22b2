"""Which optimizer step a window belongs to: the one place that knows how DataLoader workers take turns.

A rank's DataLoader with `num_workers` workers hands out whole batches from worker 0, 1, ... in turn, each
batch `batch_size` windows of one worker; `gradient_accumulation_steps` batches make an optimizer step. So a
worker (a *role* after a resume: see `role_of`) can tell, without talking to anyone, the step of every window
it produces, and the main process can tell the step from the windows each role has had consumed. Exact resume
and mixture changes at a recorded step both depend on these answers agreeing everywhere, so they are computed
here only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StepClock:
    batch_size: int
    """Windows per batch of one rank."""
    gradient_accumulation_steps: int
    """Batches per optimizer step."""
    num_workers: int = 1
    """DataLoader workers per rank (1 when iterated in process)."""
    base_step: int = 0
    """Optimizer step at which this layout (world size x workers) started."""

    def batch_of_window(self, role: int, window: int) -> int:
        """The rank's batch index (in this layout) of the `window`-th window produced by `role`."""
        return (window // self.batch_size) * self.num_workers + role

    def step_of_window(self, role: int, window: int) -> int:
        return self.base_step + self.batch_of_window(role, window) // self.gradient_accumulation_steps

    def batches_consumed(self, windows_per_role: Iterable[int]) -> int:
        """Batches consumed, from the windows each role has had consumed (a role's last batch may be short)."""
        return sum(math.ceil(w / self.batch_size) for w in windows_per_role)

    def steps_consumed(self, windows_per_role: Iterable[int]) -> int:
        return self.batches_consumed(windows_per_role) // self.gradient_accumulation_steps

    def current_step(self, windows_per_role: Iterable[int]) -> int:
        """The optimizer step whose batches come next."""
        return self.base_step + self.steps_consumed(windows_per_role)

    def rotation(self, windows_per_role: Iterable[int]) -> int:
        """The role whose batch comes next: after a resume, worker 0 must play it."""
        return self.batches_consumed(windows_per_role) % self.num_workers

    def role_of(self, worker: int, rotation: int) -> int:
        return (worker + rotation) % self.num_workers


def lookahead_steps(num_workers: int, prefetch_factor: int | None, gradient_accumulation_steps: int) -> int:
    """Optimizer steps between a mixture decision and its effect, so no worker has already produced those batches.

    Workers (`num_workers` 0: none, the data is made in process) run at most `prefetch_factor` batches ahead
    each, Accelerate fetches one more, and the step in progress may still need its own batches.
    """
    ahead = 2 + (num_workers * ((prefetch_factor or 2) + 1) if num_workers > 0 else 0)
    return 1 + math.ceil(ahead / gradient_accumulation_steps)


__all__ = ["StepClock", "lookahead_steps"]
