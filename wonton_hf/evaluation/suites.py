"""The paper's evaluation suites as lm-eval groups, and the offline redirection of their datasets.

Every task here is one of lm-eval's own (`belebele_eng_Latn`, `xnli_de`, `hellaswag`, ...), referenced by
name: prompts, metrics and splits are lm-eval's, so our numbers are comparable with everyone's. What we
add is the grouping of the paper (its languages, plain averages over languages) and, for machines without
hub access, task YAMLs that `include:` the built-in YAML and change only where the data is read from.

This module is the one source of the suites: `eval_tasks/` at the repository root is rendered from it
(`python -m wonton_hf.evaluation.suites eval_tasks`) and a test keeps the two identical.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskFamily:
    """One benchmark of the paper: an lm-eval group over lm-eval's per-language tasks."""

    group: str
    """our lm-eval group name"""
    title: str
    """the benchmark's name in the paper's tables"""
    columns: tuple[tuple[str, str], ...]
    """(column label in the paper's table, lm-eval task name), in the paper's column order"""
    lm_eval_dir: str
    """folder of lm-eval's `tasks/` holding the built-in YAMLs"""
    average: bool = True
    """whether the group reports the plain average of `acc` over its tasks (the paper's "avg")"""

    @property
    def tasks(self) -> list[str]:
        return [task for _, task in self.columns]


BELEBELE = TaskFamily(
    group="wonton_belebele",
    title="Belebele",
    columns=(
        ("en", "belebele_eng_Latn"),
        ("de", "belebele_deu_Latn"),
        ("fr", "belebele_fra_Latn"),
        ("it", "belebele_ita_Latn"),
        ("es", "belebele_spa_Latn"),
        ("zh", "belebele_zho_Hans"),
        ("ja", "belebele_jpn_Jpan"),
        ("ko", "belebele_kor_Hang"),
    ),
    lm_eval_dir="belebele",
)
XNLI = TaskFamily("wonton_xnli", "XNLI", (("en", "xnli_en"), ("de", "xnli_de"), ("zh", "xnli_zh")), "xnli")
XSTORYCLOZE = TaskFamily(
    "wonton_xstorycloze",
    "XStoryCloze",
    (("en", "xstorycloze_en"), ("es", "xstorycloze_es"), ("zh", "xstorycloze_zh")),
    "xstorycloze",
)
XWINOGRAD = TaskFamily(
    "wonton_xwinograd",
    "XWinograd",
    (("en", "xwinograd_en"), ("fr", "xwinograd_fr"), ("jp", "xwinograd_jp")),
    "xwinograd",
)
# Table 2 has no average: its columns are different metrics (perplexity next to accuracies).
ENGLISH = TaskFamily(
    group="wonton_english",
    title="English",
    columns=(
        ("Lambada", "lambada_openai"),
        ("WinoGrande", "winogrande"),
        ("HellaSwag", "hellaswag"),
        ("PIQA", "piqa"),
        ("RACE", "race"),
        ("BoolQ", "boolq"),
    ),
    lm_eval_dir="lambada winogrande hellaswag piqa race super_glue/boolq",
    average=False,
)
MULTILINGUAL_FAMILIES = (BELEBELE, XNLI, XSTORYCLOZE, XWINOGRAD)
FAMILIES = (*MULTILINGUAL_FAMILIES, ENGLISH)

# Groups of groups. They carry no aggregate: the paper never averages across benchmarks except Table 4's
# average over the nine XNLI/XStoryCloze/XWinograd columns, which the report computes.
COMPOSITE_GROUPS: dict[str, list[str]] = {
    "wonton_multilingual": [family.group for family in MULTILINGUAL_FAMILIES],
    "wonton_all": ["wonton_multilingual", ENGLISH.group],
}
SUITES: dict[str, str] = {"multilingual": "wonton_multilingual", "english": "wonton_english", "all": "wonton_all"}

