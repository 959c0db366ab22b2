"""Step-time cost of the per-source training loss: from the fused loss's per-token values vs recomputed.

Three training steps of the same model on the same packed batch, interleaved, medians of several rounds:
- baseline: forward (labels) + backward + AdamW step, no per-source accounting;
- `token_loss`: the same, the forward also returns the per-token cross-entropy (`return_token_loss=True`) and
  `SourceLossMeter.add_token_losses` scatters it per source (what `DataSchedulerCallback` does now);
- recompute: the accounting the callback did before, a second fp32 cross-entropy over the logits.
Ratios are step time / baseline step time (1.00 = free). CPU time of the process is printed beside wall
time: on a shared machine it is the steadier of the two. Not a test: wall-clock never gates CI.

    python benchmarks/source_loss_overhead.py [--preset wonton-tiny --batch 8 --seq 512 --rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.data.callbacks.source_loss import SourceLossMeter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wonton-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed sample")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = WontonConfig.from_preset(args.preset)
    model = WontonForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, config.vocab_size, (args.batch, args.seq))
    source_ids = torch.randint(0, args.sources, (args.batch, args.seq))
    meter = SourceLossMeter(args.sources)

    def step(mode: str) -> None:
        out = model(input_ids=ids, labels=ids, return_token_loss=mode == "token_loss")
        if mode == "token_loss":
            meter.add_token_losses(out.token_loss, ids, source_ids)
        elif mode == "recompute":
            meter.add(out.logits, ids, source_ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    modes = ("baseline", "token_loss", "recompute")
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for mode in modes:  # warm-up
        step(mode)
    for _ in range(args.rounds):
        for mode in modes:
            w, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(mode)
            wall[mode].append((time.perf_counter() - w) / args.steps)
            cpu[mode].append((time.process_time() - c) / args.steps)
        meter.take_for_log(), meter.take_for_feedback()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.preset} (vocab {config.vocab_size}), "
        f"batch {args.batch} x {args.seq}, {args.sources} sources, median of {args.rounds} rounds x {args.steps} steps"
    )
    base_wall, base_cpu = statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])
    for mode in modes:
        w, c = statistics.median(wall[mode]), statistics.median(cpu[mode])
        print(
            f"{mode:<11} step {w * 1000:8.1f} ms wall ({w / base_wall:.3f}x)   {c * 1000:8.1f} ms cpu ({c / base_cpu:.3f}x)"
        )


if __name__ == "__main__":
    main()
