"""Run by test_world_size_change.py under torchrun: a tiny model trained (or resumed) with DeepSpeed ZeRO-2 or DDP,
optionally stopping after step `stop_at` (its checkpoint written) as an interrupted run would.

The global batch is the same on any world size (2 rows per device x gradient accumulation 2 / world) and the
data is a fixed random-token set sampled with one seed, so step k sees the same rows on 1 or 2 processes: an
interrupted run that changes world size must end where the uninterrupted one ends, up to float reordering.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from transformers import TrainerCallback  # noqa: E402

from tests.callbacks.helpers import tiny_model, trainer, training_args  # noqa: E402
from wonton_hf.checkpointing import guard_checkpoint_saves, shared_resume_plan  # noqa: E402
from wonton_hf.checkpointing.completion import ensure_completion_marking  # noqa: E402
from wonton_hf.distributed import world_size  # noqa: E402
from wonton_hf.training.elastic import prepare_world_size_change  # noqa: E402

ZERO2 = {
    "zero_optimization": {"stage": 2},
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": False},
}


class StopAt(TrainerCallback):
    """Ends training after `step` (the Trainer still saves that step's checkpoint), keeping `max_steps` and so the
    LR schedule of the uninterrupted run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def main(out: str, engine: str, max_steps: int, stop_at: int | None = None) -> None:
    extra = {}
    if engine == "deepspeed":  # the process state pretraining opens for DeepSpeed on CPU (training/devices.py)
        from wonton_hf.training.devices import deepspeed_on_cpu_state

        extra = {"deepspeed": ZERO2, "use_cpu": False, **deepspeed_on_cpu_state()}
    args = training_args(
        Path(out),
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=3,
        save_total_limit=None,
        gradient_accumulation_steps=2 // world_size(),
        lr_scheduler_type="linear",
        warmup_steps=2,
        **extra,
    )
    run = trainer(tiny_model(), args)
    if stop_at is not None:
        run.add_callback(StopAt(stop_at))
    guard_checkpoint_saves(run)
    ensure_completion_marking(run)
    plan = shared_resume_plan(out, "auto")
    notice = prepare_world_size_change(run, plan.checkpoint)
    run.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out, f"result-{world_size()}.json").write_text(
            json.dumps({"notice": plan.notice, "elastic": notice, "history": run.state.log_history})
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None)
    from wonton_hf.training import shutdown

    shutdown()