# Fields each dataset's records must carry (the hub schema lm-eval's prompt code reads), by hub dataset name.
DATASET_SCHEMAS: dict[str, dict[str, str]] = {
    "belebele": {
        "flores_passage": "str",
        "question": "str",
        "mc_answer1": "str",
        "mc_answer2": "str",
        "mc_answer3": "str",
        "mc_answer4": "str",
        "correct_answer_num": 'str, "1".."4"',
    },
    "xnli": {"premise": "str", "hypothesis": "str", "label": "int, 0 entailment / 1 neutral / 2 contradiction"},
    "xstory_cloze": {
        "input_sentence_1": "str",
        "input_sentence_2": "str",
        "input_sentence_3": "str",
        "input_sentence_4": "str",
        "sentence_quiz1": "str",
        "sentence_quiz2": "str",
        "answer_right_ending": "int, 1 or 2",
    },
    "xwinograd": {"sentence": 'str with one "_"', "option1": "str", "option2": "str", "answer": 'str, "1" or "2"'},
    "lambada_openai": {"text": "str, the passage; its last word is the target"},
    "winogrande": {"sentence": 'str with one "_"', "option1": "str", "option2": "str", "answer": 'str, "1" or "2"'},
    "hellaswag": {
        "activity_label": "str",
        "ctx_a": "str",
        "ctx_b": "str",
        "endings": "list of 4 str",
        "label": "str or int, 0..3",
    },
    "piqa": {"goal": "str", "sol1": "str", "sol2": "str", "label": "int, 0 or 1"},
    "race": {
        "article": "str",
        "problems": 'str, a Python-literal list of {"question", "options" (4 str), "answer" ("A".."D")}',
    },
    "super_glue": {"passage": "str", "question": "str", "label": "int, 0 no / 1 yes"},
}
DATA_FORMATS = {".jsonl": "json", ".parquet": "parquet"}
_GROUP_HEADER = (
    "# Generated from wonton_hf/evaluation/suites.py by `python -m wonton_hf.evaluation.suites eval_tasks`;\n"
    "# edit that module and regenerate (a test checks that this folder matches it).\n"
)
_OFFLINE_HEADER = (
    "# Generated by wonton_hf.evaluation.suites: lm-eval's own {task}, reading {data_dir} instead of the hub.\n"
)


def suite_group(suite: str) -> str:
    """The lm-eval group that runs `suite`; a clear error for unknown names."""
    if suite not in SUITES:
        raise ValueError(f"Unknown suite {suite!r}: choose one of {', '.join(SUITES)}.")
    return SUITES[suite]


def suite_families(suite: str) -> list[TaskFamily]:
    group = suite_group(suite)
    if group == ENGLISH.group:
        return [ENGLISH]
    return list(MULTILINGUAL_FAMILIES) + ([ENGLISH] if group == "wonton_all" else [])


def suite_tasks(suite: str) -> list[str]:
    """The lm-eval task names a suite evaluates, in the paper's table order."""
    return [task for family in suite_families(suite) for task in family.tasks]


# ---------------------------------------------------------------- group YAMLs (eval_tasks/)


def group_configs() -> dict[str, dict[str, Any]]:
    """File name -> lm-eval group config, for every group of this module."""
    configs: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        config: dict[str, Any] = {"group": family.group, "task": family.tasks}
        if family.average:
            # weight_by_size false: the paper's "avg" is a plain mean over languages, not over examples.
            config["aggregate_metric_list"] = [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}]
        config["metadata"] = {"version": 1.0}
        configs[f"{family.group}.yaml"] = config
    for group, members in COMPOSITE_GROUPS.items():
        configs[f"{group}.yaml"] = {"group": group, "task": members, "metadata": {"version": 1.0}}
    return configs


def write_group_configs(folder: str | Path) -> list[Path]:
    """Write the group YAMLs into `folder` (an lm-eval `--include_path`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, config in group_configs().items():
        path = folder / name
        path.write_text(_GROUP_HEADER + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- lm-eval's built-in task definitions


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def builtin_task_dirs(families: Iterable[TaskFamily] = FAMILIES) -> list[Path]:
    """The folders of lm-eval's `tasks/` that define our tasks: indexing only these takes ~1 s, not ~10 s."""
    root = lm_eval_tasks_dir()
    return [root / name for family in families for name in family.lm_eval_dir.split()]


