"""A tiny real training run with the scheduler, used by test_trainer.py in-process and under torchrun.

Usage: python trainer_run.py OUT_DIR CORPUS_DIR MAX_STEPS [RESUME_CHECKPOINT]
Writes OUT_DIR/consumed_rank{r}.json: the input_ids of every training batch the model saw on that rank.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import Trainer

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.data import (
    DataSource,
    Exp3Feedback,
    OnlineDataScheduler,
    PackedWindowCollator,
    attach,
    training_arguments,
)


def build(out: str, corpus: str, max_steps: int, tokenizer, feedback: Exp3Feedback | None = None, workers: int = 0):
    sources = [DataSource(name=n, paths=[f"{corpus}/{n}*.jsonl"], weight=w) for n, w in (("en", 1), ("de", 1))]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=32, seed=5, batch_size=2, block_size=8)
    config = WontonConfig.from_preset("wonton-tiny")
    config.vocab_size = 640
    torch.manual_seed(0)
    model = WontonForCausalLM(config)
    args = training_arguments(
        output_dir=out,
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        logging_steps=2,
        save_steps=3,
        use_cpu=True,
        report_to=[],
        dataloader_num_workers=workers,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=scheduler, data_collator=PackedWindowCollator())
    tracker = attach(trainer, scheduler, feedback=feedback)
    seen: list[list[list[int]]] = []
    model.register_forward_pre_hook(
        lambda module, a, kw: seen.append(kw["input_ids"].tolist()) if module.training else None, with_kwargs=True
    )
    return trainer, scheduler, tracker, seen


def main() -> None:
    out, corpus, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resume = sys.argv[4] if len(sys.argv) > 4 else None
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{corpus}/tokenizer.json", eos_token="</s>", pad_token="<pad>")
    trainer, scheduler, _, seen = build(out, corpus, max_steps, tokenizer)
    trainer.train(resume_from_checkpoint=resume)
    rank = int(os.environ.get("RANK", 0))
    Path(out, f"consumed_rank{rank}.json").write_text(
        json.dumps({"batches": seen, "stats": scheduler.stats(), "log": trainer.state.log_history})
    )
    from wonton_hf.training import shutdown

    shutdown()


if __name__ == "__main__":
    main()
