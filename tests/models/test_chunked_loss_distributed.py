"""The chunked head under DDP and DeepSpeed ZeRO-2 (2 CPU processes, gloo): the same step as one process unchunked."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.launch import free_port, run_process_group


def _torchrun(out: Path, mode: str) -> list[dict]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).with_name("chunked_loss_worker.py")
    command = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(worker), str(out), mode]
    result = run_process_group(command, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_reduces_the_chunked_gradients_to_the_single_process_step(tmp_path):
    for rank in _torchrun(tmp_path, "ddp"):
        worst = max(rank["diffs"].values())
        assert worst <= 1e-5 * max(rank["scale"], 1.0), rank["diffs"]


@pytest.mark.slow  # the first DeepSpeed launch on a machine JIT-compiles its CPU communication op (~40 s)
def test_deepspeed_zero2_step_equals_the_single_process_step(tmp_path):
    pytest.importorskip("deepspeed")
    for rank in _torchrun(tmp_path, "deepspeed"):
        worst = max(rank["diffs"].values())
        assert worst <= 1e-5 * max(rank["scale"], 1.0), rank["diffs"]
