"""Two-process DDP (gloo, CPU): the monitors' decisions and numbers agree across ranks."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.launch import free_port, run_process_group


def _torchrun(worker: str, out: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    command = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(Path(__file__).with_name(worker)),
        str(out),
    ]
    result = run_process_group(
        command, env=env, what="2-process run hung (rendezvous or a collective only some ranks entered)"
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_process_run_skips_and_rolls_back_on_every_rank_and_reduces_metrics(tmp_path):
    _torchrun("ddp_worker.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        # Rank 1's NaN makes step 3 bad for both: a rank skipping alone would desynchronise the replicas.
        assert result["changed"] == {
            "1": True,
            "2": True,
            "3": False,
            "4": True,
            "5": False,
            "6": False,
            "7": False,
            "8": True,
        }
        assert [e["step"] for e in result["history"] if e.get("spike/skip")] == [3, 5, 6, 7]
        assert [e.get("spike/rollback_to_step") for e in result["history"] if e.get("spike/rollback")] == [4.0]
    assert (tmp_path / "checkpoint-6-rolled-back").is_dir() and (tmp_path / "checkpoint-8").is_dir()
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    metrics = [{k: v for e in r["history"] for k, v in e.items() if k.startswith("stability/")} for r in ranks]
    assert metrics[0] and metrics[0] == metrics[1]  # reduced over ranks: identical everywhere


@pytest.mark.slow  # the first DeepSpeed launch on a machine JIT-compiles its CPU communication op (~40 s)
def test_deepspeed_zero2_run_logs_bad_steps_and_stops_for_resume(tmp_path):
    pytest.importorskip("deepspeed")
    _torchrun("ds_worker.py", tmp_path)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        history = result["history"]
        assert [e["step"] for e in history if e.get("spike/bad_step_not_skipped")] == [3, 4]
        assert [e["step"] for e in history if e.get("spike/stop_for_resume")] == [4]
        assert result["step"] == 4  # stopped for the launcher's resume instead of training on
        assert result["needs_resume"] is True
        assert result["checkpoints"] == ["checkpoint-1", "checkpoint-2"]  # none holding the unskipped bad updates
        assert any("stability/max_attn_logit/max" in e for e in history)
