"""Wall time of the offline `all` suite on a tiny Wonton checkpoint, and the task names it produces.

Ours: `evaluate_checkpoint` (lm-eval's `simple_evaluate`, our include folder, an index of only the lm-eval
task folders the suite needs). Baseline, same process, same folder and model: `simple_evaluate` with
lm-eval's default TaskManager, which indexes every built-in task (what `lm_eval --include_path` does).
Both score the same requests; the difference is start-up. Prints ratios (baseline / ours); > 1 means
ours is faster. Not a test: wall-clock never gates CI.

    python benchmarks/eval_offline_suite.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ fixtures: the same data as the tests

from tests.evaluation.fixtures import build_tiny_checkpoint, write_offline_data  # noqa: E402
from wonton_hf.evaluation.run import evaluate_checkpoint  # noqa: E402
from wonton_hf.evaluation.suites import suite_tasks  # noqa: E402


def run_ours(checkpoint: Path, data: Path, output: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    outputs = evaluate_checkpoint(str(checkpoint), "all", output_dir=output, data_dir=data, batch_size=64)
    return time.perf_counter() - start, outputs.results


def run_baseline(checkpoint: Path, tasks_dir: Path) -> float:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import wonton_hf  # noqa: F401

    start = time.perf_counter()
    lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(checkpoint), "dtype": "auto"},
        tasks=["wonton_all"],
        task_manager=TaskManager(include_path=str(tasks_dir)),
        batch_size=64,
        device="cpu",
        log_samples=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_offline_data(tmp / "data")
        checkpoint = build_tiny_checkpoint(tmp / "tiny")
        run_ours(checkpoint, data, tmp / "warmup")  # datasets cache, imports, remote-code-free model load
        ours, baseline, results = [], [], {}
        for round_ in range(args.rounds):
            seconds, results = run_ours(checkpoint, data, tmp / f"ours{round_}")
            ours.append(seconds)
            baseline.append(run_baseline(checkpoint, tmp / f"ours{round_}" / "lm_eval_tasks"))
    produced = [name for name in results["results"]]
    leaves = [name for name in produced if name in suite_tasks("all")]
    print(f"offline suite 'all' on wonton-tiny (2 docs per language/task, batch 64, CPU, {os.cpu_count()} cores)")
    print(
        f"  ours (restricted index):      median {statistics.median(ours):6.2f} s  ({', '.join(f'{s:.2f}' for s in ours)})"
    )
    print(
        f"  baseline (lm-eval full index): median {statistics.median(baseline):6.2f} s  ({', '.join(f'{s:.2f}' for s in baseline)})"
    )
    print(f"  ratio baseline / ours: {statistics.median(baseline) / statistics.median(ours):.2f}x")
    print(f"  {len(leaves)} tasks: {', '.join(leaves)}")
    print(f"  groups: {', '.join(name for name in produced if name not in leaves)}")


if __name__ == "__main__":
    main()
