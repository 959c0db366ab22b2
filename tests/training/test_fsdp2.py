"""FSDP2 on 2 CPU processes (gloo) through the HF Trainer and the package's `train.fsdp` mapping: the parameters are
really sharded; the run matches one process with the same global batch; it resumes exactly, and on another world
size through torch DCP with the Adam moments carried; SpikeGuard skips and rolls back; the checkpoint manifest
covers DCP's shard files. The runs are shared by the tests (module fixtures; each launch ~20-35 s on 2 cores).

Tolerance, 1e-5 absolute on the weights after 6 AdamW steps at lr 1e-3: two ranks reduce-scatter the halves of a
step's gradient where one process accumulates two micro-batches, the same sums in another float32 order (~1e-7
relative per step), which Adam's division by sqrt(v) can amplify to ~1e-6 where v is tiny (measured: 9e-7 for 2
vs 1 process, 3e-7 and 2e-7 for the world-size changes). A reset of the Adam moments or of the LR schedule on
resume moves weights by ~lr = 1e-3 per step, 100x the tolerance; each test also checks the weights moved by far
more than it in steps 4-6, so agreement is not reached by standing still.
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
from tests.training.test_checkpoint_integrity import _flip
from wonton_hf.checkpointing import resume_plan, verify_checkpoint

WORKER = Path(__file__).with_name("fsdp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def _torchrun(processes: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "DS_ACCELERATOR": "cpu"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port"]
    command += [str(free_port()), str(WORKER), *args]
    result = run_process_group(command, env=env, cwd=ROOT, timeout=300, merge_output=True, what="FSDP2 run hung")
    assert result.returncode == 0, result.stdout[-4000:]


def _train(processes: int, out: Path, resume_from: Path | None = None) -> Path:
    if resume_from is not None:
        out.mkdir(parents=True)
        shutil.copytree(resume_from, out / resume_from.name)
    _torchrun(processes, "train", str(out), "6")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted 6-step runs on 2 and on 1 process (checkpoints at steps 3 and 6)."""
    root = tmp_path_factory.mktemp("fsdp2")
    return {"root": root, 2: _train(2, root / "two"), 1: _train(1, root / "one")}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _result(run: Path, world: int) -> dict:
    return json.loads((run / f"result-{world}.json").read_text())


def _losses(run: Path, world: int) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in _result(run, world)["history"] if "loss" in e}


def _moments(run: Path, world: int) -> dict:
    return torch.load(run / f"moments-{world}.pt", weights_only=False)["state"]


def _assert_moments_carried(resumed: dict, reference: dict) -> None:
    """The Adam state at step 6 equals the uninterrupted run's, and counts 6 steps (not 3: not restarted)."""
    assert resumed.keys() == reference.keys()
    for name, state in resumed.items():
        assert state["step"] == reference[name]["step"] == 6
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key], reference[name][key], atol=1e-7, rtol=1e-4)
    assert max(s["exp_avg"].abs().max().item() for s in resumed.values()) > 1e-4


def _assert_same_end(resumed: Path, reference: Path, world: int, reference_world: int) -> float:
    final, start = _weights(reference), _gathered_step3(reference)
    diff = _max_diff(_weights(resumed), final)
    moved = max((final[k] - start[k]).abs().max().item() for k in final.keys() & start.keys())
    print(f"max |uninterrupted - resumed| = {diff:.2e} (weights moved {moved:.2e} in steps 4-6)")
    assert diff < TOLERANCE < moved
    after = {s: loss for s, loss in _losses(resumed, world).items() if s > 3}
    ref = _losses(reference, reference_world)
    assert sorted(after) == [4, 5, 6]  # the step counter carried over
    for step, loss in after.items():
        assert loss == pytest.approx(ref[step], abs=TOLERANCE)
    return diff


