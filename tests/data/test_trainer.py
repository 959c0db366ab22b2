"""The scheduler under a real Trainer: checkpoint + resume, loss feedback, and a real 2-process run."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wonton_hf.data import Exp3Feedback, training_arguments

from .data_fixtures import write_jsonl
from .trainer_run import build

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def small_corpus(tmp_path, tokenizer):
    root = tmp_path / "corpus"
    root.mkdir()
    write_jsonl(root / "en_0.jsonl", "en", range(0, 60))
    write_jsonl(root / "en_1.jsonl", "en", range(60, 120))
    write_jsonl(root / "de.jsonl", "de", range(80))
    tokenizer.backend_tokenizer.save(str(root / "tokenizer.json"))
    return root


def test_training_arguments_helper_refuses_conflicts(tmp_path):
    args = training_arguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert args.accelerator_config.dispatch_batches is False
    assert args.remove_unused_columns is False and args.ignore_data_skip is True
    with pytest.raises(ValueError, match="dispatch_batches"):
        training_arguments(output_dir=str(tmp_path), accelerator_config={"dispatch_batches": True})
    with pytest.raises(ValueError, match="remove_unused_columns"):
        training_arguments(output_dir=str(tmp_path), remove_unused_columns=True)


def test_checkpoint_resume_continues_the_same_stream(tmp_path, small_corpus, tokenizer):
    trainer, _, _, full = build(str(tmp_path / "a"), str(small_corpus), 6, tokenizer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "data/tokens/en" in entry]
    assert logged and logged[-1]["data/tokens/en"] + logged[-1]["data/tokens/de"] == 6 * 2 * 32
    assert os.path.isfile(tmp_path / "a" / "checkpoint-3" / "data_scheduler" / "rank0.json")
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    trainer, scheduler, _, after = build(str(tmp_path / "b"), str(small_corpus), 6, tokenizer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-3"))
    assert after == full[3:]
    assert scheduler.current_step == 6


def test_loss_feedback_raises_the_weight_of_the_harder_source(tmp_path, small_corpus, tokenizer):
    # `de` becomes hard: random characters; `en` stays the easy repeated sentences.
    import random

    rng = random.Random(0)
    (small_corpus / "de.jsonl").write_text(
        "".join(
            json.dumps({"text": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(120))})
            + "\n"
            for _ in range(80)
        )
    )
    feedback = Exp3Feedback(update_every=2, learning_rate=3.0, smoothing=0.5, min_weight=0.05, max_weight=0.95)
    trainer, scheduler, _, _ = build(str(tmp_path / "fb"), str(small_corpus), 12, tokenizer, feedback=feedback)
    trainer.train()
    assert scheduler.controller.count("feedback") == 6
    final = scheduler.controller.weights_at(10**9)  # once every journalled change is in force
    assert final["de"] > 0.6, final
    # A log event has the loss of the sources that had tokens since the previous one; compare where both did.
    losses = [e for e in trainer.state.log_history if "data/loss/de" in e and "data/loss/en" in e]
    assert losses and losses[-1]["data/loss/de"] > losses[-1]["data/loss/en"]


def test_two_processes_read_disjoint_data(tmp_path, small_corpus):
    # `accelerate launch --cpu --num_processes 2` starts one process (ENVIRONMENT_NOTES); --multi_gpu with
    # use_cpu gives two gloo processes. A free port keeps parallel test runs apart.
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    out = tmp_path / "ddp"
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    cmd = [*launch, str(HERE / "trainer_run.py"), str(out), str(small_corpus), "4"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"consumed_rank{r}.json").read_text()) for r in range(2)]
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(small_corpus / "tokenizer.json"))
    docs = []
    for rank in ranks:
        assert len(rank["batches"]) == 4  # every batch this rank read reached its model: nothing dropped
        text = " ".join(tok.decode(row) for batch in rank["batches"] for row in batch)
        docs.append(set(re.findall(r"\b(en|de)#(\d+)#", text)))
        # What the rank's scheduler says was consumed is exactly what its model saw.
        assert sum(s["tokens"] for s in rank["stats"].values()) == 4 * 2 * 32
    assert docs[0] and docs[1] and not docs[0] & docs[1]
    logged = [e for e in ranks[0]["log"] if "data/tokens/en" in e][-1]
    assert logged["data/tokens/en"] + logged["data/tokens/de"] == 2 * 4 * 2 * 32  # summed over both ranks


def test_logged_step_weight_and_data_agree_at_every_step(tmp_path, small_corpus, tokenizer):
    from transformers import TrainerCallback

    trainer, scheduler, _, _ = build(str(tmp_path / "edit"), str(small_corpus), 10, tokenizer)
    trainer.args.logging_steps = 1

    class Edit(TrainerCallback):
        effective: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                self.effective = scheduler.set_weights({"en": 0.0})

    edit = Edit()
    trainer.add_callback(edit)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "data/weight/en" in e and "loss" in e]  # not the final summary
    assert [e["step"] for e in logs] == list(range(1, 11))
    tokens = [e["data/tokens/en"] for e in logs]
    en_per_step = [b - a for a, b in zip([0, *tokens], tokens, strict=False)]
    first = next(e["step"] for e in logs if e["data/weight/en"] == 0)
    assert first == edit.effective + 1  # set_weights' step is 0-based; global_step counts from 1
    for e, en in zip(logs, en_per_step, strict=True):
        assert (e["data/weight/en"] == 0) == (e["step"] >= first)
        if e["step"] >= first:
            assert en == 0, f"step {e['step']} logged weight 0 for en but trained on {en} en tokens"
    assert en_per_step[first - 2] > 0, "the step before the change still trained on en"
