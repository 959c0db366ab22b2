"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: monitors in a 2-process DDP (gloo) run."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.callbacks.helpers import tiny_model, trainer, training_args  # noqa: E402
from tests.callbacks.test_spike_guard import FaultInjector, UpdateRecorder  # noqa: E402
from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor, add_monitors  # noqa: E402


def main(out: str) -> None:
    model = tiny_model()
    rank = int(__import__("os").environ["RANK"])
    # Step 3: only rank 1's batch is poisoned. Steps 5-7: every rank's, which triggers a rollback to checkpoint-4.
    FaultInjector(
        model, {4: float("nan"), 5: float("nan"), 6: float("nan"), **({2: float("nan")} if rank == 1 else {})}
    )
    run = trainer(model, training_args(Path(out), max_steps=8, logging_steps=1, save_strategy="steps", save_steps=2))
    recorder = UpdateRecorder()
    add_monitors(run, StabilityMonitor(every_n_steps=2), ThroughputMonitor(), SpikeGuard(min_window=2, max_bad_steps=3))
    run.add_callback(recorder)
    run.train()
    assert torch.distributed.get_world_size() == 2
    result = {
        "history": run.state.log_history,
        "changed": recorder.changed,
        "checksum": sum(p.detach().double().sum().item() for p in model.parameters()),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    from wonton_hf.training import shutdown

    shutdown()
