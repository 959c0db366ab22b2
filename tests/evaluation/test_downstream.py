"""Downstream scores during training: lm-eval on the model in memory, inside a real Trainer run, and the config
errors that must come before any training starts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from wonton_hf.evaluation.downstream import DownstreamEvaluation, downstream_metrics
from wonton_hf.training.config import ConfigError, load_run_config
from wonton_hf.training.console import ConsoleCallback

from .fixtures import corpus_texts

DEMO = Path(__file__).resolve().parents[2] / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"
TASKS = ["belebele_eng_Latn", "xnli_de"]


class _Windows(Dataset):
    """The fixture texts as fixed-length causal LM rows (enough for a few optimizer steps)."""

    def __init__(self, tokenizer, length: int = 32) -> None:
        ids = tokenizer("\n".join(corpus_texts()))["input_ids"]
        self.rows = [ids[i : i + length] for i in range(0, len(ids) - length, length)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = torch.tensor(self.rows[i])
        return {"input_ids": row, "labels": row.clone()}


def _train(checkpoint: Path, out: Path, callbacks: list) -> Trainer:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=_Windows(tokenizer), processing_class=tokenizer, callbacks=callbacks
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, offline_data_dir, tmp_path_factory):
    """The same 4-step run with the callback (every 2 steps, 2 examples per task) and without it."""
    callback = DownstreamEvaluation(
        tasks=TASKS, every_n_steps=2, at_save=False, limit=2, data_dir=str(offline_data_dir), batch_size=4
    )
    out = tmp_path_factory.mktemp("downstream")
    with_callback = _train(tiny_checkpoint, out, [callback])
    without = _train(tiny_checkpoint, tmp_path_factory.mktemp("plain"), [])
    return with_callback, without, callback, out


def test_scores_join_the_trainers_log_at_the_chosen_steps(runs):
    trainer, _, callback, out = runs
    history = trainer.state.log_history
    scored = [e for e in history if any(k.startswith("eval_downstream/") for k in e)]
    assert [e["step"] for e in scored] == [2, 4] and callback.evaluations == 2
    for event in scored:
        assert "loss" in event  # the training log event of that step: one event, one console line
        for task in TASKS:
            assert 0.0 <= event[f"eval_downstream/{task}/acc"] <= 1.0
        mean = (event["eval_downstream/belebele_eng_Latn/acc"] + event["eval_downstream/xnli_de/acc"]) / 2
        assert event["eval_downstream/acc"] == pytest.approx(mean, abs=1e-4)
    results = json.loads((out / "downstream" / "step-4.json").read_text(encoding="utf-8"))
    assert results["n-samples"]["belebele_eng_Latn"]["effective"] == 2  # the limit per task
    assert (out / "downstream" / "lm_eval_tasks" / "xnli_de.yaml").is_file()  # the local-file variant ran
    line = ConsoleCallback(show_bar=False).format(trainer.state, scored[-1])
    assert line.startswith("step 4/4 | loss ") and "downstream acc " in line and "belebele_eng_Latn" in line


def test_training_is_undisturbed(runs):
    """Same losses with and without the evaluations in between: mode, random states and data order restored."""
    with_callback, without, _, _ = runs
    losses = [e["loss"] for e in with_callback.state.log_history if "loss" in e]
    assert losses == [e["loss"] for e in without.state.log_history if "loss" in e] and len(losses) == 4


def test_evaluate_restores_mode_and_random_states(tiny_checkpoint, offline_data_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.pad_token = None  # lm-eval sets one on the tokenizer it gets: not on the run's own
    model.train()
    callback = DownstreamEvaluation(tasks=["wonton_xnli"], limit=1, data_dir=str(offline_data_dir))
    assert callback.task_names == ["xnli_en", "xnli_de", "xnli_zh"]  # a group stands for its tasks
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    metrics = callback.evaluate(model, tokenizer, tmp_path, step=7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert model.training and tokenizer.pad_token is None
    assert set(metrics) == {f"eval_downstream/{t}/acc" for t in callback.task_names} | {"eval_downstream/acc"}
    assert (tmp_path / "downstream" / "step-7.json").is_file()


def test_schedule_every_n_steps_and_at_saves(tmp_path):
    from transformers import TrainerState

    args = TrainingArguments(output_dir=str(tmp_path), save_strategy="steps", save_steps=0.25, use_cpu=True)
    state = TrainerState(max_steps=20, save_steps=5)  # the Trainer's resolution of save_steps 0.25 of 20 steps

    def due(callback: DownstreamEvaluation) -> list[int]:
        steps = []
        for step in range(1, 21):
            state.global_step = step
            steps += [step] if callback.is_due(args, state) else []
        return steps

    assert due(DownstreamEvaluation(tasks=["xnli_de"])) == [5, 10, 15, 20]
    assert due(DownstreamEvaluation(tasks=["xnli_de"], every_n_steps=8, at_save=False)) == [8, 16]
    assert due(DownstreamEvaluation(tasks=["xnli_de"], every_n_steps=8)) == [5, 8, 10, 15, 16, 20]
    args = TrainingArguments(output_dir=str(tmp_path), save_strategy="no", use_cpu=True)
    assert due(DownstreamEvaluation(tasks=["xnli_de"])) == [20]  # no saves: the last step still counts


def test_metrics_keep_every_task_metric_but_stderr():
    results = {
        "results": {
            "lambada_openai": {"alias": "x", "perplexity,none": 12.5, "perplexity_stderr,none": 1.0, "acc,none": 0.25},
            "hellaswag": {"sample_len": 2, "acc,none": 0.5, "acc_norm,none": 0.75, "acc_stderr,none": "N/A"},
        }
    }
    assert downstream_metrics(results, ["lambada_openai", "hellaswag"]) == {
        "eval_downstream/lambada_openai/perplexity": 12.5,
        "eval_downstream/lambada_openai/acc": 0.25,
        "eval_downstream/hellaswag/acc": 0.5,
        "eval_downstream/hellaswag/acc_norm": 0.75,
        "eval_downstream/acc": 0.375,
    }


# ---- config errors: at load (names, interval, lm-eval) and at launch (`check_files`: data, ZeRO-3)


def _error(overrides: list[str], *, files: bool = False) -> str:
    with pytest.raises(ConfigError) as info:
        config = load_run_config(DEMO, overrides)
        if files:
            config.check_files()
    return str(info.value)


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("downstream={tasks: [belebele_eng_Lat]}", "downstream.tasks[0]", "did you mean `belebele_eng_Latn`"),
        ("downstream={tasks: [mmlu]}", "downstream.tasks[0]", "wonton_belebele"),
        ("downstream={tasks: []}", "downstream.tasks", "is empty"),
        ("downstream={tasks: [xnli_de], at_save: false}", "downstream.at_save", "no evaluation would ever run"),
        (
            "downstream={tasks: [xnli_de], every_n_steps: 400, at_save: false}",
            "downstream.every_n_steps",
            "at most 300",
        ),
        ("downstream={tasks: [xnli_de], limit: 0}", "downstream.limit", "greater than or equal to 1"),
    ],
)
def test_config_errors_at_load(override, field, words):
    message = _error([override])
    assert field in message and words in message, message


def test_lm_eval_missing_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    message = _error(["downstream={tasks: [xnli_de]}"])
    assert "downstream.tasks" in message and "pip install -e '.[eval]'" in message, message


def test_data_errors_at_launch(offline_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = _error(["downstream={tasks: [xnli_de]}"], files=True)
    assert "downstream.data_dir" in message and "HF_DATASETS_OFFLINE" in message, message
    message = _error([f"downstream={{tasks: [xnli_de], data_dir: {tmp_path / 'nowhere'}}}"], files=True)
    assert "downstream.data_dir" in message and "is not a directory" in message, message
    partial = tmp_path / "partial"
    (partial / "xnli" / "de").mkdir(parents=True)
    (partial / "xnli" / "de" / "validation.jsonl").write_text(
        (offline_data_dir / "xnli" / "de" / "validation.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
    )
    load_run_config(DEMO, [f"downstream={{tasks: [xnli_de], data_dir: {partial}}}"]).check_files()  # complete
    message = _error([f"downstream={{tasks: [xnli_de, xnli_zh], data_dir: {partial}}}"], files=True)
    assert "downstream.data_dir" in message and "xnli/zh/validation.jsonl" in message, message
    assert "missing" in message and "task xnli_de" not in message, message  # only the task lacking its file


def test_fsdp_is_refused_at_load():
    """FSDP2 landed next to this callback: a run asking for both fails before any work, naming both fields."""
    message = _error(["train.fsdp={}", "downstream={tasks: [xnli_de]}"])
    assert "downstream" in message and "train.fsdp" in message and "downstream: null" in message, message


def test_zero3_is_refused_at_launch(offline_data_dir, tmp_path):
    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}), encoding="utf-8")
    message = _error(
        [f"train.deepspeed={ds}", f"downstream={{tasks: [xnli_de], data_dir: {offline_data_dir}}}"], files=True
    )
    assert "downstream" in message and "ZeRO-3" in message and "downstream: null" in message, message


@pytest.mark.slow  # trains the demo's tokenizer first: ~10 s on 2 lightly loaded cores
def test_run_config_section_drives_a_pretraining_run(offline_data_dir, tmp_path, capsys):
    """`downstream:` in the demo's run config: the scores land in trainer_state.json and on the console line."""
    from tests.training.test_pretrain import small
    from wonton_hf.training import build_trainer, run

    section = f"downstream={{tasks: [belebele_eng_Latn], limit: 2, data_dir: {offline_data_dir}}}"
    config = load_run_config(
        DEMO, small(tmp_path, "train.max_steps=4", "train.save_steps=2", "evaluation=null", section)
    )
    run(build_trainer(config))
    state = json.loads((config.run_dir / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
    scored = [e for e in state["log_history"] if "eval_downstream/belebele_eng_Latn/acc" in e]
    assert [e["step"] for e in scored] == [2, 4]  # at each save (save_steps 2), the last step included
    lines = [line for line in capsys.readouterr().out.splitlines() if "downstream acc" in line]
    assert len(lines) == 2 and lines[0].lstrip().startswith("step 2/4 | loss "), lines