def builtin_task_configs(tasks: Iterable[str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Task name -> the built-in YAML that defines it in the installed lm-eval, and its config.

    The config is the one lm-eval's public `TaskManager.task_index` read (includes merged, `!function` tags
    left as paths, not imported): the same file, parsed once, the way lm-eval itself parses it.
    """
    from lm_eval.tasks import TaskManager

    tasks = list(tasks)
    index = TaskManager(include_defaults=False, include_path=builtin_task_dirs()).task_index
    if any(task not in index for task in tasks):
        # lm-eval moved a task to another folder: fall back to its full (slower) index.
        logger.warning(
            "Some tasks are not where lm-eval %s used to keep them; indexing all its tasks.", _lm_eval_version()
        )
        index = TaskManager().task_index
    missing = [task for task in tasks if task not in index or index[task].yaml_path is None or index[task].cfg is None]
    if missing:
        raise ValueError(f"The installed lm-eval ({_lm_eval_version()}) does not define the task(s) {missing}.")
    return {task: (Path(index[task].yaml_path), index[task].cfg) for task in tasks}


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# ---------------------------------------------------------------- offline redirection


@dataclass(frozen=True)
class OfflineSource:
    """Where one task's local copy lives: DIR/<hub dataset name>/<config>/<split>.{jsonl,parquet}."""

    task: str
    dataset_path: str
    """the hub id lm-eval would download, e.g. facebook/belebele"""
    config: str
    """the hub config (`dataset_name`), or "default" where lm-eval gives none"""
    required_splits: tuple[str, ...]
    """splits lm-eval reads at zero-shot: the evaluation split and an explicit few-shot split"""
    optional_splits: tuple[str, ...]
    """splits lm-eval only reads for few-shot examples (training / validation when a test split exists)"""

    @property
    def dataset(self) -> str:
        return self.dataset_path.rsplit("/", 1)[-1]

    def folder(self, data_dir: Path) -> Path:
        return data_dir / self.dataset / self.config

    def schema(self) -> dict[str, str]:
        return DATASET_SCHEMAS.get(self.dataset, {})

    def describe_expected(self, data_dir: Path, split: str) -> str:
        fields = ", ".join(f"{name} ({kind})" for name, kind in self.schema().items()) or "the hub schema"
        return (
            f"{self.folder(data_dir) / split}.jsonl (or .parquet) for task {self.task}: a copy of the hub dataset "
            f"{self.dataset_path}, config {self.config}, split {split}; one record per line with fields: {fields}"
        )


def offline_source(task: str, builtin_config: Mapping[str, Any]) -> OfflineSource:
    """Read where lm-eval's own config says the task's data comes from."""
    test, validation, training = (
        builtin_config.get(key) for key in ("test_split", "validation_split", "training_split")
    )
    fewshot = (builtin_config.get("fewshot_config") or {}).get("split") or builtin_config.get("fewshot_split")
    evaluation = test or validation
    if evaluation is None:
        raise ValueError(f"lm-eval's task {task} names neither a test_split nor a validation_split.")
    required = tuple(dict.fromkeys(s for s in (evaluation, fewshot) if s))
    optional = tuple(s for s in dict.fromkeys((training, validation)) if s and s not in required)
    return OfflineSource(
        task=task,
        dataset_path=builtin_config["dataset_path"],
        config=builtin_config.get("dataset_name") or "default",
        required_splits=required,
        optional_splits=optional,
    )


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in DATA_FORMATS:
        if (path := folder / f"{split}{suffix}").is_file():
            return path
    return None


def _check_records(path: Path, fields: Iterable[str]) -> str | None:
    """A problem line when any record lacks a schema field (or holds null there), else None.

    Every record is read: a field missing from a few rows would otherwise reach lm-eval's prompt templates
    as None and be scored as the text "None", silently. Reading even HellaSwag's 10k rows takes well under
    a second.
    """
    fields = list(fields)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if lacking := [name for name in fields if name not in names]:
            return f"{path} lacks column(s) {', '.join(lacking)}"
        table = pq.read_table(path, columns=fields)
        nulls = [name for name in fields if table.column(name).null_count]
        return f"{path} has nulls in column(s) {', '.join(nulls)}" if nulls else None
    bad, first, total = 0, "", 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            total += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                return f"{path}, line {number}: not valid JSON ({error.msg})"
            if not isinstance(record, dict):
                return f"{path}, line {number}: expected a JSON object, got {type(record).__name__}"
            if lacking := [name for name in fields if record.get(name) is None]:
                bad += 1
                first = first or f"line {number} lacks {', '.join(lacking)}"
    if total == 0:
        return f"{path} is empty: it must hold at least one record"
    return f"{path}: {bad} of {total} record(s) lack field(s) (first: {first})" if bad else None


def resolve_offline_files(source: OfflineSource, data_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """The split files present for one task, and one problem line per missing or malformed file."""
    folder = source.folder(data_dir)
    files: dict[str, Path] = {}
    problems: list[str] = []
    for split in source.required_splits + source.optional_splits:
        path = _find_split_file(folder, split)
        if path is None:
            if split in source.required_splits:
                problems.append(f"missing {source.describe_expected(data_dir, split)}")
            continue
        if problem := _check_records(path, source.schema()):
            problems.append(f"{problem}; expected {source.describe_expected(data_dir, split)}")
        files[split] = path
    if len({path.suffix for path in files.values()}) > 1:
        problems.append(f"{folder}: mix of .jsonl and .parquet splits; use one format per task")
    return files, problems


def offline_task_config(
    task: str, builtin_yaml: Path, builtin_config: Mapping[str, Any], files: Mapping[str, Path]
) -> dict[str, Any]:
    """lm-eval's task, included whole, with only the dataset loading pointed at local files."""
    config: dict[str, Any] = {
        "include": str(builtin_yaml),
        "task": task,
        "dataset_path": DATA_FORMATS[next(iter(files.values())).suffix],
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path.resolve()) for split, path in files.items()}},
    }
    # A split lm-eval would only read for few-shot examples and that is not here (XNLI's 392k-row train,
    # say) is switched off; otherwise the task would fail on load. Zero-shot prompts are unchanged.
    for key in ("training_split", "validation_split"):
        split = builtin_config.get(key)
        if split and split not in files:
            config[key] = None
    return config


