"""Preemption: on SIGTERM (or SIGUSR1, configurable) finish the current step, checkpoint on every rank, exit.

Clusters announce the end of a job with a signal: SLURM sends SIGTERM at preemption or `scancel` (and
`--signal=USR1@<s>` a chosen time before the time limit), Kubernetes SIGTERM with a grace period. Python's
default for both is to die at once, losing every step since the last periodic save. The handler here only
records the signal; at the end of the step in progress, `PreemptionCallback.on_step_end` asks all ranks
(a MAX all-reduce of one integer: a signal seen by any rank stops every rank at the same step, so no rank
waits in a collective for one that left) and, if any saw one, makes the Trainer save and stop. The save is
the normal one, so the checkpoint gets its `COMPLETE` marker and manifest, and `resume: auto` continues from it.

The process then exits with `exit_code` (default 143 = 128 + SIGTERM, what a shell and schedulers report for
a job ended by SIGTERM, so a requeue rule written for "terminated" keeps working; SLURM's `--requeue` and a
Kubernetes `podFailurePolicy` can match it). `torchrun` (and `accelerate launch` on several processes) report
their own code (1) when a worker exits non-zero: a requeueing job script should therefore decide on the signal
it trapped, as `examples/slurm/pretrain.sbatch` does. torchrun forwards SIGTERM to its workers and kills them
30 s later: a save must fit in that (or send the signal to the workers, e.g. `--signal=USR1@<s>`, earlier).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..distributed import barrier, is_distributed, is_main_process, reduce_device, shutdown

logger = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")
PREEMPTED_EXIT_CODE = 143


class Preempted(SystemExit):
    """Raised by the launcher after the preemption checkpoint is complete; its code is the configured one."""


class PreemptionCallback(TrainerCallback):
    """Turns a termination signal into "save at the end of this step and stop" on every rank."""

    def __init__(self, signals: tuple[str, ...] | list[str] = DEFAULT_SIGNALS, exit_code: int = PREEMPTED_EXIT_CODE):
        self.signals = [signal.Signals[name] if isinstance(name, str) else signal.Signals(name) for name in signals]
        self.exit_code = exit_code
        self.received: signal.Signals | None = None
        self.received_at: float | None = None
        """`time.time()` of the first signal (the launcher reports signal-to-checkpoint seconds from it)"""
        self.preempted_at_step: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received, self.received_at = signal.Signals(signum), time.time()
        # no logging here: a handler may interrupt the logging module while it holds its lock

    def install(self) -> None:
        """Install the handlers (main thread only: Python delivers signals there)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def on_train_begin(self, args, state, control, **kwargs):
        self.install()
        return control

    def _any_rank_signalled(self) -> bool:
        mine = 1 if self.received is not None else 0
        if not is_distributed():
            return bool(mine)
        import torch

        flag = torch.tensor([mine], dtype=torch.int32, device=reduce_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self.preempted_at_step is None and self._any_rank_signalled():
            if self.received is None:  # another rank got the signal: stop here too, from the same step
                self.received_at = time.time()
            self.preempted_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                name = self.received.name if self.received is not None else "a signal on another rank"
                logger.warning(
                    "Preemption (%s): step %d finished; saving checkpoint-%d and stopping.",
                    name,
                    state.global_step,
                    state.global_step,
                )
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.uninstall()
        return control

    @property
    def preempted(self) -> bool:
        return self.preempted_at_step is not None


def preemption_callback(trainer: Any) -> PreemptionCallback | None:
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, PreemptionCallback)), None)


def install_preemption_handling(
    trainer: Any, signals: tuple[str, ...] | list[str] = DEFAULT_SIGNALS, exit_code: int = PREEMPTED_EXIT_CODE
) -> PreemptionCallback | None:
    """Add a `PreemptionCallback` (once) ahead of the save guards; no signals: none (the default Python behaviour).

    The handlers are installed now as well as at train begin: a signal while the model loads or the checkpoint
    is read is then also held until the first step ends, instead of killing the process."""
    if not signals:
        return None
    existing = preemption_callback(trainer)
    if existing is not None:
        return existing
    callback = PreemptionCallback(signals, exit_code)
    trainer.add_callback(callback)
    callback.install()
    return callback


def exit_if_preempted(trainer: Any, run_dir: str | Path) -> None:
    """After a preemption checkpoint: say how long signal-to-checkpoint took, then exit with the configured code
    (no final model, no data report: the run is not finished, `resume: auto` continues it)."""
    callback = preemption_callback(trainer)
    if callback is None or not callback.preempted:
        return
    step = callback.preempted_at_step
    checkpoint = Path(run_dir) / f"checkpoint-{step}"
    seconds = time.time() - (callback.received_at or time.time())
    if is_main_process():
        logger.warning(
            "Preempted: %s is complete (%.1f s after the signal). Exiting with code %d; rerun the same command to "
            "resume from it.",
            checkpoint,
            seconds,
            callback.exit_code,
        )
    barrier()
    shutdown()
    raise Preempted(callback.exit_code)


__all__ = [
    "DEFAULT_SIGNALS",
    "exit_if_preempted",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "PreemptionCallback",
    "install_preemption_handling",
    "preemption_callback",
]
