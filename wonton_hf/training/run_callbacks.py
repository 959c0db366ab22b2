"""The callbacks every run on the HF Trainer gets, pretraining and SFT alike: the configured monitors, the
compact console, and the marker that makes checkpoints resume points.

Their order matters and is easy to get wrong by hand: the monitors go ahead of the reporting integrations
(`add_monitors`), and the completion marker goes last, after every other `on_save`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..checkpointing.completion import ensure_completion_marking
from ..checkpointing.preemption import DEFAULT_SIGNALS, PREEMPTED_EXIT_CODE, install_preemption_handling
from ..checkpointing.storage import guard_checkpoint_saves
from .console import use_console


def build_monitors(monitors_config: Any) -> list[TrainerCallback]:
    """The paper's monitors from a `monitors` section, each optional (`monitors.<name>: null` turns one off)."""
    wanted = {name: options for name, options in monitors_config.model_dump().items() if options is not None}
    if not wanted:
        return []
    from .. import callbacks as monitors

    classes = {
        "stability": monitors.StabilityMonitor,
        "throughput": monitors.ThroughputMonitor,
        "spike_guard": monitors.SpikeGuard,
    }
    return [classes[name](**options) for name, options in wanted.items()]


def install_run_callbacks(trainer: Any, monitors_config: Any, train_config: Any = None) -> None:
    """The configured monitors (ahead of the reporters, so TensorBoard & co. see their metrics), one short console
    line per log event instead of the whole metrics dict, preemption handling (`train_config.preemption_*`), the
    save guards (free space, clear errors) and the completion marker last."""
    monitors = build_monitors(monitors_config)
    if monitors:
        from ..callbacks import add_monitors

        add_monitors(trainer, *monitors)
    use_console(trainer)
    install_preemption_handling(  # ahead of the save guards: the save it asks for is checked like any other
        trainer,
        getattr(train_config, "preemption_signals", DEFAULT_SIGNALS),
        getattr(train_config, "preemption_exit_code", PREEMPTED_EXIT_CODE),
    )
    guard_checkpoint_saves(trainer)  # free space checked before each save; a failed save says what failed
    # Checkpoints become resume points only once every rank wrote them; old ones are deleted only after that.
    ensure_completion_marking(trainer, keep=getattr(train_config, "save_total_limit", None))


__all__ = ["build_monitors", "install_run_callbacks"]
