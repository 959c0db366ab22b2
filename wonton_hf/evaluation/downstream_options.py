"""What a run config (or a caller) may set for downstream scores during training, and the rules, without torch.

Kept apart from the callback (`downstream.py`) because the run-config check and `--help-config` read these
fields before torch, transformers or lm-eval are imported. The tasks are the package's own (`suites.FAMILIES`):
lm-eval task names such as `belebele_eng_Latn` or `xnli_de`, or one of our groups (`wonton_xnli`), which stands
for its tasks.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from .._problems import Problem, bound, raise_problems
from .suites import FAMILIES


def package_tasks() -> dict[str, list[str]]:
    """Every name `tasks` accepts -> the lm-eval tasks it runs: each task of the paper's suites, each group."""
    names: dict[str, list[str]] = {}
    for family in FAMILIES:
        names[family.group] = family.tasks
        for task in family.tasks:
            names[task] = [task]
    return names


def resolve_tasks(tasks: list[str]) -> list[str]:
    """The lm-eval task names behind `tasks` (groups expanded), in order, without repeats."""
    known = package_tasks()
    return list(dict.fromkeys(task for name in tasks for task in known[name]))


@dataclass(eq=False)
class DownstreamOptions:
    enabled: bool = True
    """False: the callback does nothing"""
    tasks: list[str] = field(default_factory=list)
    """lm-eval tasks of the package's suites (`belebele_eng_Latn`, `xnli_de`, ...) or a group (`wonton_xnli`)"""
    every_n_steps: int | None = None
    """optimizer steps between two downstream evaluations; null: only at checkpoint saves (`at_save`)"""
    at_save: bool = True
    """also evaluate at every checkpoint save (`save_steps`) and at the last step"""
    limit: int | None = 50
    """at most this many examples per task (lm-eval's `limit`); null: the whole test split"""
    data_dir: str | None = None
    """local copies laid out as DIR/<hub dataset name>/<config>/<split>.jsonl (as `wonton-hf eval --data-dir`);
    null: lm-eval downloads the datasets from the hub"""
    batch_size: int = 8
    """requests per forward pass"""

    def problems(self) -> list[Problem]:
        found = bound(self, "every_n_steps", 1, optional=True) + bound(self, "limit", 1, optional=True)
        found += bound(self, "batch_size", 1)
        if not self.tasks:
            found.append(("tasks", "is empty: name at least one task, e.g. [belebele_eng_Latn, xnli_de]"))
        known = package_tasks()
        for i, name in enumerate(self.tasks):
            if name not in known:
                groups = ", ".join(family.group for family in FAMILIES)
                found.append(
                    (
                        f"tasks[{i}]",
                        f"unknown task {name!r}{_close(name, list(known))}: give a task of the package's suites "
                        f"(`python -m wonton_hf.evaluation.suites` lists them in eval_tasks/) or a group ({groups})",
                    )
                )
        if self.every_n_steps is None and not self.at_save:
            found.append(("at_save", "is false and every_n_steps is null: no evaluation would ever run; set one"))
        if importlib.util.find_spec("lm_eval") is None:
            found.append(("tasks", "need lm-eval, which is not installed: `pip install -e '.[eval]'` (or turn it off)"))
        return found

    def check_options(self) -> None:
        raise_problems(type(self).__name__, self.problems())


def _close(name: str, names: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean `{match[0]}`?)" if match else ""


__all__ = ["DownstreamOptions", "package_tasks", "resolve_tasks"]
