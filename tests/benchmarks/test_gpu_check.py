"""`benchmarks/gpu_check.py` on a machine without a GPU: its plan, skips, arithmetic, table and the no-CUDA exit.

The GPU rows themselves run only on a CUDA machine; everything that decides what they print is checked here.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from wonton_hf.callbacks.throughput import ThroughputMonitor, flops_per_token
from wonton_hf.models.wonton import WontonConfig, WontonForCausalLM

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
spec.loader.exec_module(gpu_check)


def environment(**fields):
    base = dict(gpus=2, name="NVIDIA H100 80GB HBM3", capability=(9, 0), flash=True, torchao=True)
    return gpu_check.Environment(**{**base, "launchers": {"ZeRO-2": True, "FSDP2": True}, **fields})


def rows_of(tasks):
    return {(t.section, t.name): t.skip for t in tasks}


def test_the_full_plan_on_an_h100_with_everything_installed(tmp_path):
    tasks = gpu_check.plan(environment(), tmp_path, quick=False)
    plan = rows_of(tasks)
    assert len(plan) == len(tasks) == 4 + 5 + 2 * 3 + 4  # attention, 1b steps, 2 launchers x 3, 7b micro-batches
    assert all(skip == "" for skip in plan.values()) and all(t.run is not None for t in tasks)
    assert [t.name for t in tasks if t.section == "1b step"] == [
        "flash_attention_2",
        "sdpa",
        "flex_attention",
        "flash_attention_2+compile",
        "flash_attention_2+compile+float8",
    ]
    assert ("launcher", "FSDP2+flash_attention_2+compile+float8") in plan


def test_skips_name_what_is_missing(tmp_path):
    env = environment(flash=False, torchao=False, capability=(8, 0), launchers={"ZeRO-2": True, "FSDP2": False})
    plan = rows_of(gpu_check.plan(env, tmp_path, quick=False))
    assert "pip install 'wonton_hf[flash]'" in plan[("attention", "flash_attention_2")]
    assert plan[("attention", "sdpa")] == "" and plan[("1b step", "sdpa+compile")] == ""  # sdpa is the best left
    assert "compute capability >= 8.9, this GPU has 8.0" in plan[("1b step", "sdpa+compile+float8")]
    assert "compute capability" in plan[("launcher", "ZeRO-2+sdpa+compile+float8")]
    assert plan[("launcher", "FSDP2+sdpa")] == "examples/configs/accelerate/fsdp2.yaml not found"
    assert "torchao not installed" in environment(torchao=False).float8


def test_quick_plan_keeps_the_telling_rows(tmp_path):
    tasks = gpu_check.plan(environment(), tmp_path, quick=True)
    ran = [(t.section, t.name) for t in tasks if t.run is not None]
    assert ("1b step", "flash_attention_2") in ran and ("1b step", "sdpa") not in ran
    assert ("launcher", "ZeRO-2+flash_attention_2") in ran and (
        "launcher",
        "FSDP2+flash_attention_2+compile",
    ) not in ran
    assert len([r for r in ran if r[0] == "7b memory"]) == 4  # estimates for all four, real steps for 1-2


def test_a_failing_row_is_recorded_and_the_check_goes_on():
    def broken():
        raise RuntimeError("CUDA error: device-side assert")

    tasks = [
        gpu_check.Task("attention", "a", broken),
        gpu_check.Task("attention", "b", lambda: gpu_check.Row("attention", "b", detail="fine")),
        gpu_check.Task("attention", "c", None, "flash-attn not installed"),
        gpu_check.Task("attention", "d", lambda: gpu_check.Row("attention", "d")),
    ]
    ticks = iter([0, 0, 1, 1, 2, 2, 100, 100])  # the fourth task would start after the budget
    rows = gpu_check.run_tasks(tasks, budget_s=50, clock=lambda: next(ticks))
    assert [(r.name, r.status) for r in rows] == [("a", "error"), ("b", "ok"), ("c", "skip"), ("d", "skip")]
    assert "RuntimeError: CUDA error: device-side assert (broken)" == rows[0].detail
    assert rows[2].detail == "flash-attn not installed" and "time budget (50 s)" in rows[3].detail
    table = gpu_check.format_table(rows)
    assert len(table.splitlines()) == 2 + 4 and "RuntimeError" in table


def test_table_formats_every_column():
    row = gpu_check.Row("1b step", "sdpa+compile", tokens_per_s=51234.4, mfu=0.4567, peak_gib=31.25, detail="x\ny")
    line = gpu_check.format_table([row]).splitlines()[-1]
    assert line.split() == ["1b", "step", "sdpa+compile", "ok", "51,234", "45.7%", "31.2", "x", "y"]


def test_mfu_uses_the_throughput_monitors_flop_count():
    """One FLOP count for the check and the monitor: the function is the monitor module's own."""
    assert gpu_check.flops_per_token is flops_per_token
    with torch.device("meta"):
        model = WontonForCausalLM(WontonConfig.from_preset("wonton-1b"))
    flops = flops_per_token(model, 2048)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    assert flops == 6 * non_embedding + 12 * 24 * 1536 * 2048
    # 10,000 tokens/s on a 989 TFLOP/s device
    assert gpu_check.model_flops_utilisation(10_000, flops, 989.0) == pytest.approx(10_000 * flops / 989e12)
    assert gpu_check.model_flops_utilisation(10_000, flops, None) is None
    assert ThroughputMonitor.__module__ == "wonton_hf.callbacks.throughput"


