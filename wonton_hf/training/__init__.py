"""Pretraining on the HF Trainer: one run config, the builders, and resumable checkpoints.

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
    "LaunchError": "launch",
    "PreparedRun": "launch",
    "build_trainer": "launch",
    "check_launch": "launch",
    "print_next_steps": "launch",
    "run": "launch",
    "shutdown": "launch",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
