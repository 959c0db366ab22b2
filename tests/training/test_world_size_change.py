"""Resume on another world size, both ways, under DeepSpeed ZeRO-2 (through the universal checkpoint) and DDP.

Per engine, three launches (module-scoped, shared by both directions):
- `ref`: the uninterrupted run, 2 processes, 9 steps (checkpoints 3, 6, 9);
- `shrunk`: `ref`'s checkpoint-3 resumed on 1 process, stopped after step 6 (2 -> 1);
- `grown`: `shrunk`'s checkpoint-6 (written by that 1-process run) resumed on 2 processes to step 9 (1 -> 2).
Each resumed run must end where `ref` is at the same step, with the same LR and losses, and with its Adam
moments equal to `ref`'s (carried, not reset). Data, global batch and `max_steps` are the same in every run
(elastic_worker.py), so the runs differ only in how the rows' gradients are summed.

Tolerance: 1e-5 absolute on the weights (lr 1e-3). A run on 1 process sums the same rows' gradients in another
order than 2 processes (gradient accumulation of 2 micro-batches instead of an all-reduce over 2), a float32
reordering of ~1e-7 relative per step, which Adam's division by sqrt(v) can amplify to ~1e-6; a reset of the
Adam moments or of the schedule moves the weights by ~lr = 1e-3 per step, 100x the tolerance.
"""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.launch import free_port, run_process_group
from wonton_hf.training.elastic import convert_to_universal

WORKER = Path(__file__).with_name("elastic_worker.py")
ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 9


def _torchrun(processes: int, out: Path, engine: str, stop_at: int | None = None) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    if engine == "ddp":
        env["ACCELERATE_USE_CPU"] = "true"  # gloo DDP; DeepSpeed's process state is opened by the worker
    env["PYTHONWARNINGS"] = "ignore"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port"]
    command += [str(free_port()), str(WORKER), str(out), engine, str(MAX_STEPS)]
    command += [str(stop_at)] if stop_at is not None else []
    result = run_process_group(command, env=env, cwd=ROOT, timeout=400, merge_output=True, what="run hung")
    assert result.returncode == 0, result.stdout[-4000:]


def _resumed(source: Path, out: Path, processes: int, engine: str, stop_at: int | None = None) -> Path:
    out.mkdir()
    shutil.copytree(source, out / source.name)
    _torchrun(processes, out, engine, stop_at)
    return out


def _runs(tmp_path_factory, engine: str) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(engine)
    _torchrun(2, root / "ref", engine)  # uninterrupted
    shrunk = _resumed(root / "ref" / "checkpoint-3", root / "shrunk", 1, engine, stop_at=6)
    grown = _resumed(shrunk / "checkpoint-6", root / "grown", 2, engine)
    return {"ref": root / "ref", "shrunk": shrunk, "grown": grown}


@pytest.fixture(scope="module")
def zero2_runs(tmp_path_factory):
    return _runs(tmp_path_factory, "deepspeed")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    return _runs(tmp_path_factory, "ddp")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def _result(run: Path, world: int) -> dict:
    return json.loads((run / f"result-{world}.json").read_text())


def _assert_same_end(reference: Path, resumed: Path, world: int, start: int, end: int) -> float:
    """`resumed` (on `world` processes, from checkpoint-`start`) ends at checkpoint-`end` where `reference` does."""
    ref, res = _weights(reference / f"checkpoint-{end}"), _weights(resumed / f"checkpoint-{end}")
    begin = _weights(reference / f"checkpoint-{start}")
    diff = max((ref[k] - res[k]).abs().max().item() for k in ref)
    moved = max((ref[k] - begin[k]).abs().max().item() for k in ref)
    print(
        f"max |uninterrupted - resumed on {world}| = {diff:.2e} (weights moved {moved:.2e} in steps {start + 1}-{end})"
    )
    assert diff < 1e-5 < moved
    history = _result(resumed, world)["history"]
    ref_history = _result(reference, 2)["history"]
    after = {e["step"]: (e["learning_rate"], e["loss"]) for e in history if "loss" in e and e["step"] > start}
    ref_after = {e["step"]: (e["learning_rate"], e["loss"]) for e in ref_history if "loss" in e}
    assert sorted(after) == list(range(start + 1, end + 1))  # the step counter carried over
    for step, (lr, loss) in after.items():  # the LR schedule carried over; the losses follow the same path
        assert lr == pytest.approx(ref_after[step][0], rel=1e-9) and loss == pytest.approx(ref_after[step][1], abs=1e-5)
    return diff


