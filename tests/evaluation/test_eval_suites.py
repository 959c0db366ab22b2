"""The suites: the checked-in eval_tasks/ folder, task lists, and the offline data contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from wonton_hf.evaluation.suites import (
    builtin_task_dirs,
    group_configs,
    prepare_task_folder,
    suite_group,
    suite_tasks,
    task_manager_for,
    write_group_configs,
)

EVAL_TASKS = Path(__file__).resolve().parents[2] / "eval_tasks"

BELEBELE = [
    f"belebele_{c}"
    for c in ("eng_Latn", "deu_Latn", "fra_Latn", "ita_Latn", "spa_Latn", "zho_Hans", "jpn_Jpan", "kor_Hang")
]
MULTILINGUAL = BELEBELE + [
    "xnli_en",
    "xnli_de",
    "xnli_zh",
    "xstorycloze_en",
    "xstorycloze_es",
    "xstorycloze_zh",
    "xwinograd_en",
    "xwinograd_fr",
    "xwinograd_jp",
]
ENGLISH = ["lambada_openai", "winogrande", "hellaswag", "piqa", "race", "boolq"]


def test_suite_task_lists_are_the_papers():
    assert suite_tasks("multilingual") == MULTILINGUAL
    assert suite_tasks("english") == ENGLISH
    assert suite_tasks("all") == MULTILINGUAL + ENGLISH
    with pytest.raises(ValueError, match="Unknown suite 'german'.*multilingual, english, all"):
        suite_group("german")


def test_eval_tasks_folder_matches_suites(tmp_path):
    if not EVAL_TASKS.is_dir():
        pytest.skip("eval_tasks/ is not next to the package (installed from a wheel)")
    write_group_configs(tmp_path)
    expected = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.yaml")}
    actual = {p.name: p.read_text(encoding="utf-8") for p in EVAL_TASKS.glob("*.yaml")}
    assert actual == expected, "eval_tasks/ is stale: run `python -m wonton_hf.evaluation.suites eval_tasks`"


def test_lm_eval_resolves_eval_tasks_to_its_own_tasks():
    """lm-eval itself, given eval_tasks/ as include path, expands our groups to its built-in tasks."""
    folder = EVAL_TASKS if EVAL_TASKS.is_dir() else None
    if folder is None:
        pytest.skip("eval_tasks/ not present")
    index = TaskManager(include_defaults=False, include_path=[*map(str, builtin_task_dirs()), str(folder)]).task_index

    def leaves(name: str) -> list[str]:
        entry = index[name]
        if entry.cfg and "group" in entry.cfg:
            return [leaf for member in entry.cfg["task"] for leaf in leaves(member)]
        return [name]

    assert leaves("wonton_all") == MULTILINGUAL + ENGLISH
    for task in MULTILINGUAL + ENGLISH:  # defined by lm-eval's own YAML, not by us
        assert "/lm_eval/tasks/" in str(index[task].yaml_path).replace("\\", "/")
    aggregates = {
        name: config.get("aggregate_metric_list")
        for name, config in ((c["group"], c) for c in group_configs().values())
    }
    for group in ("wonton_belebele", "wonton_xnli", "wonton_xstorycloze", "wonton_xwinograd"):
        assert aggregates[group] == [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}]
    assert aggregates["wonton_english"] is None  # Table 2 has no average


def _copy_data(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_missing_files_are_named_with_their_schema(offline_data_dir, tmp_path):
    data = _copy_data(offline_data_dir, tmp_path / "data")
    (data / "belebele" / "kor_Hang" / "test.jsonl").unlink()
    shutil.rmtree(data / "xnli" / "de")
    with pytest.raises(FileNotFoundError) as error:
        prepare_task_folder(tmp_path / "tasks", "multilingual", data)
    message = str(error.value)
    assert "2 problem(s)" in message
    assert f"{data / 'belebele' / 'kor_Hang' / 'test'}.jsonl (or .parquet) for task belebele_kor_Hang" in message
    assert "facebook/belebele, config kor_Hang, split test" in message
    assert "flores_passage (str)" in message and 'correct_answer_num (str, "1".."4")' in message
    assert f"{data / 'xnli' / 'de' / 'validation'}.jsonl" in message and "premise (str), hypothesis (str)" in message
    assert not (tmp_path / "tasks").exists(), "nothing is written when the data directory is incomplete"
    # The English suite does not need those files.
    prepare_task_folder(tmp_path / "english", "english", data)


def test_wrong_schema_and_bad_json_are_reported(offline_data_dir, tmp_path):
    data = _copy_data(offline_data_dir, tmp_path / "data")
    path = data / "xwinograd" / "fr" / "test.jsonl"
    good = path.read_text(encoding="utf-8")
    renamed = json.dumps({"sentence": "Le _ est grand.", "option_a": "x", "option_b": "y", "answer": "1"})
    path.write_text(good + renamed + "\n", encoding="utf-8")  # the bad record is the last one
    with pytest.raises(
        FileNotFoundError,
        match=r"xwinograd/fr/test.jsonl: 1 of 3 record\(s\) lack field\(s\) "
        r"\(first: line 3 lacks option1, option2\); expected .*option1 \(str\)",
    ):
        prepare_task_folder(tmp_path / "tasks", "multilingual", data)
    path.write_text(good + "{not json\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"xwinograd/fr/test.jsonl, line 3: not valid JSON"):
        prepare_task_folder(tmp_path / "tasks", "multilingual", data)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"xwinograd/fr/test.jsonl is empty"):
        prepare_task_folder(tmp_path / "tasks", "multilingual", data)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        prepare_task_folder(tmp_path / "tasks", "multilingual", tmp_path / "nowhere")


def test_optional_training_split_and_parquet(offline_data_dir, tmp_path):
    """A train file, when present, is used for few-shot; a parquet copy reads like the jsonl one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _copy_data(offline_data_dir, tmp_path / "data")
    shutil.copy(data / "xnli" / "en" / "validation.jsonl", data / "xnli" / "en" / "train.jsonl")
    rows = [json.loads(line) for line in (data / "xnli" / "de" / "validation.jsonl").read_text().splitlines()]
    (data / "xnli" / "de" / "validation.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist(rows), data / "xnli" / "de" / "validation.parquet")

    folder = prepare_task_folder(tmp_path / "tasks", "multilingual", data)
    import yaml

    en = yaml.safe_load((folder / "xnli_en.yaml").read_text())
    zh = yaml.safe_load((folder / "xnli_zh.yaml").read_text())
    assert set(en["dataset_kwargs"]["data_files"]) == {"validation", "train"} and "training_split" not in en
    assert zh["training_split"] is None  # no train file: few-shot source switched off, zero-shot unchanged
    tasks = task_manager_for(folder, offline=True).load(["wonton_xnli"])["tasks"]
    assert tasks["xnli_de"].DATASET_PATH == "parquet"
    assert [len(tasks[name].eval_docs) for name in ("xnli_en", "xnli_de", "xnli_zh")] == [2, 2, 2]
    assert len(tasks["xnli_en"].training_docs()) == 2


def test_online_folder_references_builtin_tasks(tmp_path):
    folder = prepare_task_folder(tmp_path / "tasks", "all")
    assert sorted(p.name for p in folder.iterdir()) == sorted(group_configs())  # groups only, no task copies
    index = task_manager_for(folder, offline=False).task_index
    assert "/lm_eval/tasks/belebele/" in str(index["belebele_eng_Latn"].yaml_path).replace("\\", "/")
    assert index["wonton_all"].yaml_path == folder / "wonton_all.yaml"
