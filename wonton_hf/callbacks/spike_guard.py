"""`SpikeGuard`: skip the update of a bad step; after several in a row, roll back to the last good checkpoint.

A step is bad when its loss (averaged over micro-batches and ranks, taken from the model's output by a
forward hook) is NaN/inf, or above mean + `threshold_std` * std of the last `window` good steps, or when a
metric another callback published for this step (e.g. `stability/max_attn_logit/max` from a
`StabilityMonitor` placed before this guard) is above its entry in `metric_thresholds`.

Skipping, without a Trainer subclass: `on_pre_optimizer_step` runs after backward and clipping and right
before `optimizer.step()`. Setting every `.grad` to None there makes the step a no-op for torch
optimizers: parameters without a gradient are left out of the update, so weights, moments, step counts
and weight decay are all untouched (zeroing the gradients would not do: Adam would still decay its
moments and apply weight decay). The LR scheduler still advances with the step counter, as it does for
the steps a GradScaler skips. The data of a skipped step is consumed and not trained on.

Rollback, after `max_bad_steps` bad steps in a row: model weights and optimizer state are loaded from the
newest *complete* checkpoint (`COMPLETE` marker, `wonton_hf.checkpointing`) saved at or before the
last good step; `add_monitors` adds the callback that writes the marker. By default the step counter, the LR schedule and the data stream go on from where they are, so the
steps between that checkpoint and the trouble, and their batches, count as skipped — PaLM's remedy
(section 5.1: restart ~100 steps before the spike, skip the 200-500 batches around it). With
`rewind_schedule: true` the Trainer's step counter and the LR scheduler go back to the checkpoint too;
the Trainer's loss logging then pauses until the counter passes the step it last logged, and the
log history holds those step numbers twice. The data stream is never rewound: replaying the same batches
deterministically would likely reproduce the spike, and a dataset's `load_state_dict` only takes effect
when the Trainer restarts iteration, which a callback cannot do. Checkpoints newer than the rollback
point hold the abandoned trajectory and are renamed `<name>-rolled-back`, so resuming never picks them.

Under FSDP2 (`fully_shard`) all of this holds as under DDP: the optimizer is a torch optimizer over the ranks'
parameter shards, so clearing the (sharded) gradients skips the step on every rank, and the decision is the
same everywhere because the loss it is taken from is averaged over the ranks first; a rollback reads the
sharded checkpoint back through accelerate's FSDP loaders.

DeepSpeed runs `engine.step()` inside `accelerator.backward`, before any callback sees the step: there
the guard detects and logs bad steps but cannot skip them, and instead of rolling back in-process it
stops training, so that the launcher's resume restarts from the last complete checkpoint (loading ZeRO
shards is the engine's job, not a callback's); checkpoints due while such a bad streak lasts are not
written, and `needs_resume` tells the launcher not to save the in-memory model as a result. Every event is logged under `spike/…` with its step and kept in the resume state.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.trainer_callback import ExportableState

from ..checkpointing.protocol import checkpoint_step, list_checkpoints, newest_verified_checkpoint
from ..distributed import barrier, broadcast_object, is_main_process
from ._common import LoggingCallback, StepLossCapture, step_metrics, uses_deepspeed
from .options import SpikeGuardOptions

logger = logging.getLogger(__name__)

PREFIX = "spike"
_MAX_EVENTS = 1000


@dataclass(eq=False)  # identity equality: the Trainer finds callbacks by object
class SpikeGuard(LoggingCallback, ExportableState, SpikeGuardOptions):
    """Skips updates of bad steps and rolls back to the last good checkpoint after repeated trouble; options in
    `SpikeGuardOptions`."""

    def __post_init__(self) -> None:
        super().__init__()
        self.check_options()
        self._capture = StepLossCapture()
        self._state: dict[str, Any] = self._fresh_state()
        self._deepspeed = False
        self._stopped = False  # this process only: a resumed run starts clean

    @staticmethod
    def _fresh_state() -> dict[str, Any]:
        return {
            "losses": [],
            "bad_in_a_row": 0,
            "streak_from_metrics": False,
            "last_good_step": 0,
            "skipped": 0,
            "rollbacks": 0,
            "events": [],
        }

    # -- state (plain dict; also saved by the Trainer in trainer_state.json via ExportableState) -------------

    def state_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state, allow_nan=False))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fresh = self._fresh_state()
        self._state = {key: state.get(key, default) for key, default in fresh.items()}

    def state(self) -> dict:
        options = {k: v for k, v in asdict(self).items()}
        return {"args": options, "attributes": {"guard_state": self.state_dict()}}

    @property
    def guard_state(self) -> dict[str, Any]:
        return self.state_dict()

    @guard_state.setter
    def guard_state(self, value: dict[str, Any]) -> None:
        self.load_state_dict(value)

    # -- events ---------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.enabled or model is None:
            return
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if state.global_step > 0 and isinstance(saved, dict) and "attributes" in saved:
            self.load_state_dict(saved["attributes"].get("guard_state", {}))  # resumed run: keep the window
        self._deepspeed = uses_deepspeed(args)
        self._capture.attach(model)

    def on_train_end(self, args, state, control, **kwargs):
        self._capture.detach()

    def on_step_end(self, args, state, control, **kwargs):
        # A bad update that could not be skipped (DeepSpeed) may have broken the weights: never let it
        # become a checkpoint, so that a resume starts from before the trouble.
        if self.enabled and self._deepspeed and self._state["bad_in_a_row"] > 0 and control.should_save:
            control.should_save = False
            self._event(control, state.global_step, "save_suppressed", reason="unskipped bad step")

    @property
    def needs_resume(self) -> bool:
        """True once the guard stopped training (DeepSpeed trouble, or too many rollbacks): do not treat the
        weights in memory as a result; restart from the last complete checkpoint instead."""
        return self._stopped

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if not self.enabled or model is None:
            return
        step = state.global_step + 1
        loss = self._capture.reduce(args).get("loss")
        published = step_metrics(model, step)
        reason = self._judge(loss, published)
        if reason is None:
            if self._state["streak_from_metrics"] and not any(key in published for key in self.metric_thresholds):
                # Monitors measure every n-th step; a step they did not measure is no evidence that the trouble
                # they saw is over: the update goes through, the streak neither ends nor grows, and the last good
                # step stays before it (a rollback must not land after the first bad measurement).
                return
            self._accept(step, loss)
            return
        self._state["bad_in_a_row"] += 1
        self._state["streak_from_metrics"] = not reason.startswith(("non_finite_loss", "loss_spike"))
        if not self._deepspeed:
            for parameter in model.parameters():
                parameter.grad = None  # the optimizer skips parameters without a gradient: nothing changes
            self._state["skipped"] += 1
        self._event(control, step, "skip" if not self._deepspeed else "bad_step_not_skipped", reason=reason, loss=loss)
        if self.rollback and self._state["bad_in_a_row"] >= self.max_bad_steps:
            self._roll_back(args, state, control, step, model, optimizer, lr_scheduler)

    # -- decisions ------------------------------------------------------------------------------------------

    def _judge(self, loss: float | None, published: dict[str, float]) -> str | None:
        """Why this step is bad, or None."""
        if loss is not None and not math.isfinite(loss):
            return "non_finite_loss"
        losses = self._state["losses"]
        if loss is not None and len(losses) >= self.min_window:
            mean = sum(losses) / len(losses)
            std = math.sqrt(sum((x - mean) ** 2 for x in losses) / len(losses))
            if loss > mean + self.threshold_std * std:
                return f"loss_spike({loss:.4g} > {mean:.4g} + {self.threshold_std:g}*{std:.3g})"
        for key, bound in self.metric_thresholds.items():
            value = published.get(key)
            if value is not None and (not math.isfinite(value) or value > bound):
                return f"{key}={value:.4g} > {bound:g}"
        return None

    def _accept(self, step: int, loss: float | None) -> None:
        self._state["bad_in_a_row"] = 0
        self._state["streak_from_metrics"] = False
        self._state["last_good_step"] = step
        if loss is not None:
            self._state["losses"] = (self._state["losses"] + [loss])[-self.window :]

    def _event(self, control, step: int, kind: str, **details: Any) -> None:
        # Non-finite losses are kept as text: the state must stay strict JSON.
        kept = {
            k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in details.items()
            if v is not None
        }
        self._state["events"] = (self._state["events"] + [{"step": step, "event": kind, **kept}])[-_MAX_EVENTS:]
        if is_main_process():
            logger.warning("SpikeGuard step %d: %s %s", step, kind, kept)
        metrics = {
            f"{PREFIX}/{kind}": 1.0,
            f"{PREFIX}/skipped_total": float(self._state["skipped"]),
            f"{PREFIX}/rollbacks_total": float(self._state["rollbacks"]),
        }
        loss = details.get("loss")
        if loss is not None and math.isfinite(loss):
            metrics[f"{PREFIX}/bad_loss"] = loss
        if "to_step" in details:
            metrics[f"{PREFIX}/rollback_to_step"] = float(details["to_step"])
        self.emit(control, metrics)

    # -- rollback -------------------------------------------------------------------------------------------

    def _roll_back(self, args, state, control, step: int, model, optimizer, lr_scheduler) -> None:
        if self._state["rollbacks"] >= self.max_rollbacks:
            self._event(control, step, "gave_up", reason=f"{self.max_rollbacks} rollbacks already")
            logger.error(
                "SpikeGuard: training stopped after %d rollbacks; inspect the data around step %d.",
                self.max_rollbacks,
                step,
            )
            control.should_training_stop = self._stopped = True
            return
        if self._deepspeed:
            self._event(control, step, "stop_for_resume", reason="in-process rollback is not supported under DeepSpeed")
            logger.error("SpikeGuard: stopping at step %d; resume from the last complete checkpoint (--resume).", step)
            control.should_training_stop = self._stopped = True
            return
        self._state["bad_in_a_row"] = 0
        self._state["streak_from_metrics"] = False
        checkpoint = self._rollback_point(args.output_dir)
        if checkpoint is None:
            self._event(
                control,
                step,
                "rollback_unavailable",
                reason=f"no complete checkpoint at or before step {self._state['last_good_step']}",
            )
            return
        target = load_training_state(checkpoint, model, optimizer, lr_scheduler if self.rewind_schedule else None)
        retire_newer_checkpoints(args.output_dir, target, main_process=state.is_world_process_zero)
        self._state["rollbacks"] += 1
        if self.rewind_schedule:
            # The Trainer still steps the (reloaded) scheduler and adds 1 to the counter after this hook:
            # this skipped step becomes `target + 1` for both, so counter and schedule stay in step.
            state.global_step = target
        self._state["last_good_step"] = state.global_step
        self._event(control, step, "rollback", to_step=target, checkpoint=str(checkpoint), steps_undone=step - target)

    def _rollback_point(self, output_dir: str) -> Path | None:
        """The newest complete checkpoint at or before the last good step that passes verification (the lookup
        resume uses), chosen on rank 0 for all ranks; damaged ones are named in the log and passed over."""
        checkpoint = None
        if is_main_process():
            checkpoint, failed = newest_verified_checkpoint(output_dir, at_or_before=self._state["last_good_step"])
            for result in failed:
                logger.error("SpikeGuard: not rolling back to %s", result.summary())
        return broadcast_object(checkpoint)


def _load_weights(checkpoint: Path, model: nn.Module) -> None:
    from safetensors.torch import load_file
    from transformers.trainer_utils import load_sharded_checkpoint
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    if (checkpoint / SAFE_WEIGHTS_NAME).exists():
        state = load_file(str(checkpoint / SAFE_WEIGHTS_NAME), device="cpu")
    elif (checkpoint / WEIGHTS_NAME).exists():
        state = torch.load(checkpoint / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    elif (checkpoint / SAFE_WEIGHTS_INDEX_NAME).exists() or (checkpoint / WEIGHTS_INDEX_NAME).exists():
        load_sharded_checkpoint(model, str(checkpoint), strict=False)
        return
    else:
        raise FileNotFoundError(f"SpikeGuard: no model weights in {checkpoint} to roll back to.")
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"SpikeGuard: checkpoint {checkpoint} does not match the model "
            f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})."
        )


def _fsdp_state() -> Any:
    """accelerate's process state when the Trainer shards the model with FSDP, else None."""
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:
        return None
    state = AcceleratorState()
    return state if getattr(state, "fsdp_plugin", None) is not None else None


