"""Training on the HF Trainer: pretraining (`pretrain`) and what SFT (`wonton_hf.chat.sft`) shares with it.

Shared by both: the run-config schema, launch checks (`launch_checks`), devices and DeepSpeed on CPU
(`devices`), the `TrainingArguments` mapping (`arguments`), the callbacks every run gets (`run_callbacks`),
the fresh model (`model_init`) and the console. Pretraining's launcher (`pretrain`) is imported by no other
module of the package.

The names load on first use, so reading and checking a run config (`load_run_config`) imports neither torch
nor transformers: a config error is reported in well under two seconds.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "config",
    "RunConfig": "config",
    "dump_run_config": "config",
    "load_run_config": "config",
    "run_config_help": "config",
    "average_checkpoints": "averaging",
    "LaunchError": "launch_checks",
    "check_launch": "launch_checks",
    "PreparedRun": "pretrain",
    "build_trainer": "pretrain",
    "print_next_steps": "pretrain",
    "run": "pretrain",
    "shutdown": "pretrain",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
