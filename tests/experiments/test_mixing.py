"""examples/experiments/mixing.py: the --quick mode end to end, and the analysis' definitions on made-up curves."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from .conftest import DEMO_DATA


@pytest.fixture(scope="module")
def mixing(experiments_on_path):
    return importlib.import_module("mixing")


def test_quick_mode_runs_every_arm_and_cell_and_writes_results_and_figures(mixing, tmp_path):
    data = mixing.main(["--quick", "--corpus", str(DEMO_DATA), "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    expected = [f"mixing_{arm}_s0" for arm in mixing.MIXING_ARMS] + [
        f"curriculum_{o}_{s}_s0" for o in mixing.ORDERS for s in mixing.SCHEDULES
    ]
    assert sorted(saved["runs"]) == sorted(expected)
    names = saved["prepared"]["names"]
    assert "code" in names and len(names) == 9
    for run in saved["runs"].values():
        steps = [p["step"] for p in run["heldout"]]
        assert steps == [0, 3, 6], "scored before training, every 3 steps and at the end"
        assert all(
            set(p["losses"]) == set(names) and all(math.isfinite(v) for v in p["losses"].values())
            for p in run["heldout"]
        )
        assert run["heldout"][-1]["losses"] != run["heldout"][0]["losses"]
        config = run["config"]
        assert (config["data"]["feedback"] is not None) == run["spec"]["arm"].startswith("exp3")
        averaged = run["spec"]["arm"].endswith("constant_avg")
        assert (run["averaged_heldout"] is not None) == averaged
        assert config["train"].get("average_last") == (2 if averaged else None)
    paper = saved["runs"]["mixing_static_paper_s0"]["weights"]
    assert paper["en"][0][1] > 0.6 and paper["code"][0][1] == pytest.approx(mixing.PAPER_CODE_SHARE, abs=1e-3)
    # the curriculum moves weight from the easiest source (lowest compression ratio) to the hardest
    difficulty = saved["prepared"]["difficulty"]
    easy, hard = min(difficulty, key=difficulty.get), max(difficulty, key=difficulty.get)
    curriculum = saved["runs"]["curriculum_curriculum_cosine_s0"]["weights"]
    assert curriculum[easy][0][1] > curriculum[easy][-1][1] and curriculum[hard][0][1] < curriculum[hard][-1][1]
    assert set(data["analysis"]["curriculum"]["table"]) == {f"{o}_{s}" for o in mixing.ORDERS for s in mixing.SCHEDULES}
    for figure in ("mixing_heldout_vs_tokens.png", "mixing_weights.png", "curriculum_schedule.png"):
        assert (tmp_path / figure).stat().st_size > 1000, figure
    again = mixing.main(["--quick", "--corpus", str(DEMO_DATA), "--output", str(tmp_path), "--analyse-only"])
    assert again["runs"].keys() == saved["runs"].keys()


def test_curriculum_keeps_each_sources_share_over_the_run(mixing):
    weights = mixing.base_weights("paper", ["code", "de", "en", "ja"])
    assert sum(weights.values()) == pytest.approx(1) and weights["code"] == mixing.PAPER_CODE_SHARE
    difficulty = {"code": 0.2, "de": 0.6, "en": 0.5, "ja": 0.7}
    start, end = (p["weights"] for p in mixing.curriculum_points(weights, difficulty, 1.6, 100))
    assert start["code"] / weights["code"] == pytest.approx(1.8) and end["ja"] / weights["ja"] == pytest.approx(1.8)
    assert {n: (start[n] + end[n]) / 2 for n in weights} == pytest.approx(weights)
    # with the uniform base the experiment uses, both points also sum to 1: no renormalisation shifts the shares
    uniform = mixing.base_weights("uniform", list(weights))
    start, end = (p["weights"] for p in mixing.curriculum_points(uniform, difficulty, 1.6, 100))
    assert sum(start.values()) == pytest.approx(1) and sum(end.values()) == pytest.approx(1)


def _run(arm: str, seed: int, curve: list[float], averaged: float | None = None) -> dict:
    points = [{"step": 10 * i, "tokens": 10 * i * 100, "losses": {"a": v, "b": v}} for i, v in enumerate(curve)]
    experiment = "mixing" if arm in ("static_uniform", "exp3_uniform") else "curriculum"
    return {
        "name": f"{arm}_{seed}",
        "spec": {"experiment": experiment, "arm": arm, "seed": seed},
        "heldout": points,
        "averaged_heldout": {"a": averaged, "b": averaged} if averaged is not None else None,
        "config": {"train": {"max_steps": 10 * (len(curve) - 1)}},
    }


def test_steps_to_the_static_final_pair_seeds_interpolate_and_count_misses(mixing):
    runs = [
        _run("static_uniform", 0, [8, 6, 5, 4.0]),
        _run("static_uniform", 1, [8, 6, 4.1, 4.2]),
        _run("exp3_uniform", 0, [8, 5, 4.0, 3.8]),
        _run("exp3_uniform", 1, [8, 6, 5, 4.5]),
    ]
    analysis = mixing.analyse({"runs": {r["name"]: r for r in runs}})["mixing"]
    # static seed 1 first reaches its own final 4.2 between steps 10 (6.0) and 20 (4.1): 10 + 10 * 1.8 / 1.9
    assert analysis["static_uniform"]["steps_to_static_final_per_seed"] == [30, pytest.approx(10 + 180 / 19)]
    # exp3 seed 0 reaches static seed 0's 4.0 at step 20 (a third sooner); seed 1 never reaches 4.2
    assert analysis["exp3_uniform"]["steps_to_static_final_per_seed"] == [20, None]
    assert analysis["exp3_uniform"]["never_reached"] == 1
    assert analysis["exp3_uniform"]["steps_saved"]["mean"] == pytest.approx(1 / 3)
    assert analysis["exp3_uniform"]["final_mean_heldout"]["mean"] == pytest.approx(4.15)
    assert analysis["exp3_uniform"]["final_minus_static_paired"]["mean"] == pytest.approx(
        ((3.8 - 4.0) + (4.5 - 4.2)) / 2
    )


def test_curriculum_table_uses_the_averaged_model_where_there_is_one(mixing):
    runs = [
        _run("shuffled_constant_avg", 0, [8, 5], averaged=4.5),
        _run("curriculum_constant_avg", 0, [8, 5], averaged=4.2),
        _run("shuffled_cosine", 0, [8, 4.4]),
        _run("curriculum_cosine", 0, [8, 4.5]),
    ]
    out = mixing.analyse({"runs": {r["name"]: r for r in runs}})["curriculum"]
    assert out["table"]["curriculum_constant_avg"]["final_mean_heldout"]["mean"] == pytest.approx(4.2)
    assert out["table"]["curriculum_constant_avg"]["unaveraged_final"]["mean"] == pytest.approx(5.0)
    assert out["curriculum_gain"] == {"cosine": pytest.approx(-0.1), "constant_avg": pytest.approx(0.3)}
    assert out["curriculum_gain_paired"]["constant_avg"]["mean"] == pytest.approx(0.3)
