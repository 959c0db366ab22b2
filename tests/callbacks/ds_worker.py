"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: the monitors under DeepSpeed ZeRO-2 on CPU."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.callbacks.helpers import tiny_model, trainer, training_args  # noqa: E402
from tests.callbacks.test_spike_guard import FaultInjector  # noqa: E402
from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor, add_monitors  # noqa: E402

ZERO2 = {
    "zero_optimization": {"stage": 2},
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": False},
}


def main(out: str) -> None:
    model = tiny_model()
    FaultInjector(model, {k: float("nan") for k in (2, 3)})  # steps 3 and 4 are bad on every rank
    run = trainer(model, training_args(Path(out), max_steps=6, deepspeed=ZERO2, save_strategy="steps", save_steps=1))
    guard = SpikeGuard(min_window=2, max_bad_steps=2)
    add_monitors(run, StabilityMonitor(every_n_steps=2), ThroughputMonitor(), guard)
    run.train()
    rank = int(os.environ["RANK"])
    checkpoints = sorted(p.name for p in Path(out).glob("checkpoint-*"))
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "history": run.state.log_history,
                "step": run.state.global_step,
                "needs_resume": guard.needs_resume,
                "checkpoints": checkpoints,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
    from wonton_hf.training import shutdown

    shutdown()
