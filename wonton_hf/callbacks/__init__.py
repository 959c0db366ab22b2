"""Training monitors of the Wonton report as HF `TrainerCallback`s, each usable on its own in any Trainer.

    trainer = Trainer(...)
    add_monitors(trainer, StabilityMonitor(), ThroughputMonitor(), SpikeGuard())

`add_monitors` places them ahead of the reporting integrations so their metrics reach `report_to`
(see `_common`). Metric keys: `stability/...`, `throughput/...`, `spike/...`.

Names load on first use, so `wonton-hf plot-run --help` answers without importing torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "add_monitors": "_common",
    "SpikeGuardOptions": "options",
    "StabilityOptions": "options",
    "ThroughputOptions": "options",
    "SpikeGuard": "spike_guard",
    "StabilityMonitor": "stability",
    "PEAK_TFLOPS_BF16": "throughput",
    "ThroughputMonitor": "throughput",
    "flops_per_token": "throughput",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
