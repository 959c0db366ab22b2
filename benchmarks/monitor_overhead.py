"""Step-time overhead of the monitors, against the same Trainer without them, in one process.

    python benchmarks/monitor_overhead.py                    # wonton-tiny, seq 256, batch 8, CPU
    python benchmarks/monitor_overhead.py --preset wonton-1b --seq 2048 --batch 4 --steps 60   # on a GPU

Steps are timed in wall time on GPU and in process CPU time on CPU (see `_clock`). Two measurements,
because a shared machine's load drifts by more than the effect being measured:
1. Paired steps: one Trainer run whose `StabilityMonitor` measures every other step. The median ratio
   (measured step / the unmeasured step just before it) is the cost of one measured step, R1; at the
   default interval N the overhead is (R1 - 1) / N. Neighbouring steps share the machine's load.
2. End to end: runs with no callbacks and with all three monitors at their defaults, alternating, from
   the same weights and data, `--repeats` times; ratios of the mean step times (which include the
   measured steps) and of the medians (robust to load bursts, but blind to 1-in-N measured steps).
3. Output-head operator norm alone (part of every measured step since it was added): median time of the
   `StabilityMonitor`'s norm computation (`output_norm_iterations` power-iteration steps, warm-started as in
   training, plus the RMS->inf norm) over the median unmeasured step, divided by the default interval.
The claims: overhead <= 5 % of step time at the default interval, the operator norm <= 1 % of it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor, add_monitors
from wonton_hf.models.wonton.configuration_wonton import WontonConfig
from wonton_hf.models.wonton.modeling_wonton import WontonForCausalLM


class StepTimer(TrainerCallback):
    """Duration of each optimizer step (forward, backward, monitors, optimizer), synchronised on GPU."""

    def __init__(self) -> None:
        self.durations: dict[int, float] = {}

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._start = _clock()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.durations[state.global_step] = _clock() - self._start


def _clock() -> float:
    """GPU: wall time. CPU: this process's CPU time, which other users' load on a shared machine disturbs
    far less than wall time (the work is the same; only its waiting changes)."""
    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PackedRandom(torch.utils.data.Dataset):
    def __init__(self, vocab: int, seq: int, size: int) -> None:
        self.vocab, self.seq, self.size = vocab, seq, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(4, self.vocab, (self.seq,), generator=torch.Generator().manual_seed(index))
        split = self.seq // 3  # two documents per row, as the packer emits
        positions = torch.cat([torch.arange(split), torch.arange(self.seq - split)])
        return {"input_ids": ids, "labels": ids.clone(), "position_ids": positions}


def run_once(model, dataset, options, monitors, out: str) -> dict[int, float]:
    args = TrainingArguments(out, report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True, **options)
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)
    timer = StepTimer()
    trainer.add_callback(timer)
    add_monitors(trainer, *monitors)
    trainer.train()
    return timer.durations


def output_norm_cost(model, repeats: int = 21) -> float:
    """Median time of one warm-started output-norm measurement (the first, cold one is not counted)."""
    monitor = StabilityMonitor()
    monitor._output_norms(model)  # cold start: ten times the iterations, once per run
    durations = []
    for _ in range(repeats):
        _sync()
        start = _clock()
        monitor._output_norms(model)
        _sync()
        durations.append(_clock() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="wonton-tiny")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: no OpenMP spin-waiting in CPU time)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    config = WontonConfig.from_preset(
        args.preset, max_position_embeddings=max(args.seq, 512), attn_implementation=args.attn
    )
    torch.manual_seed(0)
    model = WontonForCausalLM(config)
    dataset = PackedRandom(config.vocab_size, args.seq, args.steps * args.batch)
    options = dict(
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=3e-4,
        use_cpu=not cuda,
        bf16=cuda,
        dataloader_num_workers=0,
    )
    interval = StabilityMonitor().every_n_steps
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset}, seq {args.seq}, batch {args.batch}, {args.attn}, {device}")
    with tempfile.TemporaryDirectory() as out:
        paired = run_once(model, dataset, options, [StabilityMonitor(every_n_steps=2)], out)
        ratios = [paired[s] / paired[s - 1] for s in paired if s % 2 == 0 and s > args.warmup and s - 1 in paired]
        r1 = statistics.median(ratios)
        print(
            f"paired: measured step / unmeasured neighbour, median of {len(ratios)}: {r1:.3f} "
            f"-> overhead at the default interval {interval}: {100 * (r1 - 1) / interval:+.2f}%"
        )
        unmeasured = statistics.median(paired[s] for s in paired if s % 2 == 1 and s > args.warmup)
        norm_cost = output_norm_cost(model)
        print(
            f"output-head norm ({StabilityMonitor().output_norm_iterations} power iterations, head "
            f"{tuple(model.get_output_embeddings().weight.shape)}): {norm_cost * 1000:.3f} ms per measurement = "
            f"{100 * norm_cost / unmeasured:.3f}% of an unmeasured step ({unmeasured * 1000:.1f} ms) "
            f"-> {100 * norm_cost / unmeasured / interval:.4f}% per step at the default interval {interval}"
        )
        times: dict[str, list[float]] = {"baseline (no callbacks)": [], "all three monitors (defaults)": []}
        for _ in range(args.repeats):
            times["baseline (no callbacks)"] += list(run_once(model, dataset, options, [], out).values())[args.warmup :]
            monitors = [StabilityMonitor(), ThroughputMonitor(), SpikeGuard()]
            times["all three monitors (defaults)"] += list(run_once(model, dataset, options, monitors, out).values())[
                args.warmup :
            ]
    base_mean = statistics.fmean(times["baseline (no callbacks)"])
    base_median = statistics.median(times["baseline (no callbacks)"])
    for name, values in times.items():
        mean, median = statistics.fmean(values), statistics.median(values)
        print(
            f"end to end: {name:32s} {len(values)} steps: mean {mean * 1000:7.1f} ms (ratio {mean / base_mean:.3f}), "
            f"median {median * 1000:7.1f} ms (ratio {median / base_median:.3f})"
        )


if __name__ == "__main__":
    main()
