"""Checkpoint averaging: peak memory (against the size of one model) and time, in a fresh process.

    python benchmarks/average_checkpoints.py                          # wonton-125m, 3 checkpoints, fp32
    python benchmarks/average_checkpoints.py --preset wonton-1b --last 4

Writes `--last` checkpoints of a randomly initialised `--preset` model (each perturbed differently, saved with
`save_pretrained` like the Trainer's, marked COMPLETE), then runs `wonton_hf.training.averaging` in a child
process that reports its resident memory after the imports (`VmRSS`) and its peak while averaging (`VmHWM`,
reset after the imports through `/proc/self/clear_refs`; Linux). The claim: the peak
added by averaging stays within 2 model copies (one accumulator plus the tensors being read and written).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys
from wonton_hf.training.averaging import average_checkpoints

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark: import-time peaks do not count
before = status("VmRSS")
report = average_checkpoints(sys.argv[1], int(sys.argv[2]), sys.argv[3])
print(json.dumps({"baseline_bytes": before, "peak_bytes": status("VmHWM"), "seconds": report.seconds,
                  "parameters": report.parameters}))
"""


def write_checkpoints(preset: str, count: int, run_dir: Path) -> int:
    import torch

    from wonton_hf.checkpointing import mark_complete
    from wonton_hf.models.wonton import WontonConfig, WontonForCausalLM

    torch.manual_seed(0)
    model = WontonForCausalLM(WontonConfig.from_preset(preset))
    for i in range(count):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter), alpha=1e-3)
        step = 100 * (i + 1)
        model.save_pretrained(run_dir / f"checkpoint-{step}")
        mark_complete(run_dir / f"checkpoint-{step}", step)
    return sum(f.stat().st_size for f in (run_dir / f"checkpoint-{100 * count}").glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wonton-125m")
    parser.add_argument("--last", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        started = time.perf_counter()
        model_bytes = write_checkpoints(args.preset, args.last, run_dir)
        written = time.perf_counter() - started
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(run_dir), str(args.last), str(Path(tmp) / "avg")],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(result.stdout.strip().splitlines()[-1])
    added = measured["peak_bytes"] - measured["baseline_bytes"]
    print(
        f"{args.preset}: {measured['parameters']:,} parameters, one model = {model_bytes / 2**20:,.0f} MiB "
        f"(safetensors); {args.last} checkpoints written in {written:.1f} s"
    )
    print(
        f"averaging {args.last} checkpoints: {measured['seconds']:.1f} s; peak RSS {measured['peak_bytes'] / 2**20:,.0f} MiB, "
        f"of which {added / 2**20:,.0f} MiB above the process after imports = {added / model_bytes:.2f} model copies"
    )


if __name__ == "__main__":
    main()
