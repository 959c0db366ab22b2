"""Resume on another world size: 2 processes save, 1 process resumes (DeepSpeed ZeRO-2 through the universal
checkpoint, and DDP), ending where an uninterrupted 2-process run ends.

Tolerance: 1e-5 absolute on the weights after 6 steps (lr 1e-3). The resumed run sums the same rows' gradients
in another order (one process accumulating 2 micro-batches instead of an all-reduce over 2), a float32 reordering
of ~1e-7 relative per step, which Adam's division by sqrt(v) can amplify to ~1e-6; a reset of the Adam moments or
of the schedule moves the weights by ~lr = 1e-3 per step, 100x the tolerance.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launch import free_port, run_process_group

WORKER = Path(__file__).with_name("elastic_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _torchrun(processes: int, out: Path, engine: str, max_steps: int) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    if engine == "ddp":
        env["ACCELERATE_USE_CPU"] = "true"  # gloo DDP; DeepSpeed's process state is opened by the worker
    env["PYTHONWARNINGS"] = "ignore"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port"]
    command += [str(free_port()), str(WORKER), str(out), engine, str(max_steps)]
    result = run_process_group(command, env=env, cwd=ROOT, timeout=400, merge_output=True, what="run hung")
    assert result.returncode == 0, result.stdout[-4000:]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def _resume_on_one(tmp_path: Path, engine: str) -> tuple[Path, Path]:
    reference, resumed = tmp_path / "ref", tmp_path / "resumed"
    _torchrun(2, reference, engine, 6)  # uninterrupted; saves checkpoint-3 and checkpoint-6
    resumed.mkdir()
    shutil.copytree(reference / "checkpoint-3", resumed / "checkpoint-3")
    _torchrun(1, resumed, engine, 6)  # resumes checkpoint-3 on 1 process
    return reference, resumed


def _assert_same_end(reference: Path, resumed: Path) -> float:
    ref, res = _weights(reference / "checkpoint-6"), _weights(resumed / "checkpoint-6")
    start = _weights(reference / "checkpoint-3")
    diff = max((ref[k] - res[k]).abs().max().item() for k in ref)
    moved = max((ref[k] - start[k]).abs().max().item() for k in ref)
    print(f"max |uninterrupted - resumed on 1| = {diff:.2e} (weights moved {moved:.2e} in steps 4-6)")
    assert diff < 1e-5 < moved
    history = json.loads((resumed / "result-1.json").read_text())["history"]
    ref_history = json.loads((reference / "result-2.json").read_text())["history"]
    after = {e["step"]: (e["learning_rate"], e["loss"]) for e in history if "loss" in e and e["step"] > 3}
    ref_after = {e["step"]: (e["learning_rate"], e["loss"]) for e in ref_history if "loss" in e and e["step"] > 3}
    assert sorted(after) == [4, 5, 6]  # resumed at step 3: the step counter carried over
    for step, (lr, loss) in after.items():  # the LR schedule carried over; the losses follow the same path
        assert lr == pytest.approx(ref_after[step][0], rel=1e-9) and loss == pytest.approx(ref_after[step][1], abs=1e-5)
    return diff


@pytest.mark.slow  # two DeepSpeed launches (~25 s each on 2 cores once DeepSpeed's comm op is compiled)
def test_zero2_two_to_one_process_through_the_universal_checkpoint(tmp_path):
    reference, resumed = _resume_on_one(tmp_path, "deepspeed")
    result = json.loads((resumed / "result-1.json").read_text())
    assert "World size changed (2 -> 1): resuming" in result["elastic"] and "universal" in result["elastic"]
    assert (resumed / "checkpoint-3" / "global_step3_universal" / "CONVERTED").is_file()
    _assert_same_end(reference, resumed)

    # The Adam moments carried over: the resumed run's (one partition) equals the two ranks' halves of the
    # uninterrupted run at step 6, concatenated; reset moments would differ by their whole size.
    def moments(checkpoint: Path, key: str) -> torch.Tensor:
        shards = sorted((checkpoint / "global_step6").glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
        states = [torch.load(s, map_location="cpu", weights_only=False)["optimizer_state_dict"] for s in shards]
        return torch.cat([st["base_optimizer_state"]["state"][0][key] for st in states])

    for key in ("exp_avg", "exp_avg_sq"):
        ref, res = moments(reference / "checkpoint-6", key), moments(resumed / "checkpoint-6", key)
        n = min(ref.numel(), res.numel())  # partitions are padded to equal sizes
        torch.testing.assert_close(res[:n], ref[:n], atol=1e-6, rtol=1e-3)
        assert res.abs().max() > 0


def test_ddp_two_to_one_process(tmp_path):
    reference, resumed = _resume_on_one(tmp_path, "ddp")
    result = json.loads((resumed / "result-1.json").read_text())
    assert "World size changed (2 -> 1): the full optimizer state" in result["elastic"]
    _assert_same_end(reference, resumed)
    ref_opt = torch.load(reference / "checkpoint-6" / "optimizer.pt", weights_only=True)["state"]
    res_opt = torch.load(resumed / "checkpoint-6" / "optimizer.pt", weights_only=True)["state"]
    for index in ref_opt:
        assert res_opt[index]["step"] == ref_opt[index]["step"] == 6  # not restarted at 3
        torch.testing.assert_close(res_opt[index]["exp_avg"], ref_opt[index]["exp_avg"], atol=1e-6, rtol=1e-3)
