"""examples/experiments/stability_lr_sweep.py: the --quick mode end to end, and the analysis' definitions."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from .conftest import DEMO_DATA


@pytest.fixture(scope="module")
def modules(experiments_on_path):
    return importlib.import_module("stability_lr_sweep"), importlib.import_module("stability_analysis")


def test_quick_mode_trains_every_arm_and_writes_results_and_figures(modules, tmp_path):
    sweep, _ = modules
    data = sweep.main(["--quick", "--corpus", str(DEMO_DATA), "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    base = {name: r for name, r in saved["runs"].items() if r["spec"]["guard"] is None}
    assert sorted(base) == sorted(f"{arm}_lr{lr:g}_s0" for arm in ("no_qkln", "qkln_maxz") for lr in (1e-3, 1.0))
    guarded = [r for r in saved["runs"].values() if r["spec"]["guard"] is not None]
    assert {r["spec"]["guard"] for r in guarded} == set(sweep.GUARD_VARIANTS)
    assert all(r["spec"]["lr"] == 1.0 for r in guarded), "SpikeGuard reruns take the highest LR"
    for run in base.values():
        assert run["error"] is None
        assert math.isfinite(run["initial_heldout_loss"])
        overrides = run["config"]["model"]["overrides"]
        assert overrides["qk_layernorm"] == (run["spec"]["arm"] == "qkln_maxz")
        assert [s for s, _ in run["series"]["loss"]] == list(range(1, 7)), "every step's loss is kept"
        for key in ("stability/max_attn_logit/max", "stability/output_logit_mean", "stability/output_norm/spectral"):
            assert [s for s, _ in run["series"][key]] == [2, 4, 6], key
    # the no-QK-LN model at LR 1 sees its attention logits grow far past the same model's at LR 1e-3
    peak = lambda name: max(v for _, v in base[name]["series"]["stability/max_attn_logit/max"])  # noqa: E731
    assert peak("no_qkln_lr1_s0") > 2 * peak("no_qkln_lr0.001_s0")
    assert set(data["analysis"]["lr_sensitivity"]) == {"no_qkln", "qkln_maxz"}
    assert set(data["analysis"]["early_warning"]) == set(modules[1].METRICS)
    for figure in (
        "final_loss_vs_lr.png",
        "monitors_high_lr.png",
        "monitors_vs_lr.png",
        "lr_sensitivity.png",
        "spike_guard.png",
    ):
        assert (tmp_path / figure).stat().st_size > 1000, figure
    again = sweep.main(["--quick", "--corpus", str(DEMO_DATA), "--output", str(tmp_path), "--analyse-only"])
    assert again["runs"].keys() == saved["runs"].keys()


def _run(
    name: str,
    arm: str,
    lr: float,
    losses: list[float | None],
    heldout: float | None,
    seed: int = 0,
    metric: list[float] | None = None,
) -> dict:
    series = {"loss": [[i + 1, v] for i, v in enumerate(losses)]}
    if metric is not None:
        series["stability/max_attn_logit/max"] = [[i + 1, v] for i, v in enumerate(metric)]
    return {
        "name": name,
        "spec": {"arm": arm, "lr": lr, "seed": seed, "guard": None},
        "series": series,
        "initial_heldout_loss": 8.0,
        "final_heldout_loss": heldout,
        "error": None,
    }


def test_divergence_and_lr_sensitivity_follow_the_stated_definitions(modules):
    _, analysis = modules
    stable = _run("a", "x", 1e-3, [8.0, 6.0, 5.0, 4.0], 4.5)
    best = _run("b", "x", 1e-2, [8.0, 5.0, 4.0, 3.0], 3.5)
    nan = _run("c", "x", 1e-1, [8.0, 5.0, None, None], None)
    back_up = _run("d", "x", 1.0, [8.0, 6.0, 7.5, 8.05, 8.5], 9.0)  # ends above the step-1 loss
    spike = _run("e", "x", 3e-2, [8.0, 8.5, 6.0, 5.0], 5.5)  # back above its start, then recovered
    assert analysis.divergence(stable) == {"diverged": False, "step": None, "event_step": None}
    assert analysis.divergence(nan) == {"diverged": True, "step": 3, "event_step": 3}
    assert analysis.divergence(back_up) == {"diverged": True, "step": 5, "event_step": 5}  # 8.05: within the margin
    assert analysis.divergence(spike) == {"diverged": False, "step": None, "event_step": 2}
    assert analysis.capped_loss(spike) == 5.5
    assert analysis.capped_loss(back_up) == 8.0  # diverged runs count as the initial loss
    sensitivity = analysis.lr_sensitivity([stable, best, nan, back_up])["x"]
    assert sensitivity["mean"] == pytest.approx(((4.5 + 3.5 + 8.0 + 8.0) / 4) - 3.5)


def test_early_warning_uses_thresholds_from_the_other_runs_without_event(modules):
    _, analysis = modules
    runs = [
        _run("s1", "x", 1e-3, [8, 6, 5, 4, 4, 4], 4.0, metric=[1, 2, 3, 3, 3, 3]),
        _run("s2", "x", 1e-2, [8, 6, 5, 4, 4, 4], 4.0, metric=[1, 2, 4, 4, 4, 4]),
        _run("s3", "x", 3e-2, [8, 6, 5, 4, 4, 4], 4.0, metric=[1, 2, 9, 4, 4, 4]),  # above s1/s2: a false alarm
        _run("d1", "x", 1.0, [8, 6, 5, 7, 9, 9], None, metric=[1, 10, 20, 30, 40, 50]),
        _run("p1", "x", 0.3, [8, 9, 5, 4, 4, 4], 4.0, metric=[1, 2, 3, 30, 4, 4]),  # spike at 2, metric only at 4
    ]
    warning = analysis.early_warning(runs)["max_attn_logit"]
    rows = {row["run"]: row for row in warning["event_runs"]}
    assert rows["d1"] == {
        "run": "d1",
        "diverged": True,
        "event_step": 5,
        "cross_step": 2,
        "lead_steps": 3,
        "threshold": 9,
    }
    assert rows["p1"]["lead_steps"] == -2
    assert [a["run"] for a in warning["false_alarms"]] == ["s3"]
    assert (warning["warned"], warning["late"], warning["missed"]) == (1, 1, 0)


def test_per_arm_thresholds_ignore_other_arms(modules):
    _, analysis = modules
    runs = [
        _run("a1", "a", 1e-3, [8, 6, 5, 4], 4.0, metric=[1, 2, 3, 3]),
        _run("a2", "a", 1e-2, [8, 6, 5, 4], 4.0, metric=[1, 2, 4, 4]),
        _run("b1", "b", 1e-3, [8, 6, 5, 4], 4.0, metric=[1, 50, 90, 90]),  # a large-valued arm
        _run("a3", "a", 1.0, [8, 6, 7, 9], None, metric=[1, 10, 20, 30]),
    ]
    assert analysis.early_warning(runs)["max_attn_logit"]["missed"] == 1  # b1's level hides a3's growth
    by_arm = analysis.early_warning(runs, by_arm=True)["max_attn_logit"]
    (row,) = [r for r in by_arm["event_runs"] if r["run"] == "a3"]
    assert (row["threshold"], row["cross_step"], row["lead_steps"]) == (4, 2, 2)
