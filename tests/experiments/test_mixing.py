"""examples/experiments/mixing.py: --quick end to end (worker processes, EXP3 moving), the committed results
reproduced byte for byte, and the analysis' definitions on made-up runs."""

from __future__ import annotations

import importlib
import math

import pytest

from ..paths import CHECKOUT, SHARED, needs_shared

COMMITTED = CHECKOUT / "docs" / "experiments" / "mixing"


@pytest.fixture(scope="module")
def mixing(experiments_on_path):
    return importlib.import_module("mixing")


@pytest.mark.slow
@needs_shared("corpus")
def test_quick_mode_runs_every_arm_in_worker_processes_and_exp3_moves_the_weights(mixing, tmp_path):
    data = mixing.main(["--quick", "--corpus", str(SHARED / "corpus"), "--output", str(tmp_path)])
    arms = [*mixing.MAIN_ARMS, *mixing.SWEEP_ARMS]
    assert sorted(data["runs"]) == sorted(f"{a}_s0" for a in arms)
    names = sorted(data["runs"]["static_paper_s0"]["heldout"][-1]["bpb"])
    assert names == ["code", "de", "en", "es", "fr", "it", "ja", "ko", "zh"]
    for run in data["runs"].values():
        assert [p["step"] for p in run["heldout"]] == [10, 20, 30], "the in-loop evaluation every 10 steps"
        assert all(math.isfinite(v) for p in run["heldout"] for v in p["bpb"].values())
        assert all(s["documents"] == 2 for s in run["heldout_set"].values())
        # trained by a worker process: its output went to the run's log file, not to this process
        assert "data_report.json" in (tmp_path / "logs" / f"{run['name']}.log").read_text()
    paper = mixing.paper_weights(names)
    static = data["runs"]["static_paper_s0"]["weights"]
    assert all(w == pytest.approx(paper[n], abs=1e-4) for n, points in static.items() for _, w in points)
    # EXP3 leaves its exactly uniform exploration policy after ~20 updates: by step 30 English has given weight away
    exp3 = data["runs"]["exp3_lr1_s0"]["weights"]
    assert exp3["en"][0][1] == pytest.approx(paper["en"], abs=1e-4)
    assert exp3["en"][-1][1] < paper["en"] - 0.01
    # phase 2 trains a static mix at the EXP3 run's own average weights
    average = mixing.mean_weights(data["runs"]["exp3_lr1_s0"])
    cfg = data["runs"]["static_exp3avg_s0"]["config"]["data"]
    assert {s["name"]: s["weight"] for s in cfg["sources"]} == pytest.approx(average)
    assert cfg["feedback"] is None
    assert data["invocations"][0]["provenance"]["command"].endswith(f"--output {tmp_path}")
    # --analyse-only from the results file: the same summary, byte for byte, and the figures
    again = tmp_path / "again"
    mixing.main(["--analyse-only", "--results", str(tmp_path / "results.json"), "--output", str(again)])
    assert (again / "summary.md").read_bytes() == (tmp_path / "summary.md").read_bytes()
    for figure in ("heldout_bpb.png", "exp3_weights.png"):
        assert (again / figure).stat().st_size > 1000


def test_the_committed_summary_is_regenerated_byte_for_byte(mixing, tmp_path):
    if not (COMMITTED / "results.json").is_file():
        pytest.skip("no committed mixing results yet")
    mixing.main(["--analyse-only", "--results", str(COMMITTED / "results.json"), "--output", str(tmp_path)])
    assert (tmp_path / "summary.md").read_text() == (COMMITTED / "summary.md").read_text()
    assert (COMMITTED / "results.json").stat().st_size < 1_000_000


