"""Trainer callbacks of the Online Data Scheduler: the training side of the one-way loop, one module per job.

    sources -> multiplexer -> packer -> collator -> model -> callbacks -> (journal) -> multiplexer

- `tracking.py`: `DataSchedulerCallback` — what the model consumed, the scheduler's state in every checkpoint
  and back on resume, the `data/*` counts per source in each log event.
- `source_loss.py`: `SourceLossMeter` — the training loss per source (`data/loss/<source>`), for the logs and
  for loss feedback.
- `mixture_file.py`: `MixtureFileCallback` — live weight edits from a file.
- `mixture_feedback.py`: `MixtureFeedbackCallback` — EXP3 on the per-source loss.
- `arguments.py`: the `TrainingArguments` and batching the scheduler needs, checked at train start.
- `report.py`: the end-of-run data report (tokens, documents, skips by reason per source, over all ranks).

Nothing goes back into the data stream except through the scheduler's journal: the two mixture callbacks
append weight changes that every rank and worker applies at the same future step.
"""

from ..steps import lookahead_steps
from .arguments import check_batching, check_training_arguments
from .mixture_feedback import MixtureFeedbackCallback
from .mixture_file import MixtureFileCallback
from .report import data_report, format_data_report, write_data_report
from .source_loss import SourceLossMeter
from .tracking import STATE_DIR, DataSchedulerCallback

__all__ = [
    "STATE_DIR",
    "DataSchedulerCallback",
    "MixtureFeedbackCallback",
    "MixtureFileCallback",
    "SourceLossMeter",
    "check_batching",
    "check_training_arguments",
    "data_report",
    "format_data_report",
    "lookahead_steps",
    "write_data_report",
]
