"""SFT with packing against the same run without packing: batch efficiency and tokens/s, in one process.

    python benchmarks/sft_packing.py                       # wonton-tiny, the package's chat samples, 2 CPU cores
    python benchmarks/sft_packing.py --max-length 2048 --batch 4 --config examples/configs/sft/wonton-7b-chat.yaml

Both runs train the same conversations (the `data.sources` of `--config`, default the embedded demo's samples)
for the same epochs from the same initial weights, with TRL's SFTTrainer as `examples/sft.py` builds it; only
`data.packing` differs. Baseline: packing off (TRL pads each batch to its longest conversation). Printed:
- padding efficiency: real tokens / tokens the model computes (padded batch shape or padding-free length);
- fill: real tokens / (rows x max_length), how full packed rows are;
- answer share: tokens that carry loss / real tokens (answer-only loss);
- tokens/s: real tokens per second of training step time, and the wall time per epoch.
Runs alternate (packed, padded, packed, padded, ...) so load drift on a shared machine hits both alike; the
median over rounds is reported, after one discarded warm-up run of each.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from wonton_hf.chat.sft import (
    batch_efficiency,
    build_sft_config,
    load_chat_data,
    load_model_and_tokenizer,
    load_sft_config,
)

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "configs" / "sft" / "sft-tiny-cpu.yaml"


class StepClock(TrainerCallback):
    """Training step time and the real tokens TRL counted (`_total_train_tokens`) over the run."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.trainer: SFTTrainer | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._start


def one_run(config, model, tokenizer, dataset, packing: bool, epochs: float) -> dict[str, float]:
    config.data.packing = packing
    config.train.epochs = epochs
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        config.output_dir = out
        trainer = SFTTrainer(
            model=copy.deepcopy(model),
            args=build_sft_config(config),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        efficiency = batch_efficiency(trainer)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        tokens = trainer._total_train_tokens  # real tokens: attention-mask sum, or padding-free length
        loss = trainer.state.log_history[-1]["train_loss"]
    return {
        "padding_efficiency": efficiency.padding_efficiency,
        "fill": efficiency.fill,
        "answer_share": efficiency.loss_fraction,
        "tokens_per_s": tokens / clock.seconds,
        "epoch_s": wall / epochs,
        "steps": trainer.state.global_step,
        "loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="SFT YAML whose model and data are used")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="rows (packed) or conversations (padded) per step")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 gives steadier ratios on a shared machine)"
    )
    parser.add_argument("--attn", default=None, help="attention implementation (default: the config's, sdpa)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    scratch = tempfile.mkdtemp(prefix="sft_packing_")  # the on-the-spot tokenizer is written under output_dir
    config = load_sft_config(
        args.config,
        [
            f"output_dir={scratch}",
            f"data.max_length={args.max_length}",
            f"train.per_device_batch_size={args.batch}",
            f"train.global_batch_size={args.batch}",
            "train.report_to=[]",
            "train.logging_steps=1000",
            "train.save_steps=100000",
            "monitors.stability=null",
            "monitors.throughput=null",
            "monitors.spike_guard=null",
        ]
        + ([f"model.attn_implementation={args.attn}"] if args.attn else []),
    )
    dataset, report = load_chat_data(config)
    model, tokenizer, origin = load_model_and_tokenizer(config)
    print(
        f"model: {origin}; {len(dataset)} conversations; max_length {args.max_length}, batch {args.batch}; "
        f"attention {model.config._attn_implementation}; {torch.get_num_threads()} threads"
    )
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for packing in (True, False):  # warm-up: first-call costs (kernels, allocator) land on neither side
        one_run(config, model, tokenizer, dataset, packing, min(args.epochs, 0.2))
    for _ in range(args.rounds):
        for packing in (True, False):
            results[packing].append(one_run(config, model, tokenizer, dataset, packing, args.epochs))
    median = {p: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for p, runs in results.items()}
    print(f"{'':22}{'no packing (baseline)':>24}{'packing (bfd)':>16}{'ratio':>9}")
    for key, label in [
        ("padding_efficiency", "padding efficiency"),
        ("fill", "row fill"),
        ("answer_share", "answer share"),
        ("tokens_per_s", "real tokens/s"),
        ("epoch_s", "wall s per epoch"),
        ("steps", "optimizer steps"),
        ("loss", "final train loss"),
    ]:
        base, packed = median[False][key], median[True][key]
        print(f"{label:22}{base:>24.3f}{packed:>16.3f}{packed / base if base else float('nan'):>8.2f}x")


if __name__ == "__main__":
    main()