def test_the_mixes(mixing):
    names = ["code", "de", "en", "es", "fr", "it", "ja", "ko", "zh"]
    paper = mixing.paper_weights(names)
    assert sum(paper.values()) == pytest.approx(1) and paper["code"] == 0.086
    assert paper["en"] == pytest.approx(0.914 * 80.1 / 100, abs=1e-3)  # the "73% English" of the report's mix
    hot = mixing.temperature_weights(names, 3.0)
    assert sum(hot.values()) == pytest.approx(1)
    assert hot["en"] / hot["es"] == pytest.approx((paper["en"] / paper["es"]) ** (1 / 3))
    assert mixing.temperature_weights(names, 1.0) == pytest.approx(paper)


def _run(arm: str, seed: int, bpb: dict[str, float]) -> dict:
    point = {"step": 100, "tokens": 0, "bpb": bpb, "loss": {n: v * 2 for n, v in bpb.items()}}
    weights = {n: [[5, 0.5], [10, 0.5]] for n in bpb}
    return {
        "name": f"{arm}_s{seed}",
        "spec": {"arm": arm, "seed": seed},
        "heldout": [point],
        "weights": weights,
        "cpu_s": 1.0,
    }


def test_paired_differences_and_the_two_means(mixing):
    """Two sources, en and de; the paper mix over them is ~98% en. EXP3 lowers de by 0.3 and raises en by 0.1 in
    every seed: better on the unweighted mean, worse on the paper-weighted one."""
    runs = []
    for seed, noise in enumerate([0.0, 0.2, -0.1]):
        runs.append(_run("static_paper", seed, {"en": 4.0 + noise, "de": 5.0 + noise}))
        runs.append(_run("exp3_lr1", seed, {"en": 4.1 + noise, "de": 4.7 + noise}))
    a = mixing.analyse({"runs": {r["name"]: r for r in runs}})
    diff = a["paired"]["exp3_lr1 - static_paper"]
    assert diff["bpb/unweighted"]["mean"] == pytest.approx(-0.1) and diff["bpb/unweighted"]["below_zero"] == 3
    w = mixing.paper_weights(["de", "en"])
    assert diff["bpb/paper-weighted"]["mean"] == pytest.approx(0.1 * w["en"] - 0.3 * w["de"])
    assert diff["bpb/paper-weighted"]["mean"] > 0 and diff["bpb/paper-weighted"]["n"] == 3
    assert diff["bpb/unweighted"]["se"] == pytest.approx(0, abs=1e-12)  # the seed noise cancels in the pairs
    arm = a["arms"]["static_paper"]["bpb/unweighted"]
    assert arm["mean"] == pytest.approx(4.5 + 0.1 / 3) and arm["n"] == 3
    assert arm["se"] == pytest.approx(0.152753 / math.sqrt(3), rel=1e-4)  # stdev([0, .2, -.1]) / sqrt(n)
    assert arm["lo"] < arm["mean"] < arm["hi"]
    assert (arm["hi"] - arm["mean"]) / arm["se"] == pytest.approx(4.302653, rel=1e-5)  # t(0.975, 2)
    text = mixing.summary({"runs": {r["name"]: r for r in runs}})
    assert "| exp3_lr1 - static_paper |" in text and "(n=3)" in text


def test_the_former_exp3_defaults_leave_the_mix_unchanged_for_20_updates():
    """Why `static_paper` stands for the former defaults (`learning_rate: null`, `update_every: 10`) in a 100-step
    run: with 9 sources the exploration floor keeps the policy exactly uniform for the first 20 updates."""
    from wonton_hf.data.mixture import Exp3Feedback

    feedback = Exp3Feedback(learning_rate=None, update_every=10)
    base = {f"s{i}": 1 / 9 for i in range(9)}
    losses = {f"s{i}": 3.0 + i for i in range(9)}
    for _ in range(19):
        assert feedback.update(losses, base) == {n: pytest.approx(1.0, abs=1e-12) for n in base}
    for _ in range(5):
        moved = feedback.update(losses, base)
    assert moved["s8"] > 1.0 > moved["s0"]