def _zero_moments(checkpoint: Path, key: str) -> torch.Tensor:
    """One Adam moment over all ZeRO partitions of a checkpoint, concatenated in rank order (padding included)."""
    tag = checkpoint / f"global_step{checkpoint.name.split('-')[1]}"
    shards = sorted(tag.glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    states = [torch.load(s, map_location="cpu", weights_only=False)["optimizer_state_dict"] for s in shards]
    return torch.cat([st["base_optimizer_state"]["state"][0][key] for st in states])


def _assert_zero_moments_carried(reference: Path, resumed: Path, step: int) -> None:
    """The resumed run's moments equal the uninterrupted run's at `step`; reset ones differ by their whole size."""
    for key in ("exp_avg", "exp_avg_sq"):
        ref = _zero_moments(reference / f"checkpoint-{step}", key)
        res = _zero_moments(resumed / f"checkpoint-{step}", key)
        n = min(ref.numel(), res.numel())  # partitions are padded to equal sizes
        torch.testing.assert_close(res[:n], ref[:n], atol=1e-6, rtol=1e-3)
        assert res.abs().max() > 0


def _assert_ddp_moments_carried(reference: Path, resumed: Path, step: int) -> None:
    ref_opt = torch.load(reference / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)["state"]
    res_opt = torch.load(resumed / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)["state"]
    for index in ref_opt:
        assert res_opt[index]["step"] == ref_opt[index]["step"] == step  # not restarted at the resume
        torch.testing.assert_close(res_opt[index]["exp_avg"], ref_opt[index]["exp_avg"], atol=1e-6, rtol=1e-3)
        torch.testing.assert_close(res_opt[index]["exp_avg_sq"], ref_opt[index]["exp_avg_sq"], atol=1e-9, rtol=1e-3)


@pytest.mark.slow  # three DeepSpeed launches (~25 s each on 2 cores once DeepSpeed's comm op is compiled)
def test_zero2_two_to_one_process_through_the_universal_checkpoint(zero2_runs):
    ref, shrunk = zero2_runs["ref"], zero2_runs["shrunk"]
    assert "World size changed (2 -> 1): resuming" in _result(shrunk, 1)["elastic"]
    assert (shrunk / "checkpoint-3" / "global_step3_universal" / "CONVERTED").is_file()
    _assert_same_end(ref, shrunk, 1, 3, 6)
    _assert_zero_moments_carried(ref, shrunk, 6)


@pytest.mark.slow
def test_zero2_one_to_two_processes_through_the_universal_checkpoint(zero2_runs, caplog):
    ref, grown = zero2_runs["ref"], zero2_runs["grown"]
    notice = _result(grown, 2)["elastic"]
    assert "World size changed (1 -> 2): resuming" in notice and "global_step6_universal" in notice
    converted = grown / "checkpoint-6" / "global_step6_universal"
    assert (converted / "CONVERTED").is_file()
    _assert_same_end(ref, grown, 2, 6, 9)
    _assert_zero_moments_carried(ref, grown, 9)
    # A later resume on yet another size reuses the conversion next to the checkpoint, and says so.
    stamp = (converted / "CONVERTED").read_text()
    with caplog.at_level(logging.INFO, logger="wonton_hf.training.elastic"):
        assert convert_to_universal(grown / "checkpoint-6") == converted
    assert "reusing the universal checkpoint" in caplog.text and (converted / "CONVERTED").read_text() == stamp


def test_ddp_two_to_one_process(ddp_runs):
    ref, shrunk = ddp_runs["ref"], ddp_runs["shrunk"]
    assert "World size changed (2 -> 1): the full optimizer state" in _result(shrunk, 1)["elastic"]
    _assert_same_end(ref, shrunk, 1, 3, 6)
    _assert_ddp_moments_carried(ref, shrunk, 6)


def test_ddp_one_to_two_processes(ddp_runs):
    ref, grown = ddp_runs["ref"], ddp_runs["grown"]
    assert "World size changed (1 -> 2): the full optimizer state" in _result(grown, 2)["elastic"]
    _assert_same_end(ref, grown, 2, 6, 9)
    _assert_ddp_moments_carried(ref, grown, 9)
