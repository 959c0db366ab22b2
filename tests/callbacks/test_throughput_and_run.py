"""ThroughputMonitor's formula and figures, and a real Trainer run with every monitor reporting to TensorBoard."""

from __future__ import annotations

import pytest

from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor, add_monitors, flops_per_token
from wonton_hf.callbacks.throughput import peak_tflops_for

from .helpers import SEQ, tiny_model, trainer, training_args


def test_flops_per_token_is_6n_plus_attention():
    model = tiny_model()
    config = model.config
    n = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    assert flops_per_token(model, 2048) == 6 * n + 12 * config.num_hidden_layers * config.hidden_size * 2048


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A800 80GB PCIe", 312.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("Some Future GPU", None),
    ],
)
def test_peak_table(name, peak):
    assert peak_tflops_for(name) == peak


def test_options_are_checked():
    with pytest.raises(ValueError, match="peak_tflops"):
        ThroughputMonitor(peak_tflops=0)


def test_real_run_with_every_monitor_reports_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tiny_model()
    args = training_args(tmp_path, max_steps=6, logging_steps=2, report_to=["tensorboard"])
    run = trainer(model, args)
    add_monitors(run, StabilityMonitor(every_n_steps=3), ThroughputMonitor(peak_tflops=1.0), SpikeGuard(min_window=2))
    run.train()

    history = run.state.log_history
    measured = [e["step"] for e in history if "stability/max_attn_logit/max" in e]
    assert measured == [3, 6]  # every 3rd step, logged on its own step although logging_steps is 2
    throughput = [e for e in history if "throughput/device/tokens_per_s" in e]
    assert [e["step"] for e in throughput] == [2, 3, 4, 6]  # with every training log event
    tokens_per_step = 2 * SEQ  # batch 2 rows, no padding
    for entry in throughput:
        assert entry["throughput/device/tokens_per_s"] * entry["throughput/step_time_s"] == pytest.approx(
            tokens_per_step
        )
        expected_tflops = entry["throughput/device/tokens_per_s"] * flops_per_token(model, SEQ) / 1e12
        assert entry["throughput/device/model_tflops"] == pytest.approx(expected_tflops)
        assert entry["throughput/device/mfu"] == pytest.approx(expected_tflops / 1.0)
    z_losses = [e for e in history if "stability/z_loss" in e]
    assert [e["step"] for e in z_losses] == measured  # with the other stability metrics, on measured steps
    for entry in z_losses:
        assert entry["stability/z_loss"] > 0 and entry["stability/max_z_loss"] > 0

    event_file = next(tmp_path.glob("runs/*/events.out.tfevents.*"))  # TensorBoardCallback's default directory
    events = EventAccumulator(str(event_file.parent)).Reload()
    tags = set(events.Tags()["scalars"])
    for key in (
        "stability/max_attn_logit/layer_1",
        "stability/mlp_in_grad_rms/mean",
        "stability/max_z_loss",
        "throughput/device/mfu",
        "throughput/device/tokens_per_s",
    ):
        assert f"train/{key}" in tags, key


def test_cpu_without_peak_omits_mfu(tmp_path):
    run = trainer(tiny_model(), training_args(tmp_path, max_steps=2))
    add_monitors(run, ThroughputMonitor())
    run.train()
    logged = [e for e in run.state.log_history if "throughput/step_time_s" in e]
    assert logged and not any("throughput/device/mfu" in e for e in logged)
