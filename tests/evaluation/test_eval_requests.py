"""Our tasks, given the same documents, build exactly the requests of lm-eval's built-in tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
from lm_eval.tasks import TaskManager

from wonton_hf.evaluation.suites import FAMILIES, builtin_task_dirs, prepare_task_folder, task_manager_for

from .fixtures import offline_datasets


def _rendered_requests(task) -> list[tuple[Any, ...]]:
    task.set_config(key="num_fewshot", value=0)  # what simple_evaluate does for tasks without a default
    task.build_all_requests(rank=0, world_size=1)
    return [(i.request_type, i.doc_id, i.idx, i.arguments) for i in task.instances]


def _hub_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Serve `datasets.load_dataset(<hub id>, <config>)` from the fixture records, as the hub would."""
    records = offline_datasets()
    calls: list[tuple[str, str]] = []

    def load_dataset(path: str, name: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
        dataset, config = path.rsplit("/", 1)[-1], name or "default"
        (rows,) = [rows for (d, c, _), rows in records.items() if (d, c) == (dataset, config)]
        calls.append((path, config))
        # Every split a built-in config may name; only the evaluation split is read at zero-shot.
        return datasets.DatasetDict(
            {s: datasets.Dataset.from_list(rows) for s in ("train", "validation", "test", "eval")}
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.fixture(scope="module")
def our_tasks(offline_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = prepare_task_folder(tmp_path_factory.mktemp("tasks"), "all", offline_data_dir)
    return task_manager_for(folder, offline=True).load(["wonton_all"])["tasks"]


@pytest.mark.parametrize("family", FAMILIES, ids=[f.group for f in FAMILIES])
def test_same_requests_as_builtin_task(family, our_tasks, monkeypatch):
    ours = {name: _rendered_requests(our_tasks[name]) for name in family.tasks}
    assert all(our_tasks[name].DATASET_PATH == "json" for name in family.tasks)  # read from the local files

    calls = _hub_stand_in(monkeypatch)
    builtin = TaskManager(include_defaults=False, include_path=builtin_task_dirs([family])).load(family.tasks)["tasks"]
    assert len(calls) == len(family.tasks), "the built-in tasks must load through datasets.load_dataset (the hub)"

    for name in family.tasks:
        theirs = _rendered_requests(builtin[name])
        assert ours[name], f"{name}: no requests built"
        assert ours[name] == theirs, f"{name}: our requests differ from lm-eval's built-in task"
        # Sanity: the requests really carry the documents' text (not empty prompts).
        assert any(str(part).strip() for request in ours[name] for part in request[3])
