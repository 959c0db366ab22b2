"""What the checkpoint manifest costs at save time: hashing a `wonton-125m` checkpoint against writing it.

    python benchmarks/checkpoint_hashing.py                 # wonton-125m, 2 repeats
    python benchmarks/checkpoint_hashing.py --preset wonton-tiny --repeats 3

Writes what a Trainer checkpoint of the preset holds in bulk — the weights (`model.safetensors`, fp32) and AdamW's
two fp32 moments (`optimizer.pt`, `torch.save`) — into a temporary directory, timing the write (with fsync), then
times `build_manifest` over it with the package's algorithm (xxh3_128) and with SHA-256, as the baseline. Prints
each hash time as a share of the write. The files are then in the page cache, as they are right after a real save.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.checkpointing.protocol import HASH_ALGORITHM, build_manifest


def write_checkpoint(model: torch.nn.Module, directory: Path) -> float:
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in model.named_parameters()}
    start = time.perf_counter()
    save_file(state, str(directory / "model.safetensors"))
    torch.save(moments, directory / "optimizer.pt")
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="wonton-125m")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = WontonForCausalLM(WontonConfig.from_preset(args.preset))
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            write = write_checkpoint(model, directory)
            size = sum(p.stat().st_size for p in directory.iterdir()) / 1e9
            times = {}
            for algorithm in (HASH_ALGORITHM, "sha256"):
                start = time.perf_counter()
                build_manifest(directory, algorithm)
                times[algorithm] = time.perf_counter() - start
            shares = ", ".join(f"{a} {t:.2f} s = {t / write:.1%} of the write" for a, t in times.items())
            print(f"{args.preset}: {size:.2f} GB written in {write:.2f} s; {shares}")


if __name__ == "__main__":
    main()
