"""The checkpoint protocol shared by resume and SpikeGuard: only complete checkpoints count, and the run says why."""

import pytest
from transformers import Trainer, TrainingArguments

from wonton_hf.callbacks import SpikeGuard, add_monitors
from wonton_hf.checkpointing import (
    COMPLETE_MARKER,
    CheckpointCompletionCallback,
    mark_complete,
    newest_complete_checkpoint,
    resume_plan,
)


def _checkpoints(root, complete=(), incomplete=()):
    for step in (*complete, *incomplete):
        (root / f"checkpoint-{step}").mkdir(parents=True)
    for step in complete:
        mark_complete(root / f"checkpoint-{step}", step)


def test_only_marked_checkpoints_are_resume_points(tmp_path):
    _checkpoints(tmp_path, incomplete=(100, 200, 300))
    assert newest_complete_checkpoint(tmp_path) is None
    mark_complete(tmp_path / "checkpoint-100", 100)
    mark_complete(tmp_path / "checkpoint-200", 200)
    # checkpoint-300 was being written when the process died: never a resume point
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-200"
    assert (tmp_path / "checkpoint-200" / COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob("checkpoint-*/.COMPLETE.tmp"))


def test_rollback_points_follow_the_same_rule(tmp_path):
    """SpikeGuard used to accept unmarked checkpoints when none was marked; now no protocol accepts them."""
    _checkpoints(tmp_path, complete=(2, 4), incomplete=(6,))
    (tmp_path / "checkpoint-3-rolled-back").mkdir()
    assert newest_complete_checkpoint(tmp_path, at_or_before=5) == tmp_path / "checkpoint-4"
    assert newest_complete_checkpoint(tmp_path, at_or_before=3) == tmp_path / "checkpoint-2"
    assert newest_complete_checkpoint(tmp_path, at_or_before=1) is None
    unmarked = tmp_path / "unmarked"
    _checkpoints(unmarked, incomplete=(2, 4))
    assert newest_complete_checkpoint(unmarked, at_or_before=5) is None


def test_resume_notice_for_a_kill_while_the_first_checkpoint_was_empty(tmp_path):
    _checkpoints(tmp_path, incomplete=(10,))
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint is None
    assert plan.notice == (
        f"Starting fresh: no complete checkpoint in {tmp_path}; skipped checkpoint-10: incomplete "
        "(no COMPLETE marker: the run stopped while writing it)."
    )


def test_resume_notice_names_the_checkpoint_and_the_skipped_half_written_one(tmp_path):
    _checkpoints(tmp_path, complete=(10, 20), incomplete=(30,))
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint == tmp_path / "checkpoint-20"
    assert plan.notice.startswith(
        f"Resuming from {tmp_path / 'checkpoint-20'} (step 20, the newest complete checkpoint)"
    )
    assert "skipped checkpoint-30: incomplete" in plan.notice


@pytest.mark.parametrize(
    ("resume", "expected"),
    [("never", "Starting fresh (resume: never); 1 checkpoint(s) in"), ("auto", "Starting fresh: no checkpoint in")],
)
def test_resume_notice_fresh(tmp_path, resume, expected):
    if resume == "never":
        _checkpoints(tmp_path, complete=(5,))
    assert resume_plan(tmp_path, resume).notice.startswith(expected)


def test_add_monitors_with_a_spike_guard_marks_checkpoints_complete(tmp_path):
    import torch

    model = torch.nn.Linear(2, 2)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    add_monitors(trainer, SpikeGuard())
    trainer.add_callback(CheckpointCompletionCallback())
    add_monitors(trainer, SpikeGuard())
    markers = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, CheckpointCompletionCallback)]
    assert len(markers) == 1 and trainer.callback_handler.callbacks[-1] is markers[0]


