"""The Online Data Scheduler (paper section 2.2): sources -> stream -> multiplexer -> packing -> collator.

Names load on first use (as in `wonton_hf.callbacks`): `import wonton_hf.data.sources` and the run-config check
read sources and mixtures without importing torch or transformers, which only the scheduler, the collator and the
Trainer callbacks need.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DataSchedulerCallback": "callbacks",
    "MixtureFeedbackCallback": "callbacks",
    "MixtureFileCallback": "callbacks",
    "PackedWindowCollator": "collator",
    "flash_attn_kwargs": "collator",
    "accelerator_config": "integration",
    "attach": "integration",
    "training_arguments": "integration",
    "Exp3Feedback": "mixture",
    "MixtureController": "mixture",
    "WeightSchedule": "mixture",
    "validate_weights": "mixture",
    "SHARD_SCHEMA": "resume",
    "STATE_SCHEMA": "resume",
    "OnlineDataScheduler": "scheduler",
    "SchedulerSettings": "settings",
    "FORMATS": "sources",
    "DataSource": "sources",
    "load_sources": "sources",
    "StepClock": "steps",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
