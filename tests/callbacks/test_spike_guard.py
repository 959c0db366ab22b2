"""SpikeGuard in real Trainer runs: injected NaN and spikes are skipped untouched, repeated trouble rolls back."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import TrainerCallback

from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, add_monitors

from .helpers import tiny_model, trainer, training_args


class FaultInjector:
    """Corrupts the model's loss on chosen training forwards (counted in batches, i.e. data position)."""

    def __init__(self, model, faults: dict[int, float]) -> None:
        self.faults, self.calls = faults, 0
        model.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        if not module.training:
            return
        factor = self.faults.get(self.calls)
        self.calls += 1
        if factor is not None:
            output.loss = output.loss * factor  # NaN propagates into every gradient, a factor makes a spike
        return output


class UpdateRecorder(TrainerCallback):
    """Snapshots weights and optimizer state right before and after each `optimizer.step()`."""

    def __init__(self) -> None:
        self.changed: dict[int, bool] = {}
        self.optimizer_changed: dict[int, bool] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._optimizer = copy.deepcopy(optimizer.state_dict())
        self._step = state.global_step + 1

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        weights = model.state_dict()
        self.changed[self._step] = any(not torch.equal(weights[k], v) for k, v in self._weights.items())
        self.optimizer_changed[self._step] = not _same_state(optimizer.state_dict(), self._optimizer)
        self.after[self._step] = {k: v.detach().clone() for k, v in weights.items()}


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _events(history, name):
    return [entry["step"] for entry in history if entry.get(f"spike/{name}")]


def test_nan_step_is_skipped_and_leaves_weights_and_optimizer_untouched(tmp_path):
    model = tiny_model()
    FaultInjector(model, {3: float("nan")})
    run = trainer(model, training_args(tmp_path))
    recorder = UpdateRecorder()
    add_monitors(run, SpikeGuard(min_window=2))
    run.add_callback(recorder)
    run.train()
    assert recorder.changed == {1: True, 2: True, 3: True, 4: False, 5: True, 6: True}
    assert recorder.optimizer_changed[4] is False and recorder.optimizer_changed[5] is True
    assert _events(run.state.log_history, "skip") == [4]
    assert all(math.isfinite(p.detach().sum().item()) for p in model.parameters())


def test_loss_spike_is_skipped_by_the_window_test(tmp_path):
    model = tiny_model()
    FaultInjector(model, {7: 3.0})  # the 8th step's loss is 3x the window's ~5.55 +- 0.01
    run = trainer(model, training_args(tmp_path, max_steps=9))
    recorder = UpdateRecorder()
    add_monitors(run, SpikeGuard(min_window=3, threshold_std=6.0))
    run.add_callback(recorder)
    run.train()
    assert _events(run.state.log_history, "skip") == [8]
    assert recorder.changed[8] is False and recorder.changed[9] is True


def test_metric_threshold_from_an_earlier_monitor_skips(tmp_path):
    model = tiny_model()
    run = trainer(model, training_args(tmp_path, max_steps=3))
    recorder = UpdateRecorder()
    # Any real attention logit is above 0: every measured step (2) is bad; 1 and 3 are not measured.
    add_monitors(
        run,
        StabilityMonitor(every_n_steps=2),
        SpikeGuard(metric_thresholds={"stability/max_attn_logit/max": 0.0}, rollback=False),
    )
    run.add_callback(recorder)
    run.train()
    assert _events(run.state.log_history, "skip") == [2]
    assert recorder.changed == {1: True, 2: False, 3: True}


def test_monitor_thresholds_roll_back_although_the_monitor_measures_every_other_step(tmp_path):
    """Steps 2, 4, 6 are measured and bad; 3 and 5 are not measured: they must not end the streak."""
    model = tiny_model()
    run = trainer(model, training_args(tmp_path, max_steps=7, save_strategy="steps", save_steps=1))
    guard = SpikeGuard(metric_thresholds={"stability/max_attn_logit/max": 0.0}, max_bad_steps=3)
    add_monitors(run, StabilityMonitor(every_n_steps=2), guard)
    run.train()
    history = run.state.log_history
    assert _events(history, "skip") == [2, 4, 6]
    assert _events(history, "rollback") == [6]
    rollback_entry = next(e for e in history if e.get("spike/rollback"))
    assert rollback_entry["spike/rollback_to_step"] == 1.0  # the last step before the first bad measurement


