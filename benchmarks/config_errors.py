"""Time from process start to the config-error message, and `wonton-hf --help`, against the heavy imports.

    python benchmarks/config_errors.py [--rounds 3]

For each of the 10 bad configs of issue 15 (the exact overrides the tests use), runs `python
examples/pretrain.py <override>` and measures the wall time until it exits with code 2 and its one message.
Baseline in the same run: a process that only imports what a run needs before it could check anything in the
old layout (`wonton_hf.training.pretrain`, then `launch`: torch, transformers, the data scheduler). Rounds interleave the
measurements, so load on the shared machine hits both alike; medians and maxima are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.test_entry import BAD_CONFIGS  # noqa: E402  (the tests' list: one source of truth)

ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    errors: dict[str, list[float]] = {" ".join(overrides): [] for overrides, _ in BAD_CONFIGS}
    helps, heavy = [], []
    for _ in range(args.rounds):
        seconds, _ = timed([sys.executable, "-c", "import wonton_hf.training.pretrain"])
        heavy.append(seconds)
        for overrides, path in BAD_CONFIGS:
            seconds, result = timed(
                [sys.executable, "examples/pretrain.py", "output_dir=/tmp/config_errors_bench", *overrides]
            )
            assert result.returncode == 2 and f"  {path}: " in result.stderr, result.stderr
            errors[" ".join(overrides)].append(seconds)
        seconds, result = timed([sys.executable, "-m", "wonton_hf.cli", "--help"])
        assert result.returncode == 0
        helps.append(seconds)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"{'config error (override)':<36} {'median s':>9} {'max s':>7}")
    for override, values in errors.items():
        print(f"{override[:36]:<36} {statistics.median(values):>9.2f} {max(values):>7.2f}")
    every = [v for values in errors.values() for v in values]
    print(f"{'all 10 (each exit 2, one message)':<36} {statistics.median(every):>9.2f} {max(every):>7.2f}")
    print(f"{'wonton-hf --help':<36} {statistics.median(helps):>9.2f} {max(helps):>7.2f}")
    print(f"{'baseline: import training.pretrain':<36} {statistics.median(heavy):>9.2f} {max(heavy):>7.2f}")


if __name__ == "__main__":
    main()
