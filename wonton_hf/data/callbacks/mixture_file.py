"""`MixtureFileCallback`: live weight edits from a YAML/JSON file, journalled for every rank at the same step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import TrainerCallback

from ...distributed import broadcast_object, is_main_process
from ..scheduler import OnlineDataScheduler

logger = logging.getLogger(__name__)


@dataclass
class MixtureFileCallback(TrainerCallback):
    """Live edits: re-reads a YAML/JSON mixture file every `every_n_steps` steps and journals valid changes.

    The file holds `{source: weight}` (or `weights: {source: weight}`); sources left out keep their weight.
    Rank 0 reads it and broadcasts, so all ranks journal the same change. An invalid edit (unknown source,
    negative, all zero, unreadable) is logged with its reason and the old weights stay.
    """

    scheduler: OnlineDataScheduler
    path: str
    every_n_steps: int = 50
    """Optimizer steps between two reads of the file."""
    enabled: bool = True
    _applied: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every_n_steps < 1:
            raise ValueError(f"MixtureFileCallback `every_n_steps` must be >= 1, got {self.every_n_steps}.")

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or state.global_step % self.every_n_steps:
            return
        text = broadcast_object(self._read() if is_main_process() else None)
        if text is None or text == self._applied:
            return
        self._applied = text
        try:
            import yaml

            spec = yaml.safe_load(text)
            weights = spec.get("weights", spec) if isinstance(spec, dict) else spec
            step = self.scheduler.set_weights(weights, reason=f"mixture file {self.path}")
            # `set_weights` answers in 0-based scheduler steps; logs and the console count Trainer global steps.
            logger.info(
                "mixture file %s applies from step %d (read at step %d)", self.path, step + 1, state.global_step
            )
        except Exception as err:  # yaml errors, validation errors: logged, weights unchanged
            logger.warning("mixture file %s rejected at step %d: %s", self.path, state.global_step, err)

    def _read(self) -> str | None:
        try:
            with open(self.path) as f:
                return f.read()
        except OSError as err:
            logger.warning("mixture file %s unreadable: %s", self.path, err)
            return None
