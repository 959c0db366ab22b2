"""SpikeGuard's judgement without a Trainer: the mean + k*std test, flat windows, and rollback targets.

The guard is driven through its public hooks, as the Trainer would: a one-parameter model whose forward
returns the loss it is given (the guard reads losses with a forward hook), then `on_pre_optimizer_step`.
A step the guard skips has its gradients set to None; an accepted one keeps them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import TrainerControl, TrainerState

from wonton_hf.callbacks import SpikeGuard
from wonton_hf.checkpointing.protocol import mark_complete


class LossModel(nn.Module):
    """Returns the loss it is given; its single weight tells which checkpoint was loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, loss: float):
        return SimpleNamespace(loss=torch.tensor(float(loss)))


class Driver:
    """Feeds one loss per optimizer step to a SpikeGuard through its hooks; records which steps it skipped."""

    def __init__(self, guard: SpikeGuard, output_dir=None, start_step: int = 0) -> None:
        self.guard, self.model = guard, LossModel().train()
        self.args = SimpleNamespace(average_tokens_across_devices=False, deepspeed=None, output_dir=str(output_dir))
        self.state, self.control = TrainerState(), TrainerControl()
        self.state.global_step = start_step
        guard.on_train_begin(self.args, self.state, self.control, model=self.model)

    def step(self, loss: float) -> bool:
        """One optimizer step with this loss; True when the guard skipped it."""
        self.model(loss)
        self.model.weight.grad = torch.ones(1)
        self.guard.on_pre_optimizer_step(self.args, self.state, self.control, model=self.model)
        skipped = self.model.weight.grad is None
        self.state.global_step += 1
        return skipped

    def run(self, losses) -> list[bool]:
        return [self.step(loss) for loss in losses]


def _judged(window: list[float], loss: float, **options) -> bool:
    """Whether `loss` is skipped after the good steps `window` (each asserted accepted)."""
    guard = SpikeGuard(window=len(window), min_window=len(window), rollback=False, **options)
    driver = Driver(guard)
    assert driver.run(window) == [False] * len(window)
    return driver.step(loss)


def _alternating(low: float, high: float, n: int = 20) -> list[float]:
    return [low if i % 2 == 0 else high for i in range(n)]


# mean 5.5, std 0.01: with k = 6 the bound is 5.56


@pytest.mark.parametrize(
    ("loss", "skipped"),
    [
        (8.3, True),  # a 1.5x spike: far above 5.5 + 6 * 0.01 (though below 5.5 + 6)
        (5.6, True),  # just above the bound
        (5.55, False),  # just below it
        (5.5, False),
        (1.0, False),  # a drop is never a spike
    ],
)
def test_the_bound_is_mean_plus_k_standard_deviations(loss, skipped):
    assert _judged(_alternating(5.49, 5.51), loss, threshold_std=6.0) is skipped


def test_the_spread_scales_the_bound_for_low_losses():
    """Losses of 2-3 (mean 2.5, std 0.5): the bound is 2.5 + 2 * 0.5 = 3.5 at k = 2, and 5.5 at k = 6."""
    window = _alternating(2.0, 3.0)
    assert _judged(window, 3.6, threshold_std=2.0) is True
    assert _judged(window, 3.4, threshold_std=2.0) is False
    assert _judged(window, 6.0, threshold_std=6.0) is True
    assert _judged(window, 5.4, threshold_std=6.0) is False


def test_a_flat_window_does_not_make_an_equal_loss_a_spike():
    """Zero variance: a loss equal to the mean is not above the bound, so a plateau is never a spike."""
    assert _judged([4.0] * 20, 4.0) is False


def test_a_plateau_of_equal_losses_never_skips_nor_rolls_back(tmp_path):
    guard = SpikeGuard(window=10, min_window=5, max_bad_steps=2)
    driver = Driver(guard, tmp_path)
    assert driver.run([3.25] * 40) == [False] * 40
    state = guard.state_dict()
    assert state["skipped"] == 0 and state["rollbacks"] == 0 and state["events"] == []
    assert state["last_good_step"] == 40


def test_the_window_holds_the_last_good_losses():
    """After a fall from 10 to ~2, the reference is the recent ~2 (a 5.0 is a spike), not the first 10s."""
    guard = SpikeGuard(window=5, min_window=5, rollback=False)
    driver = Driver(guard)
    recent = [2.0, 2.125, 2.0, 2.125, 2.0]  # exact in float32, as the captured losses are
    assert driver.run([10.0] * 5 + recent) == [False] * 10
    assert guard_losses(guard) == recent
    assert driver.step(5.0) is True


def test_non_finite_losses_are_skipped_before_the_window_fills():
    driver = Driver(SpikeGuard(min_window=5, rollback=False))
    assert driver.run([2.0, float("nan"), 2.0, float("inf"), 2.0]) == [False, True, False, True, False]
    assert guard_losses(driver.guard) == [2.0, 2.0, 2.0]  # bad steps never enter the window


def guard_losses(guard: SpikeGuard) -> list[float]:
    return guard.state_dict()["losses"]


# ---- rollback targets across digit counts ----


def _checkpoint(run_dir, step: int, complete: bool = True) -> None:
    path = run_dir / f"checkpoint-{step}"
    path.mkdir()
    save_file({"weight": torch.full((1,), float(step))}, str(path / "model.safetensors"))
    if complete:
        mark_complete(path, step)


def test_rollback_picks_the_newest_complete_checkpoint_by_step_not_by_name(tmp_path):
    """checkpoint-100 sorts before checkpoint-8 and -9 by name; the rollback must still land on 100."""
    for step in (8, 9, 10, 100):
        _checkpoint(tmp_path, step)
    _checkpoint(tmp_path, 103, complete=False)  # being written when the trouble started
    _checkpoint(tmp_path, 105)  # saved during the bad streak: the abandoned trajectory
    guard = SpikeGuard(window=5, min_window=2, max_bad_steps=3)
    driver = Driver(guard, tmp_path, start_step=100)
    assert driver.run([2.0, 2.1, 2.0]) == [False] * 3  # steps 101-103 are good
    assert driver.run([float("nan")] * 3) == [True] * 3  # 104-106 bad: roll back at 106
    rollback = [e for e in guard.state_dict()["events"] if e["event"] == "rollback"]
    assert [(e["step"], e["to_step"]) for e in rollback] == [(106, 100)]
    assert driver.model.weight.item() == 100.0  # checkpoint-100's weights, not checkpoint-9's
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint-10",
        "checkpoint-100",
        "checkpoint-103-rolled-back",
        "checkpoint-105-rolled-back",
        "checkpoint-8",
        "checkpoint-9",
    ]
