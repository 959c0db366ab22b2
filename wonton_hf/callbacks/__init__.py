"""Training monitors of the Wonton report as HF `TrainerCallback`s, each usable on its own in any Trainer.

    trainer = Trainer(...)
    add_monitors(trainer, StabilityMonitor(), ThroughputMonitor(), SpikeGuard())

`add_monitors` places them ahead of the reporting integrations so their metrics reach `report_to`
(see `_common`). Metric keys: `stability/...`, `throughput/...`, `spike/...`.
"""

from ._common import add_monitors
from .spike_guard import SpikeGuard
from .stability import StabilityMonitor
from .throughput import PEAK_TFLOPS_BF16, ThroughputMonitor, flops_per_token

__all__ = ["PEAK_TFLOPS_BF16", "SpikeGuard", "StabilityMonitor", "ThroughputMonitor", "add_monitors", "flops_per_token"]