def test_repeated_trouble_rolls_back_to_the_last_good_checkpoint_and_finishes(tmp_path):
    model = tiny_model()
    FaultInjector(model, {5: float("nan"), 6: float("nan"), 7: float("nan")})  # steps 6, 7, 8 are bad
    run = trainer(model, training_args(tmp_path, max_steps=10, save_strategy="steps", save_steps=2))
    recorder = UpdateRecorder()
    guard = SpikeGuard(min_window=2, max_bad_steps=3)
    add_monitors(run, guard)
    run.add_callback(recorder)
    run.train()

    history = run.state.log_history
    assert _events(history, "skip") == [6, 7, 8]
    assert _events(history, "rollback") == [8]
    assert run.state.global_step == 10  # finished
    # Right after the rollback step the weights are checkpoint-4's (the last good step is 5, no checkpoint-5).
    from safetensors.torch import load_file

    rollback_entry = next(e for e in history if e.get("spike/rollback"))
    assert rollback_entry["spike/rollback_to_step"] == 4.0
    assert (tmp_path / "checkpoint-6-rolled-back").is_dir(), "the abandoned trajectory's checkpoint is retired"
    checkpoint = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    for key, value in checkpoint.items():
        torch.testing.assert_close(recorder.after[8][key], value, rtol=0, atol=0)
    assert guard.state_dict()["rollbacks"] == 1 and guard.state_dict()["skipped"] == 3
    # The counter and schedule went on (default): the logged loss stays a per-step mean, learning rates descend.
    losses = [e["loss"] for e in history if "loss" in e and e["step"] > 8]
    assert losses and all(5.0 < x < 6.0 for x in losses)
    rates = [e["learning_rate"] for e in history if "learning_rate" in e]
    assert rates == sorted(rates, reverse=True)


def test_rollback_with_rewind_schedule_takes_counter_and_scheduler_back(tmp_path):
    model = tiny_model()
    FaultInjector(model, {5: float("nan"), 6: float("nan")})  # steps 6 and 7 are bad
    run = trainer(model, training_args(tmp_path, max_steps=9, save_strategy="steps", save_steps=4))
    add_monitors(run, SpikeGuard(min_window=2, max_bad_steps=2, rewind_schedule=True))
    steps = StepCounter()
    run.add_callback(steps)
    run.train()
    assert _events(run.state.log_history, "rollback") == [7]
    assert run.state.global_step == 9
    # Back to 4 at step 7 (that skipped step then counts as 5): 7 + 4 more optimizer steps reach 9.
    assert steps.count == 11
    assert run.lr_scheduler.last_epoch == 9 and not (tmp_path / "checkpoint-8-rolled-back").exists()


class StepCounter(TrainerCallback):
    count = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1


def test_state_round_trip_and_trainer_state_export(tmp_path):
    guard = SpikeGuard(window=5, min_window=2, metric_thresholds={"stability/max_attn_logit/max": 50.0})
    guard.load_state_dict(
        {
            "losses": [5.0, 4.9],
            "bad_in_a_row": 1,
            "last_good_step": 7,
            "skipped": 2,
            "rollbacks": 1,
            "events": [{"step": 8, "event": "skip"}],
        }
    )
    fresh = SpikeGuard()
    fresh.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert fresh.state_dict() == guard.state_dict()
    rebuilt = SpikeGuard.from_state(json.loads(json.dumps(guard.state())))  # what the Trainer stores and restores
    assert rebuilt.state_dict() == guard.state_dict() and rebuilt.window == 5
    assert rebuilt.metric_thresholds == {"stability/max_attn_logit/max": 50.0}
    assert SpikeGuard().state_dict()["losses"] == []  # missing keys fall back to defaults
    partial = SpikeGuard()
    partial.load_state_dict({"skipped": 4})
    assert partial.state_dict()["skipped"] == 4 and partial.state_dict()["losses"] == []


def test_resumed_run_restores_the_guard_window(tmp_path):
    model = tiny_model()
    run = trainer(model, training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=4))
    add_monitors(run, SpikeGuard(min_window=2))
    run.train()
    model = tiny_model()
    resumed = trainer(model, training_args(tmp_path, max_steps=6))
    guard = SpikeGuard(min_window=2)
    add_monitors(resumed, guard)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert len(guard.state_dict()["losses"]) == 6


def test_bad_options_fail_early():
    with pytest.raises(ValueError, match="min_window"):
        SpikeGuard(window=5, min_window=10)
    with pytest.raises(ValueError, match="threshold_std"):
        SpikeGuard(threshold_std=0)
    with pytest.raises(ValueError, match="max_bad_steps"):
        SpikeGuard(max_bad_steps=0)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_guard_sees_the_loss_the_trainer_logs(tmp_path, accumulation):
    """Micro-batch losses combine into the step's loss as the Trainer's (token-normalised under accumulation)."""
    run = trainer(
        tiny_model(),
        training_args(
            tmp_path,
            max_steps=4,
            gradient_accumulation_steps=accumulation,
            per_device_train_batch_size=1 if accumulation == 2 else 2,
        ),
    )
    guard = SpikeGuard(min_window=2)
    add_monitors(run, guard)
    run.train()
    logged = [e["loss"] for e in run.state.log_history if "loss" in e]
    assert guard.state_dict()["losses"] == pytest.approx(logged, rel=1e-5)


def test_too_many_rollbacks_stop_the_run_and_say_so(tmp_path):
    model = tiny_model()
    FaultInjector(model, {1: float("nan"), 2: float("nan")})
    run = trainer(model, training_args(tmp_path, max_steps=6))
    guard = SpikeGuard(min_window=2, max_bad_steps=2, max_rollbacks=0)
    add_monitors(run, guard)
    run.train()
    assert _events(run.state.log_history, "gave_up") == [3]
    assert run.state.global_step == 3 and guard.needs_resume
    assert not SpikeGuard().needs_resume
