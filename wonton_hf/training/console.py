"""A console a person can read: one short line per log event, a progress bar, everything else to the loggers.

The Trainer's `ProgressCallback` (or `PrinterCallback` without tqdm) prints each log event's whole dict: with
the monitors and the data metrics that is ~90 keys per event. `ConsoleCallback` takes its place and prints
the few numbers a person follows — step, loss, learning rate, gradient norm, tokens/s, MFU, and the data
weights when they change — on one line, above the tqdm bar. The log dict itself is untouched: TensorBoard
(and any `report_to`) and `trainer_state.json` still get every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

WEIGHT_PREFIX = "data/weight/"
SPIKE_PREFIX = "spike/"
DOWNSTREAM_PREFIX = "eval_downstream/"  # `wonton_hf.evaluation.downstream.METRIC_PREFIX` (not imported: torch)
_SPIKE_COUNTERS = {"spike/skipped_total", "spike/rollbacks_total", "spike/bad_loss", "spike/rollback_to_step"}


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ConsoleCallback(ProgressCallback):
    """The Trainer's progress bar with one compact line per log event instead of the full metrics dict."""

    def __init__(self, show_bar: bool = True) -> None:
        super().__init__()
        self.show_bar = show_bar
        self._weights: dict[str, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.show_bar:
            super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = self.format(state, logs)
        if line is None:
            return
        if self.training_bar is not None:
            self.training_bar.write(line)
        else:
            print(line, flush=True)

    def format(self, state: Any, logs: dict[str, Any]) -> str | None:
        """The line for one log event (None: nothing a person needs from it)."""
        if "train_runtime" in logs:
            loss = logs.get("train_loss")
            return f"finished: {state.global_step} steps in {_duration(logs['train_runtime'])}" + (
                f", mean loss {loss:.4f}" if isinstance(loss, int | float) else ""
            )
        if "eval_bpb" in logs:
            return self._held_out_line(state, logs)
        if any(key.startswith("eval_") and not key.startswith(DOWNSTREAM_PREFIX) for key in logs):
            shown = [
                f"{key[5:]} {value:.4g}"
                for key, value in logs.items()
                if key.startswith("eval_")
                and not key.startswith(DOWNSTREAM_PREFIX)
                and isinstance(value, int | float)
                and "runtime" not in key
            ][:6]
            return f"eval   step {state.global_step} | " + " | ".join(shown)
        parts = [f"step {state.global_step:>{len(str(state.max_steps))}}/{state.max_steps}"]
        for key, label, spec in (("loss", "loss", ".4f"), ("learning_rate", "lr", ".2e"), ("grad_norm", "grad", ".3f")):
            if isinstance(logs.get(key), int | float):
                parts.append(f"{label} {format(logs[key], spec)}")
        if isinstance(logs.get("throughput/tokens_per_s"), int | float):
            parts.append(f"{_si(logs['throughput/tokens_per_s'])} tok/s")
        if isinstance(logs.get("throughput/device/mfu"), int | float):
            parts.append(f"MFU {100 * logs['throughput/device/mfu']:.1f}%")
        spikes = [
            key[len(SPIKE_PREFIX) :]
            for key, value in logs.items()
            if key.startswith(SPIKE_PREFIX) and key not in _SPIKE_COUNTERS and value
        ]
        if spikes:
            parts.append("spike: " + ", ".join(spikes))
        weights = {key[len(WEIGHT_PREFIX) :]: value for key, value in logs.items() if key.startswith(WEIGHT_PREFIX)}
        if weights and weights != self._weights:
            parts.append("mix " + " ".join(f"{name} {value:.3g}" for name, value in weights.items()))
            self._weights = weights
        parts += self._downstream_part(logs)
        return " | ".join(parts) if len(parts) > 1 else None

    @staticmethod
    def _downstream_part(logs: dict[str, Any]) -> list[str]:
        """Downstream scores (`DownstreamEvaluation`) in a training line: the mean accuracy, then each task's."""
        mean_key = f"{DOWNSTREAM_PREFIX}acc"
        scores = {
            key[len(DOWNSTREAM_PREFIX) : -len("/acc")]: value
            for key, value in logs.items()
            if key.startswith(DOWNSTREAM_PREFIX) and key.endswith("/acc") and key != mean_key
            if isinstance(value, int | float)
        }
        if not scores:
            return []
        mean = logs.get(mean_key)
        head = f"downstream acc {mean:.3f}" if isinstance(mean, int | float) else "downstream acc"
        return [head + " (" + " ".join(f"{task} {value:.2f}" for task, value in list(scores.items())[:8]) + ")"]

    @staticmethod
    def _held_out_line(state: Any, logs: dict[str, Any]) -> str:
        """An in-loop evaluation (`HeldOutEvaluation`): total loss and bits per byte, then bits per byte per source."""
        parts = [f"eval step {state.global_step:>{len(str(state.max_steps))}}/{state.max_steps}"]
        if isinstance(logs.get("eval_loss"), int | float):
            parts.append(f"held-out loss {logs['eval_loss']:.4f}")
        parts.append(f"bpb {logs['eval_bpb']:.3f}")
        per_source = [
            f"{key[5:-4]} {value:.2f}"
            for key, value in logs.items()
            if key.startswith("eval_") and key.endswith("_bpb") and key != "eval_bpb" and isinstance(value, int | float)
        ]
        if per_source:
            parts.append(" ".join(per_source))
        return " | ".join(parts)


def use_console(trainer: Any) -> ConsoleCallback:
    """Replace the Trainer's printing callbacks by `ConsoleCallback`; returns it."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    console = ConsoleCallback(show_bar=not trainer.args.disable_tqdm)
    trainer.add_callback(console)
    return console


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """transformers' own progress bars (saving and loading weights) off; the Trainer's training bar stays.

    A checkpoint save would otherwise draw a "Writing model shards" bar through the console's lines.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = ["ConsoleCallback", "quiet_progress_bars", "use_console"]
