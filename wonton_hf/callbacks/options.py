"""The monitors' options: what a run config or a caller may set, each field with its doc and its rules.

Kept apart from the monitors because those import torch, and the run-config check (`monitors.stability...`
in a YAML, `--help-config`) reads these classes before torch is imported. Each monitor inherits its options,
so `StabilityMonitor(every_n_steps=5)` and `monitors.stability.every_n_steps: 5` are the same field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._problems import Problem, bound, raise_problems


class _Options:
    """`problems()` lists what is wrong (see `wonton_hf._problems`); construction raises them."""

    def problems(self) -> list[Problem]:
        raise NotImplementedError

    def check_options(self) -> None:
        raise_problems(type(self).__name__, self.problems())


@dataclass(eq=False)
class StabilityOptions(_Options):
    enabled: bool = True
    """False: the callback does nothing"""
    every_n_steps: int = 10
    """optimizer steps between measurements (a step is measured when its number is a multiple)"""
    query_samples: int = 64
    """query positions per row used for the max attention logit; 0 = every position (exact)"""
    mlp_input_module: str = "mlp.up_proj"
    """path, inside each block, of the first MLP linear whose weight-gradient RMS is logged"""
    layers_module: str = ""
    """path of the ModuleList of blocks; empty: the longest ModuleList named `layers` or `h`"""
    output_norm_iterations: int = 3
    """power-iteration steps per measurement for the output head's spectral norm (warm-started); 0 = off"""

    def problems(self) -> list[Problem]:
        return (
            bound(self, "every_n_steps", 1) + bound(self, "query_samples", 0) + bound(self, "output_norm_iterations", 0)
        )


@dataclass(eq=False)
class ThroughputOptions(_Options):
    enabled: bool = True
    """False: the callback does nothing"""
    peak_tflops: float | None = None
    """peak dense FLOP/s of one device in TFLOP/s; None: from `PEAK_TFLOPS_BF16` by device name (GPU only)"""
    every_n_steps: int = 0
    """log at least every N optimizer steps; 0: with the Trainer's own log events (`logging_steps`)"""

    def problems(self) -> list[Problem]:
        return bound(self, "peak_tflops", 0, strict=True, optional=True) + bound(self, "every_n_steps", 0)


@dataclass(eq=False)
class SpikeGuardOptions(_Options):
    enabled: bool = True
    """False: the callback does nothing"""
    window: int = 100
    """good steps whose losses form the reference mean and standard deviation"""
    min_window: int = 20
    """good steps needed before the mean + k*std test applies (NaN/inf and thresholds apply from step 1)"""
    threshold_std: float = 6.0
    """k: a loss above mean + k * std of the window is a spike"""
    metric_thresholds: dict[str, float] = field(default_factory=dict)
    """metric key -> bound; a step whose published metric exceeds it is bad (publishers must come first)"""
    max_bad_steps: int = 3
    """M: this many bad steps in a row trigger a rollback (for `metric_thresholds`, steps the monitors measured:
    an unmeasured step in between neither breaks nor extends the streak)"""
    max_rollbacks: int = 5
    """rollbacks allowed in one run; one more stops training with an error in the log"""
    rollback: bool = True
    """False: only skip (and log), never roll back"""
    rewind_schedule: bool = False
    """on rollback also take the step counter and LR scheduler back to the checkpoint (see `spike_guard`'s docstring)"""

    def problems(self) -> list[Problem]:
        found = bound(self, "window", 2) + bound(self, "min_window", 2) + bound(self, "threshold_std", 0, strict=True)
        found += bound(self, "max_bad_steps", 1) + bound(self, "max_rollbacks", 0)
        if not found and self.min_window > self.window:
            found.append(("min_window", f"got {self.min_window}: must be <= window ({self.window})"))
        return found


__all__ = ["SpikeGuardOptions", "StabilityOptions", "ThroughputOptions"]
