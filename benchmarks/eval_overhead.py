"""In-loop evaluation on the embedded demo: its cost, and what the held-out curves say.

    python benchmarks/eval_overhead.py                     # the demo as shipped (300 steps, eval every 60)
    python benchmarks/eval_overhead.py train.max_steps=60  # any run-config override

Runs `examples/configs/runs/wonton-tiny-cpu.yaml` once, in one process, and reads the Trainer's own log history:
- overhead: the evaluations' wall time (the Trainer's `eval_runtime`, which is inside `train_runtime`) over the
  rest of the run's wall time, and the cost of one evaluation per window (seq_len tokens, one source each);
- the held-out loss per source at the first and the last evaluation (does it fall?);
- the final model's bits per byte per source next to its training loss (`data/loss/<source>` of the last
  training log events).
Claims: overhead <= 5 % at the demo's defaults; the held-out loss falls from the first to the last evaluation for
the total and for most sources (figures in docs/benchmarks.md, "In-loop evaluation").
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from wonton_hf.training import build_trainer, load_run_config, run

DEMO = Path(__file__).resolve().parents[1] / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"


def main(overrides: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as out:
        config = load_run_config(DEMO, [f"output_dir={out}", "train.report_to=[]", *overrides])
        prepared = build_trainer(config)
        windows = len(prepared.trainer.eval_dataset)
        run(prepared)
        history = prepared.trainer.state.log_history
    evals = [e for e in history if "eval_bpb" in e]
    total = next(e["train_runtime"] for e in history if "train_runtime" in e)
    spent = sum(e["eval_runtime"] for e in evals)
    print(
        f"\n{len(evals)} evaluations of {windows} windows x {config.data.seq_len} tokens at steps "
        f"{[e['step'] for e in evals]}"
    )
    print(
        f"run wall time {total:.1f} s, of which evaluation {spent:.1f} s: overhead {100 * spent / (total - spent):.2f}% "
        f"of training; one evaluation {spent / len(evals):.2f} s = {1000 * spent / len(evals) / windows:.1f} ms "
        "per source-window"
    )
    names = [s.name for s in config.data.sources]
    train_loss: dict[str, float] = {}
    for entry in history:  # the newest training loss of each source
        train_loss.update({k.split("/")[-1]: v for k, v in entry.items() if k.startswith("data/loss/")})
    first, last = evals[0], evals[-1]
    print(f"\n{'source':8} {'held-out loss first':>20} {'last':>8} {'falls':>6} {'bpb (final)':>12} {'train loss':>11}")
    falls = 0
    for name in ["", *names]:
        key = f"eval_{name}_loss" if name else "eval_loss"
        if key not in last:
            continue
        fell = last[key] < first[key]
        falls += fell and bool(name)
        bpb = last[f"eval_{name}_bpb" if name else "eval_bpb"]
        train = train_loss.get(name, next(e["loss"] for e in reversed(history) if "loss" in e) if not name else None)
        print(
            f"{name or 'total':8} {first[key]:>20.4f} {last[key]:>8.4f} {str(fell):>6} {bpb:>12.3f} "
            f"{train if train is not None else float('nan'):>11.4f}"
        )
    print(
        f"\nheld-out loss falls for the total: {last['eval_loss'] < first['eval_loss']}, for {falls}/{len(names)} sources"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
