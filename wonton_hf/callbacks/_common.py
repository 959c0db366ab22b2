"""What the monitors share: metrics into the Trainer's log stream, cross-rank reduction, loss capture.

Why metrics ride on `on_log`: a callback has no handle on the Trainer, so it cannot call `trainer.log`.
Each monitor keeps the metrics of its last measured step as pending, asks for a log event on that step
(`control.should_log = True`), and merges them into that event's `logs` dict and its `state.log_history`
entry (what `trainer_state.json` keeps). Reporting integrations (TensorBoard, W&B, trackio...) read the
same `logs` dict, but only if the monitor's `on_log` runs before theirs: `add_monitors` inserts monitors
ahead of them. A monitor added with plain `trainer.add_callback` still lands in `log_history`.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback

from ..checkpointing.completion import ensure_completion_marking
from ..distributed import all_reduce

logger = logging.getLogger(__name__)


def uses_deepspeed(args: TrainingArguments) -> bool:
    """DeepSpeed runs its optimizer step inside `accelerator.backward`, before any callback event."""
    return bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: an FSDP2 `DTensor` shard gathered from every rank (a collective: call it on all of them),
    anything else as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class LoggingCallback(TrainerCallback):
    """Base of the monitors: pending metrics merged into the next log event (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}

    def emit(self, control: Any, metrics: dict[str, float]) -> None:
        """Queue metrics for the log event of this step (requested now, so they carry this step)."""
        self._pending.update(metrics)
        control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._pending or logs is None:
            return
        logs.update(self._pending)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step:
            last.update(self._pending)  # `Trainer.log` appended a copy before calling `on_log`
        self._pending = {}


def add_monitors(trainer: Any, *callbacks: TrainerCallback) -> None:
    """Add callbacks just after the Trainer's flow callback, ahead of the printer, progress bar and reporters.

    `Trainer.add_callback` appends, so a callback's `on_log` would run after TensorBoard's had already
    written the event; inserted here, what the monitors add to `logs` reaches every `report_to` backend.
    A `SpikeGuard` rolls back only to complete checkpoints, so with one among `callbacks` the callback that
    marks checkpoints complete is added too (last, or moved to the end if present).
    """
    handler = trainer.callback_handler
    position = next((i + 1 for i, cb in enumerate(handler.callbacks) if isinstance(cb, DefaultFlowCallback)), 0)
    for offset, callback in enumerate(callbacks):
        handler.callbacks.insert(position + offset, callback)
    from .spike_guard import SpikeGuard  # here: spike_guard imports this module

    if any(isinstance(cb, SpikeGuard) for cb in callbacks):
        ensure_completion_marking(trainer)


class StepLossCapture:
    """Collects the training forward outputs (loss and, if the model returns them, z terms) of one optimizer step.

    A forward hook on the model's top module: no Trainer subclass, works with any model whose output has
    a `loss` (tensor or first tuple element), and under DDP/DeepSpeed wrappers (the hook sits on the
    wrapped module). Values stay tensors until `reduce`, so nothing synchronises with the device per
    micro-batch.
    """

    TERMS = ("loss", "ce_loss", "z_loss", "max_z_loss")

    def __init__(self) -> None:
        self._handle: Any = None
        self._sums: dict[str, torch.Tensor] = {}
        self._micro_batches = 0
        self._normalised_by_step = False

    def attach(self, model: nn.Module) -> None:
        if self._handle is None:
            self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not module.training:
            return
        # With `num_items_in_batch` every micro-batch loss is already divided by the step's token count,
        # so the step's loss is their sum; without it each is a per-batch mean and the step's is their mean.
        self._normalised_by_step = kwargs.get("num_items_in_batch") is not None
        for name in self.TERMS:
            value = (
                getattr(output, name, None)
                if not isinstance(output, tuple)
                else (output[0] if name == "loss" else None)
            )
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
                self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._micro_batches += 1

    def reduce(self, args: TrainingArguments) -> dict[str, float]:
        """The step's value of each captured term, averaged over ranks; then reset for the next step."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        local = torch.stack([self._sums[n] for n in names])
        if not self._normalised_by_step:
            local = local / max(self._micro_batches, 1)
        across_devices = self._normalised_by_step and getattr(args, "average_tokens_across_devices", False)
        # Token-normalised over all ranks: each rank holds a share, so sum; otherwise average the ranks' means.
        values = all_reduce(local, "sum" if across_devices else "mean").tolist()
        self._sums, self._micro_batches = {}, 0
        return dict(zip(names, values, strict=True))


_STEP_METRICS: weakref.WeakKeyDictionary[nn.Module, tuple[int, dict[str, float]]] = weakref.WeakKeyDictionary()


def publish_step_metrics(model: nn.Module, step: int, metrics: dict[str, float]) -> None:
    """Make step `step`'s metrics visible to later callbacks (SpikeGuard's thresholds) before the optimizer step."""
    previous_step, previous = _STEP_METRICS.get(model, (step, {}))
    _STEP_METRICS[model] = (step, {**previous, **metrics} if previous_step == step else dict(metrics))


def step_metrics(model: nn.Module, step: int) -> dict[str, float]:
    """Metrics published for `step` (empty when no monitor measured that step)."""
    published_step, metrics = _STEP_METRICS.get(model, (None, {}))
    return metrics if published_step == step else {}
