"""Pretraining on the HF Trainer: one run config, the builders, and resumable checkpoints."""

from .checkpoints import CheckpointCompletionCallback, newest_complete_checkpoint
from .config import RunConfig, dump_run_config, load_run_config
from .launch import LaunchError, PreparedRun, build_trainer, check_launch, print_next_steps, run, shutdown

__all__ = [
    "CheckpointCompletionCallback",
    "LaunchError",
    "PreparedRun",
    "RunConfig",
    "build_trainer",
    "check_launch",
    "dump_run_config",
    "load_run_config",
    "newest_complete_checkpoint",
    "print_next_steps",
    "run",
    "shutdown",
]