def _gathered_step3(run: Path) -> dict[str, torch.Tensor]:
    """The full model of the sharded checkpoint-3, read back through DCP without a process group."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = run / "step3.pt"
    if not target.exists():
        dcp_to_torch_save(run / "checkpoint-3" / "pytorch_model_fsdp_0", target)
    return torch.load(target, weights_only=False)["model"]


def test_two_processes_shard_the_model_and_match_one_process(runs):
    ranks = _result(runs[2], 2)["ranks"]
    assert len(ranks) == 2
    for held in ranks:  # every parameter a DTensor, Shard(0) over a 2-rank mesh, each rank holding half
        assert held["all_dtensors"] and held["placements"] == ["(Shard(dim=0),)"] and held["mesh_size"] == 2
        assert held["local_numel"] * 2 == held["global_numel"]
    diff = _max_diff(_weights(runs[2]), _weights(runs[1]))
    print(f"FSDP2 2 processes vs 1, same global batch: final weights max |diff| = {diff:.2e}")
    assert diff < TOLERANCE
    two, one = _losses(runs[2], 2), _losses(runs[1], 1)
    assert sorted(two) == sorted(one) == list(range(1, 7))
    assert all(two[s] == pytest.approx(one[s], abs=TOLERANCE) for s in two)
    # the final directory is an ordinary model directory: its own code and auto_map, not FSDP's generated class
    config = json.loads((runs[2] / "final" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_wonton.WontonForCausalLM"
    assert not list((runs[2] / "final").glob("_fsdp*.py"))


def test_resume_on_one_process_from_two_through_dcp(runs):
    resumed = _train(1, runs["root"] / "two-to-one", resume_from=runs[2] / "checkpoint-3")
    assert "World size changed (2 -> 1): torch DCP reshards" in _result(resumed, 1)["elastic"]
    _assert_same_end(resumed, runs[2], 1, 2)
    _assert_moments_carried(_moments(resumed, 1), _moments(runs[2], 2))


@pytest.mark.slow  # one more 2-process launch (~30 s on 2 cores)
def test_resume_on_two_processes_from_one_through_dcp(runs):
    resumed = _train(2, runs["root"] / "one-to-two", resume_from=runs[1] / "checkpoint-3")
    assert "World size changed (1 -> 2): torch DCP reshards" in _result(resumed, 2)["elastic"]
    _assert_same_end(resumed, runs[1], 2, 1)
    _assert_moments_carried(_moments(resumed, 2), _moments(runs[1], 1))


@pytest.mark.slow  # one more 2-process launch (~30 s on 2 cores)
def test_exact_resume_on_the_same_world_size(runs):
    resumed = _train(2, runs["root"] / "two-to-two", resume_from=runs[2] / "checkpoint-3")
    assert _result(resumed, 2)["elastic"] is None
    reference, weights = _weights(runs[2]), _weights(resumed)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)  # bit for bit
    assert _losses(resumed, 2) == _losses(runs[2], 2)
    _assert_moments_carried(_moments(resumed, 2), _moments(runs[2], 2))


def test_the_manifest_covers_dcp_shards_and_a_damaged_shard_is_skipped(runs, tmp_path):
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(runs[2] / name, tmp_path / name)
    files = json.loads((tmp_path / "checkpoint-6" / "COMPLETE").read_text())["files"]
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):  # one file per rank, plus DCP's metadata
        assert {f"{folder}/__0_0.distcp", f"{folder}/__1_0.distcp", f"{folder}/.metadata"} <= set(files)
    assert verify_checkpoint(tmp_path / "checkpoint-6").ok
    _flip(tmp_path / "checkpoint-6" / "optimizer_0" / "__1_0.distcp")
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint == tmp_path / "checkpoint-3"
    assert "checkpoint-6/optimizer_0/__1_0.distcp: content differs" in plan.notice


def test_spike_guard_skips_and_rolls_back_under_fsdp2(tmp_path):
    """tests/callbacks/ddp_worker.py's scenario, sharded: step 3 poisoned on rank 1 only, steps 5-7 everywhere."""
    _torchrun(2, "spike", str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = {"1": True, "2": True, "3": False, "4": True, "5": False, "6": False, "7": False, "8": True}
    for result in ranks:
        assert result["sharding"]["all_dtensors"] and result["sharding"]["mesh_size"] == 2
        # Rank 1's NaN makes step 3 bad for both ranks (the loss is averaged first): no shard moved on either,
        # weights nor Adam state; a rank skipping alone would leave the shards of one model at different steps.
        assert result["changed"] == expected and result["optimizer_changed"] == expected
        assert [e["step"] for e in result["history"] if e.get("spike/skip")] == [3, 5, 6, 7]
        assert [e.get("spike/rollback_to_step") for e in result["history"] if e.get("spike/rollback")] == [4.0]
        assert result["restored_step_4_at_step_7"]  # the rollback read the sharded checkpoint-4 back
        assert any("stability/mlp_in_grad_rms/max" in e for e in result["history"])  # gathered from DTensor grads
    assert (tmp_path / "checkpoint-6-rolled-back").is_dir() and (tmp_path / "checkpoint-8").is_dir()
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
