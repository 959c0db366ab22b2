"""The Online Data Scheduler (paper section 2.2): sources -> pipeline -> multiplexer -> packing -> collator."""

from .callbacks import DataSchedulerCallback, MixtureFeedbackCallback, MixtureFileCallback
from .collator import PackedWindowCollator, flash_attn_kwargs
from .integration import accelerator_config, attach, training_arguments
from .mixture import Exp3Feedback, MixtureController, WeightSchedule, validate_weights
from .scheduler import SHARD_SCHEMA, STATE_SCHEMA, OnlineDataScheduler
from .sources import FORMATS, DataSource, load_sources
from .steps import StepClock

__all__ = [
    "FORMATS",
    "SHARD_SCHEMA",
    "STATE_SCHEMA",
    "DataSchedulerCallback",
    "DataSource",
    "Exp3Feedback",
    "MixtureController",
    "MixtureFeedbackCallback",
    "MixtureFileCallback",
    "OnlineDataScheduler",
    "PackedWindowCollator",
    "StepClock",
    "WeightSchedule",
    "accelerator_config",
    "attach",
    "flash_attn_kwargs",
    "load_sources",
    "training_arguments",
    "validate_weights",
]
