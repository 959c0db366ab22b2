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
