"""`MixtureFeedbackCallback`: the per-source training loss, or the held-out loss of each evaluation, steers the
mixture through EXP3 (ODM)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from ...distributed import broadcast_object, is_main_process
from ..mixture import Exp3Feedback
from .tracking import STATE_DIR, DataSchedulerCallback, resume_dir


@dataclass
class MixtureFeedbackCallback(TrainerCallback):
    """Loss-driven mixing: every `feedback.update_every` steps, the per-source training loss updates EXP3 weights."""

    tracker: DataSchedulerCallback
    feedback: Exp3Feedback = field(default_factory=Exp3Feedback)
    enabled: bool = True
    held_out: Any = None
    """a `HeldOutEvaluation`: the reward is then each evaluation's held-out loss per source (one update per
    evaluation, `update_every` unused) instead of the training loss; a held-out loss does not reward a source
    for being memorised"""
    last_losses: dict[str, float] = field(default_factory=dict, init=False)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or not self.feedback.enabled or state.global_step % self.feedback.update_every:
            return
        if self.held_out is not None:
            return
        scheduler = self.tracker.scheduler
        sums, counts = self.tracker.take_source_losses()
        self._update({n: float(sums[i] / counts[i]) for i, n in enumerate(scheduler.names) if counts[i] > 0})

    def on_evaluate(self, args, state, control, **kwargs):
        if not self.enabled or not self.feedback.enabled or self.held_out is None:
            return
        names = self.tracker.scheduler.names  # explicit evaluation sources are not in the mixture
        self._update({n: loss for n, loss in self.held_out.last_losses.items() if n in names})

    def _update(self, losses: dict[str, float]) -> None:
        scheduler = self.tracker.scheduler
        self.last_losses = losses
        if not losses:
            return
        step = scheduler.next_effective_step()
        # Every rank updates its bandit with the same all-reduced losses; rank 0's result is broadcast so float
        # differences can never make two ranks mix differently.
        multipliers = broadcast_object(self.feedback.update(losses, scheduler.controller.base_at(step)))
        scheduler.set_feedback(multipliers, step=step)

    def on_save(self, args, state, control, **kwargs):
        if is_main_process():
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "feedback.json"), "w") as f:
                json.dump(self.feedback.state_dict(), f)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:
            path = os.path.join(self.tracker.resume_from or resume_dir(args, state), STATE_DIR, "feedback.json")
            if os.path.isfile(path):
                with open(path) as f:
                    self.feedback.load_state_dict(json.load(f))