def test_memory_estimate_of_the_7b_on_the_meta_device():
    one = gpu_check.memory_estimate("wonton-7b", 1)
    four = gpu_check.memory_estimate("wonton-7b", 4)
    assert one["parameters_billion"] == pytest.approx(7.589364224)  # the paper's table 1, exactly
    assert one["state_gib"] == pytest.approx(16 * 7_589_364_224 / 2**30)
    assert one["activations_gib"] == pytest.approx(34 * 2048 * 4096 * 32 / 2**30)  # ~8.5 GiB per 2,048-token row
    assert four["activations_gib"] == pytest.approx(4 * one["activations_gib"])
    head = (1024 * 139_776 * 6 + 4 * 139_776 * 4096) / 2**30
    assert one["head_gib"] == pytest.approx(head) and four["head_gib"] == pytest.approx(head)
    assert math.isclose(one["total_gib"], one["state_gib"] + one["activations_gib"] + one["head_gib"])


def test_packed_positions_restart_per_document():
    positions = gpu_check.packed_position_ids(((2, 3), (1, 4)))
    assert positions.tolist() == [[0, 1, 0, 1, 2], [0, 0, 1, 2, 3]]
    assert gpu_check.packed_position_ids(gpu_check.DOCUMENTS).shape == (2, 2048)
    assert gpu_check.median_after_warmup([9.0, 8.0, 1.0, 2.0, 3.0]) == 2.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA exit needs a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0(tmp_path, capsys):
    output = tmp_path / "table.json"
    assert gpu_check.main(["--output", str(output)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert json.loads(output.read_text()) == {"cuda": False, "rows": []}


def test_launcher_rows_use_a_valid_run_config(tmp_path, monkeypatch):
    """The overrides a launcher row starts `build_trainer` with pass the run-config checks (for 2 GPUs)."""
    from wonton_hf.training import load_run_config

    overrides = gpu_check.launcher_overrides(tmp_path, "row", gpus=2, batch=4, steps=10, attn="sdpa")
    extra = gpu_check.LAUNCHERS["ZeRO-2"][1] + ["train.compile={}"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = load_run_config(gpu_check.DEMO, overrides + extra)
    assert config.model.preset == "wonton-1b" and config.model.overrides == {"vocab_size": 139_776}
    assert config.gradient_accumulation_steps(2) == 1 and config.train.save_steps > config.train.max_steps
    assert config.train.deepspeed == "examples/configs/deepspeed/zero2.json" and config.train.compile is not None
