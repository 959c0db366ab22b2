"""Evaluation as in the paper: lm-eval groups for its benchmarks, offline data, paper-style reports.

`suites` maps the paper's benchmarks onto lm-eval's own tasks (and local copies of their data), `run`
calls lm-eval's Python API on a checkpoint, `report` lays results out like the paper's tables. Names are
imported lazily so that `python -m wonton_hf.evaluation.suites` and `wonton-hf --help` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAMILIES": "suites",
    "SUITES": "suites",
    "prepare_task_folder": "suites",
    "suite_tasks": "suites",
    "PAPER_RESULTS": "report",
    "render_report": "report",
    "write_report": "report",
    "evaluate_checkpoint": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