def write_offline_task_configs(folder: str | Path, data_dir: str | Path, tasks: Iterable[str]) -> list[Path]:
    """Write one YAML per task that reads `data_dir` instead of the hub; checks every file first.

    All missing or malformed files are reported together, before anything is written, so a user fixes
    the data directory in one pass rather than one evaluation crash at a time.
    """
    folder, data_dir = Path(folder), Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"--data-dir {data_dir} is not a directory (expected DIR/<hub dataset>/<config>/<split>.jsonl)."
        )
    planned, problems = [], []
    for task, (builtin_yaml, builtin_config) in builtin_task_configs(tasks).items():
        files, task_problems = resolve_offline_files(offline_source(task, builtin_config), data_dir)
        problems += task_problems
        planned.append((task, builtin_yaml, builtin_config, files))
    if problems:
        listing = "\n  - ".join(problems)
        raise FileNotFoundError(
            f"Offline data in {data_dir} is incomplete ({len(problems)} problem(s)):\n  - {listing}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, builtin_yaml, builtin_config, files in planned:
        path = folder / f"{task}.yaml"
        header = _OFFLINE_HEADER.format(task=task, data_dir=data_dir.resolve())
        body = yaml.safe_dump(
            offline_task_config(task, builtin_yaml, builtin_config, files), sort_keys=False, allow_unicode=True
        )
        path.write_text(header + body, encoding="utf-8")
        paths.append(path)
    return paths


def prepare_task_folder(folder: str | Path, suite: str, data_dir: str | Path | None = None) -> Path:
    """Write everything lm-eval needs to run `suite` into `folder`, to pass as its include path.

    Online: our group YAMLs, which reference lm-eval's built-in tasks by name. Offline: the same groups plus
    one YAML per task of the same name, which shadows the built-in task with the local copy. The folder is
    also usable as-is with the lm-eval CLI (`lm_eval --include_path FOLDER --tasks wonton_all`).
    """
    folder = Path(folder)
    tasks = suite_tasks(suite)
    if data_dir is not None:
        write_offline_task_configs(folder, data_dir, tasks)  # validates before writing anything
    write_group_configs(folder)
    return folder


def task_manager_for(folder: str | Path, offline: bool):
    """An lm-eval TaskManager that sees our groups (and offline tasks) plus only the built-ins they need.

    Offline task YAMLs include their built-in YAML by path, so the built-in folders need not be indexed
    (which also avoids lm-eval's "task overrides existing task" warning for every redirected task).
    """
    from lm_eval.tasks import TaskManager

    paths = [Path(folder)] if offline else [*builtin_task_dirs(), Path(folder)]
    return TaskManager(include_defaults=False, include_path=[str(path) for path in paths])


def main(argv: list[str] | None = None) -> int:
    """Render the group YAMLs: `python -m wonton_hf.evaluation.suites eval_tasks`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", help="where to write the group YAMLs (the repository's eval_tasks/)")
    args = parser.parse_args(argv)
    for path in write_group_configs(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
