"""Run by test_fsdp2.py under torchrun: a tiny model trained with FSDP2 (`fully_shard` over gloo) by the HF Trainer,
through the package's own mapping of `train.fsdp` (`wonton_hf.training.fsdp`).

`train OUT MAX_STEPS`: the global batch is the same on any world size (2 rows per device x gradient accumulation
2 / world) and the data a fixed random-token set sampled with one seed, so step k sees the same rows on 1 or 2
processes. Checkpoints every 3 steps (sharded, torch DCP); the run resumes from the newest complete one in OUT.
Rank 0 writes `result-<world>.json` (log history, resume notices, how the parameters were sharded on every rank)
and `moments-<world>.pt` (the full Adam state gathered from the shards at the end); `final/` is the full model.

`spike OUT`: the SpikeGuard run of tests/callbacks/ddp_worker.py under FSDP2: step 3 poisoned on rank 1 only,
steps 5-7 on every rank (a rollback to checkpoint-4); every rank writes `rank<r>.json` with, per step, whether
its parameter shard and its optimizer-state shard changed in `optimizer.step()`.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from tests.callbacks.helpers import tiny_model, trainer, training_args  # noqa: E402
from tests.callbacks.test_spike_guard import FaultInjector  # noqa: E402
from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, add_monitors  # noqa: E402
from wonton_hf.checkpointing import guard_checkpoint_saves, shared_resume_plan  # noqa: E402
from wonton_hf.checkpointing.completion import ensure_completion_marking  # noqa: E402
from wonton_hf.distributed import rank, world_size  # noqa: E402
from wonton_hf.training.config import FsdpConfig  # noqa: E402
from wonton_hf.training.elastic import prepare_world_size_change  # noqa: E402
from wonton_hf.training.fsdp import fsdp_on_cpu_state, fsdp_training_arguments, prepare_fsdp, save_full_model  # noqa: E402


def fsdp_args(out: Path, **overrides):
    fsdp = FsdpConfig()
    return fsdp, training_args(out, **fsdp_training_arguments(fsdp), **fsdp_on_cpu_state(), **overrides)


def sharding(model) -> dict:
    """How this rank holds the parameters: DTensor placements and local vs global sizes."""
    params = list(model.parameters())
    return {
        "all_dtensors": all(isinstance(p, DTensor) for p in params),
        "placements": sorted({str(p.placements) for p in params if isinstance(p, DTensor)}),
        "local_numel": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
        "global_numel": sum(p.numel() for p in params),
        "mesh_size": params[0].device_mesh.size() if isinstance(params[0], DTensor) else None,
    }


def train(out: Path, max_steps: int) -> None:
    fsdp, args = fsdp_args(
        out,
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=3,
        save_total_limit=None,
        gradient_accumulation_steps=2 // world_size(),
        lr_scheduler_type="linear",
        warmup_steps=2,
    )
    run = trainer(tiny_model(), args)
    prepare_fsdp(run, fsdp)
    guard_checkpoint_saves(run)
    ensure_completion_marking(run)
    plan = shared_resume_plan(out, "auto")
    notice = prepare_world_size_change(run, plan.checkpoint)
    run.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
    save_full_model(run, str(out / "final"))
    moments = get_optimizer_state_dict(
        run.model, run.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    shards = [None] * world_size()
    torch.distributed.all_gather_object(shards, sharding(run.model))
    if rank() == 0:
        torch.save(moments, out / f"moments-{world_size()}.pt")
        result = {"notice": plan.notice, "elastic": notice, "history": run.state.log_history, "ranks": shards}
        Path(out, f"result-{world_size()}.json").write_text(json.dumps(result))


class ShardUpdates(TrainerCallback):
    """Whether this rank's parameter and optimizer-state shards changed in each `optimizer.step()`."""

    def __init__(self) -> None:
        self.changed: dict[int, bool] = {}
        self.optimizer_changed: dict[int, bool] = {}
        self.after: dict[int, list[torch.Tensor]] = {}

    @staticmethod
    def _local(tensors) -> list[torch.Tensor]:
        return [(t.to_local() if isinstance(t, DTensor) else t).detach().clone() for t in tensors]

    def _moments(self, optimizer) -> list[torch.Tensor]:
        states = [optimizer.state.get(p, {}) for group in optimizer.param_groups for p in group["params"]]
        return self._local(v for s in states for v in s.values() if isinstance(v, torch.Tensor))

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._step = state.global_step + 1
        self._weights, self._state = self._local(model.parameters()), self._moments(optimizer)

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        weights, moments = self._local(model.parameters()), self._moments(optimizer)
        self.changed[self._step] = any(not torch.equal(a, b) for a, b in zip(weights, self._weights, strict=True))
        self.optimizer_changed[self._step] = len(moments) != len(self._state) or any(
            not torch.equal(a, b) for a, b in zip(moments, self._state, strict=True)
        )
        self.after[self._step] = weights


def spike(out: Path) -> None:
    model = tiny_model()
    me = rank()
    FaultInjector(model, {4: float("nan"), 5: float("nan"), 6: float("nan"), **({2: float("nan")} if me == 1 else {})})
    fsdp, args = fsdp_args(out, max_steps=8, save_strategy="steps", save_steps=2)
    run = trainer(model, args)
    prepare_fsdp(run, fsdp)
    updates = ShardUpdates()
    add_monitors(run, StabilityMonitor(every_n_steps=2), SpikeGuard(min_window=2, max_bad_steps=3))
    run.add_callback(updates)
    run.train()
    restored = all(torch.equal(a, b) for a, b in zip(updates.after[7], updates.after[4], strict=True))
    checksum = sum(p.detach().full_tensor().double().sum().item() for p in run.model.parameters())
    result = {
        "history": run.state.log_history,
        "changed": updates.changed,
        "optimizer_changed": updates.optimizer_changed,
        "restored_step_4_at_step_7": restored,
        "checksum": checksum,
        "sharding": sharding(run.model),
    }
    Path(out, f"rank{me}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        spike(Path(sys.argv[2]))
    from wonton_hf.training import shutdown

    shutdown()