def load_training_state(checkpoint: Path, model: nn.Module, optimizer: Any, lr_scheduler: Any) -> int:
    """Model, optimizer and scheduler from a Trainer checkpoint; returns its step.

    Under FSDP the checkpoint holds the shards (torch DCP) or a full state dict in accelerate's layout; it is
    read back with the calls the Trainer's own resume makes (every rank takes part). They read only the ranks and
    the barrier from their `accelerator` argument, which accelerate's process state provides."""
    fsdp = _fsdp_state()
    if fsdp is not None:
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        load_fsdp_model(fsdp.fsdp_plugin, fsdp, model, str(checkpoint))
        if optimizer is not None:
            load_fsdp_optimizer(fsdp.fsdp_plugin, fsdp, optimizer, model, str(checkpoint))
    else:
        _load_weights(checkpoint, model)
    device = next(model.parameters()).device
    if fsdp is None and optimizer is not None and (checkpoint / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
    if lr_scheduler is not None and (checkpoint / "scheduler.pt").exists():
        lr_scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    model.zero_grad(set_to_none=True)
    return checkpoint_step(checkpoint)


def retire_newer_checkpoints(output_dir: str | Path, step: int, main_process: bool) -> None:
    """Rename checkpoints after `step` (the abandoned trajectory) so no resume ever picks them."""
    if main_process:
        for number, path in list_checkpoints(output_dir):
            if number > step:
                target = path.with_name(f"{path.name}-rolled-back")
                if target.exists():
                    shutil.rmtree(target)
                path.rename(target)
    barrier()
