"""examples/experiments/stability_lr_sweep.py: the --quick mode end to end (the full sweep's path, worker processes
included), and the analysis' definitions on hand-made series."""

from __future__ import annotations

import importlib
import json
import math
import os

import pytest

from .conftest import DEMO_DATA


@pytest.fixture(scope="module")
def modules(experiments_on_path):
    return importlib.import_module("stability_lr_sweep"), importlib.import_module("stability_analysis")


def test_quick_mode_trains_every_run_in_worker_processes_with_the_held_out_evaluation(modules, tmp_path):
    sweep, analysis = modules
    sweep.main(["--quick", "--corpus", str(DEMO_DATA), "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    expected = {
        f"d64_{arm}_lr{lr:g}_s{seed}" for arm in ("no_qkln", "qkln_maxz") for lr in (1e-3, 3e-1) for seed in (0, 1)
    }
    assert set(saved["runs"]) == expected
    assert {run["pid"] for run in saved["runs"].values()}.isdisjoint({os.getpid()}), "runs train in worker processes"
    invocation = saved["invocations"][0]
    assert len(invocation["commit"]) == 40 and isinstance(invocation["dirty"], bool)
    for run in saved["runs"].values():
        assert run["error"] is None
        assert [s for s, _ in run["series"]["loss"]] == list(range(1, 13)), "every step's loss is kept"
        assert [s for s, _ in run["series"]["eval_bpb"]] == [0, 4, 8, 12], "evaluated before step 1, then every 4"
        assert math.isfinite(analysis.final_bpb(run))
        for key in analysis.METRICS.values():
            assert [s for s, _ in run["series"][key]] == list(range(1, 13)), key
    config = saved["example_config"]
    assert config["evaluation"]["held_out_share"] is None
    assert all(s["name"].startswith("heldout_") for s in config["evaluation"]["extra_sources"])


def _run(
    name: str,
    losses: list[float | None],
    bpb: list[float | None],
    *,
    arm: str = "x",
    lr: float = 1e-3,
    seed: int = 0,
    width: str = "d64",
    metric: list[float] | None = None,
) -> dict:
    """A hand-made result: training loss at steps 1.., held-out bpb (unweighted mean over two sources) at steps 0,
    10, 20..., a monitor metric."""
    series = {
        "loss": [[i + 1, v] for i, v in enumerate(losses)],
        # two sources, 0.5 bpb apart: their unweighted mean is `bpb` (the pooled `eval_bpb` is not what is analysed)
        "eval_bpb": [[10 * i, None if v is None else v + 0.3] for i, v in enumerate(bpb)],
        "eval_heldout_aa_bpb": [[10 * i, None if v is None else v - 0.25] for i, v in enumerate(bpb)],
        "eval_heldout_bb_bpb": [[10 * i, None if v is None else v + 0.25] for i, v in enumerate(bpb)],
    }
    if metric is not None:
        series["stability/max_attn_logit/max"] = [[i + 1, v] for i, v in enumerate(metric)]
    return {"name": name, "spec": {"arm": arm, "width": width, "lr": lr, "seed": seed}, "series": series, "error": None}


def test_divergence_events_and_lr_sensitivity_follow_the_stated_definitions(modules):
    _, analysis = modules
    stable = _run("a", [8.0, 6.0, 5.0, 4.0], [8.0, 4.5], lr=1e-3)
    best = _run("b", [8.0, 5.0, 4.0, 3.0], [8.0, 3.5], lr=1e-2)
    nan = _run("c", [8.0, 5.0, None, None], [8.0, None], lr=1e-1)
    worse = _run("d", [8.0, 6.0, 7.5, 8.15, 8.5], [8.0, 8.2], lr=1.0)  # ends above l0: diverged
    spike = _run("e", [8.0, 8.3, 6.0, 5.0], [8.0, 5.5], lr=3e-2)  # 0.3 nats above step 1, then recovered
    assert (analysis.initial_bpb(stable), analysis.final_bpb(stable)) == (8.0, 4.5)  # not the pooled eval_bpb
    assert analysis.divergence(stable) == {"diverged": False, "event_step": None}
    assert analysis.divergence(nan) == {"diverged": True, "event_step": 3}
    assert analysis.divergence(worse) == {"diverged": True, "event_step": 5}  # 8.15: within the 0.2 margin
    assert analysis.divergence(spike) == {"diverged": False, "event_step": 2}
    assert analysis.capped(spike) == 5.5 and analysis.capped(worse) == 8.0 and analysis.capped(nan) == 8.0
    sensitivity = analysis.lr_sensitivity([stable, best, nan, worse])["d64/x"]
    assert sensitivity["mean"] == pytest.approx((4.5 + 3.5 + 8.0 + 8.0) / 4 - 3.5)
    assert sensitivity["n"] == 1 and sensitivity["se"] is None


def test_paired_differences_give_the_t_interval_by_seed(modules):
    _, analysis = modules
    d = analysis.paired({0: 1.0, 1: 2.0, 2: 3.0, 3: 9.0}, {0: 0.5, 1: 1.0, 2: 2.0})  # seed 3 has no pair
    assert d["n"] == 3 and d["per_seed"] == {0: 0.5, 1: 1.0, 2: 1.0}
    assert d["mean"] == pytest.approx(2.5 / 3)
    se = (sum((x - 2.5 / 3) ** 2 for x in (0.5, 1.0, 1.0)) / 2) ** 0.5 / 3**0.5
    assert d["se"] == pytest.approx(se)
    assert d["hi"] - d["mean"] == pytest.approx(4.302653 * se, rel=1e-5)  # t(0.975, df=2)


def _synthetic(events: bool, informative: bool, runs: int = 40, seeds: int = 4) -> list[dict]:
    """Runs with a noisy monitor metric; with `events`, a random half spike at step 12 (loss 1 nat above step 1);
    with `informative`, the metric of those runs climbs from step 4 on."""
    import random

    rng = random.Random(0)
    out = []
    for i in range(runs):
        event = events and rng.random() < 0.5
        losses = [8.0 - 0.05 * s for s in range(30)]
        if event:
            losses[11] = 9.0
        metric = [rng.gauss(10, 1) + (5.0 * (s >= 3) if informative and event else 0.0) for s in range(30)]
        out.append(_run(f"r{i}", losses, [8.0, 6.0], lr=1e-3 * (1 + i % 3), seed=i % seeds, metric=metric))
    return out


def test_no_events_give_no_thresholds_and_no_alarms(modules):
    _, analysis = modules
    runs = _synthetic(events=False, informative=False)
    alarms = analysis.leave_one_seed_out(runs)["max_attn_logit"]
    assert (alarms["false_alarms"], alarms["folds_with_threshold"], alarms["event_runs"]) == (0, 0, 0)
    assert alarms["event_free_runs"] == 40
    assert all(c["auroc"] is None for c in analysis.auroc_table(runs, by_lr=False)["max_attn_logit"].values())


def test_an_uninformative_metric_scores_auroc_near_one_half_and_an_informative_one_warns(modules):
    _, analysis = modules
    noise = analysis.auroc_table(_synthetic(events=True, informative=False, runs=200), by_lr=False)
    assert abs(noise["max_attn_logit"][5]["auroc"] - 0.5) < 0.1
    assert noise["max_attn_logit"][20]["pairs"] == 0, "after the event step no run is a positive"
    signal_runs = _synthetic(events=True, informative=True)
    signal = analysis.auroc_table(signal_runs, by_lr=False)["max_attn_logit"]
    assert signal[2]["auroc"] < 0.8 < signal[5]["auroc"], "the metric separates the runs only once it climbs"
    alarms = analysis.leave_one_seed_out(signal_runs)["max_attn_logit"]
    assert alarms["warned"] > 0.8 * alarms["event_runs"]
    assert alarms["median_lead"] >= 5  # climbs at step 4, event at step 12
    assert alarms["false_alarms"] < 0.2 * alarms["event_free_runs"]


COMMITTED = DEMO_DATA.parents[2] / "docs" / "experiments" / "stability_lr_sweep"


def test_analyse_only_regenerates_the_committed_summary_byte_for_byte(modules, tmp_path):
    sweep, _ = modules
    sweep.main(["--analyse-only", "--results", str(COMMITTED / "results.json"), "--output", str(tmp_path)])
    assert (tmp_path / "summary.md").read_bytes() == (COMMITTED / "summary.md").read_bytes()
    assert (COMMITTED / "results.json").stat().st_size < 1_000_000
    data = json.loads((COMMITTED / "results.json").read_text())
    assert all(not inv["dirty"] for inv in data["invocations"]), "the runs start from a committed tree"


def test_every_decimal_the_stability_page_quotes_is_in_the_committed_summary():
    import re

    doc = (COMMITTED.parent / "stability.md").read_text(encoding="utf-8")
    results = doc[doc.index("## Results") :]
    summary = (COMMITTED / "summary.md").read_text(encoding="utf-8")
    plain = lambda text: text.replace("−", "-").replace("+", "")  # noqa: E731  (the page writes signs typographically)
    quoted = re.findall(r"\d+\.\d+(?:e[+-]\d+)?", results)
    assert len(quoted) > 50
    assert [n for n in quoted if plain(n) not in plain(summary)] == []