def test_the_protocol_names_checkpoints_as_the_trainer_does_and_imports_no_torch():
    """`protocol` spells out transformers' prefix so that `plot-run` can order checkpoints without torch."""
    import subprocess
    import sys

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from wonton_hf.checkpointing import CHECKPOINT_PREFIX

    assert CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR
    code = (
        "import sys, wonton_hf.checkpointing.protocol, wonton_hf.callbacks.plot; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- order across digit counts: checkpoint-100 sorts before checkpoint-8 by name, never by step ----

STEPS = (8, 9, 10, 100)


def _weighted_checkpoints(root, complete=STEPS, incomplete=(1000,)):
    """Checkpoints whose single weight is their step (the averaging tests read it back)."""
    import torch
    from safetensors.torch import save_file

    _checkpoints(root, complete, incomplete)
    for step in (*complete, *incomplete):
        save_file({"weight": torch.full((2,), float(step))}, str(root / f"checkpoint-{step}" / "model.safetensors"))


def test_resume_picks_the_highest_step_across_digit_counts(tmp_path):
    _weighted_checkpoints(tmp_path)
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint == tmp_path / "checkpoint-100"
    assert plan.notice == (
        f"Resuming from {tmp_path / 'checkpoint-100'} (step 100, the newest complete checkpoint); skipped "
        "checkpoint-1000: incomplete (no COMPLETE marker: the run stopped while writing it)."
    )


def test_nine_and_ten_both_complete_resume_from_ten(tmp_path):
    _checkpoints(tmp_path, complete=(9, 10))
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint == tmp_path / "checkpoint-10"
    assert "skipped" not in plan.notice and "incomplete" not in plan.notice


@pytest.mark.parametrize(("at_or_before", "expected"), [(None, 100), (999, 100), (99, 10), (10, 10), (9, 9), (8, 8)])
def test_rollback_points_across_digit_counts(tmp_path, at_or_before, expected):
    _weighted_checkpoints(tmp_path)
    assert newest_complete_checkpoint(tmp_path, at_or_before=at_or_before) == tmp_path / f"checkpoint-{expected}"


@pytest.mark.parametrize(("last", "steps"), [(1, [100]), (2, [10, 100]), (4, [8, 9, 10, 100])])
def test_averaging_takes_the_newest_complete_checkpoints_by_step(tmp_path, last, steps):
    import torch
    from safetensors.torch import load_file

    from wonton_hf.training import average_checkpoints

    _weighted_checkpoints(tmp_path / "run")
    report = average_checkpoints(tmp_path / "run", last, tmp_path / "averaged")
    assert report.steps == steps
    averaged = load_file(str(tmp_path / "averaged" / "model.safetensors"))["weight"]
    torch.testing.assert_close(averaged, torch.full((2,), sum(steps) / len(steps)))


# ---- rotation happens after the marker, over complete checkpoints only ----


def test_pruning_keeps_the_newest_complete_checkpoints_and_leaves_incomplete_ones(tmp_path):
    from wonton_hf.checkpointing import list_checkpoints, prune_complete_checkpoints

    _checkpoints(tmp_path, complete=(8, 9, 10, 100), incomplete=(1000,))
    deleted = prune_complete_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["checkpoint-8", "checkpoint-9"]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10, 100, 1000]
    with pytest.raises(ValueError, match="at least 1"):
        prune_complete_checkpoints(tmp_path, keep=0)


def test_a_save_never_leaves_the_run_without_a_complete_checkpoint(tmp_path):
    """With a limit of 1, the Trainer's own rotation deletes checkpoint-(N-1) inside the save of N, before N is
    marked: a kill there leaves no resume point. Here, at every later save, the previous complete checkpoint is
    still on disk while the new one is being written, and only the newest `keep` remain at the end."""
    import torch
    from transformers import TrainerCallback

    from wonton_hf.checkpointing import ensure_completion_marking, newest_complete_checkpoint

    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x, labels):
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    seen = []

    class WhileSaving(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            seen.append((state.global_step, newest_complete_checkpoint(args.output_dir)))

    data = [{"x": torch.randn(2), "labels": torch.randn(())} for _ in range(16)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, save_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True
    )
    trainer = Trainer(model=Regression(), args=args, train_dataset=data)
    trainer.add_callback(WhileSaving())
    ensure_completion_marking(trainer, keep=1)
    trainer.train()
    assert [(step, ckpt.name if ckpt else None) for step, ckpt in seen] == [
        (1, None),
        (2, "checkpoint-1"),
        (3, "checkpoint-2"),
        (4, "checkpoint-3"),
    ]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (tmp_path / "checkpoint-4" / COMPLETE_MARKER).is_file()
