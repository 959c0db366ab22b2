"""examples/experiments/schedules.py: --quick end to end (worker processes, averaging, integrated LR), the
committed results reproduced byte for byte, and the best-LR selection and pairing on made-up runs."""

from __future__ import annotations

import importlib

import pytest

from ..paths import CHECKOUT, SHARED, needs_shared

COMMITTED = CHECKOUT / "docs" / "experiments" / "schedules"


@pytest.fixture(scope="module")
def schedules(experiments_on_path):
    return importlib.import_module("schedules")


@pytest.mark.slow
@needs_shared("corpus")
def test_quick_mode_trains_every_cell_and_averages_the_constant_lr_runs(schedules, tmp_path):
    data = schedules.main(["--quick", "--corpus", str(SHARED / "corpus"), "--output", str(tmp_path)])
    expected = {f"{s}_lr{lr:g}_s0" for s in schedules.SCHEDULES for lr in (2e-3, 8e-3)}
    assert set(data["runs"]) == expected
    for run in data["runs"].values():
        rates = run["learning_rates"]
        assert len(rates) == 20 and run["integrated_lr"] == pytest.approx(sum(rates))
        assert [p["step"] for p in run["heldout"]] == [10, 20]
        assert (run["averaged_heldout"] is not None) == (run["spec"]["schedule"] == "constant_avg")
        assert "data_report.json" in (tmp_path / "logs" / f"{run['name']}.log").read_text()  # a worker's output
    cosine, wsd, constant = (data["runs"][f"{s}_lr0.008_s0"]["learning_rates"] for s in schedules.SCHEDULES)
    assert max(cosine) == max(wsd) == max(constant) == pytest.approx(8e-3)
    assert cosine[-1] < 0.3 * 8e-3 and wsd[-1] < 0.3 * 8e-3 and constant[-1] == pytest.approx(8e-3)
    assert sum(cosine) < sum(wsd) < sum(constant)
    averaged = data["runs"]["constant_avg_lr0.008_s0"]
    assert averaged["averaged_heldout"]["bpb"] != averaged["heldout"][-1]["bpb"]
    again = tmp_path / "again"
    schedules.main(["--analyse-only", "--results", str(tmp_path / "results.json"), "--output", str(again)])
    assert (again / "summary.md").read_bytes() == (tmp_path / "summary.md").read_bytes()
    assert (again / "schedules.png").stat().st_size > 1000


def test_the_committed_summary_is_regenerated_byte_for_byte(schedules, tmp_path):
    if not (COMMITTED / "results.json").is_file():
        pytest.skip("no committed schedules results yet")
    schedules.main(["--analyse-only", "--results", str(COMMITTED / "results.json"), "--output", str(tmp_path)])
    assert (tmp_path / "summary.md").read_text() == (COMMITTED / "summary.md").read_text()
    assert (COMMITTED / "results.json").stat().st_size < 1_000_000


def _run(schedule: str, lr: float, seed: int, value: float, last: float | None = None) -> dict:
    def point(v: float) -> dict:
        return {"step": 100, "tokens": 0, "bpb": {"en": v, "de": v}, "loss": {"en": 2 * v, "de": 2 * v}}

    averaged = point(value) if schedule == "constant_avg" else None
    return {
        "name": f"{schedule}_lr{lr:g}_s{seed}",
        "spec": {"schedule": schedule, "learning_rate": lr, "seed": seed},
        "heldout": [point(value if averaged is None else last)],
        "averaged_heldout": averaged,
        "integrated_lr": {"cosine": 50, "wsd": 80, "constant_avg": 90}[schedule] * lr,
        "cpu_s": 1.0,
    }


def test_each_schedule_is_compared_at_its_own_best_lr_paired_by_seed(schedules):
    runs = []
    for seed, noise in enumerate([0.0, 0.3, -0.2]):
        runs += [
            _run("cosine", 1e-3, seed, 4.0 + noise),
            _run("cosine", 2e-3, seed, 3.8 + noise),  # cosine's best
            _run("wsd", 1e-3, seed, 3.7 + noise),  # wsd's best: another LR
            _run("wsd", 2e-3, seed, 3.9 + noise),
            _run("constant_avg", 1e-3, seed, 3.9 + noise, last=4.0 + noise),
            _run("constant_avg", 2e-3, seed, 3.85 + noise, last=4.05 + noise),
        ]
    a = schedules.analyse({"runs": {r["name"]: r for r in runs}})
    assert a["best"]["cosine"]["learning_rate"] == 2e-3 and a["best"]["wsd"]["learning_rate"] == 1e-3
    assert a["best"]["wsd"]["at_grid_edge"]
    diff = a["paired_best"]["wsd - cosine"]["bpb/training-weighted"]
    assert diff["mean"] == pytest.approx(-0.1) and diff["n"] == 3 and diff["below_zero"] == 3
    assert a["paired_same_lr"]["wsd - cosine @ 0.002"]["mean"] == pytest.approx(0.1)
    gain = a["averaging_gain"]["training-weighted"]
    assert gain["mean"] == pytest.approx(-0.2) and gain["below_zero"] == 3
    # WSD's integrated LR at its best (1e-3) against cosine's at the same peak and at cosine's best (2e-3)
    assert a["best"]["wsd"]["integrated_lr_vs_cosine_same_peak"] == pytest.approx(80 / 50)
    assert a["best"]["wsd"]["integrated_lr_vs_best_cosine"] == pytest.approx(80 * 1e-3 / (50 * 2e-3))
    text = schedules.summary({"runs": {r["name"]: r for r in runs}})
    assert "| wsd - cosine |" in text and "(n=3)" in text
