"""`wonton-hf plot-run`: PNGs from a real run's trainer_state.json and from TensorBoard events alone."""

from __future__ import annotations

import argparse
import shutil

import pytest

from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor, add_monitors, cli
from wonton_hf.callbacks.plot import FIGURES, collect, find_log_history, plot_run

from .helpers import tiny_model, trainer, training_args
from .test_spike_guard import FaultInjector

ALL = set(FIGURES)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model = tiny_model()
    FaultInjector(model, {3: float("nan")})
    run = trainer(
        model,
        training_args(
            out, max_steps=6, logging_steps=1, save_strategy="steps", save_steps=6, report_to=["tensorboard"]
        ),
    )
    add_monitors(run, StabilityMonitor(every_n_steps=2), ThroughputMonitor(peak_tflops=1.0), SpikeGuard(min_window=2))
    run.train()
    return out


def _main(argv):
    parser = argparse.ArgumentParser(prog="wonton-hf")
    cli.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_renders_every_figure_from_the_newest_checkpoint(run_dir, tmp_path, capsys):
    assert _main(["plot-run", str(run_dir), "--out", str(tmp_path / "png")]) == 0
    written = {p.stem for p in (tmp_path / "png").glob("*.png")}
    assert written == ALL
    assert str(tmp_path / "png" / "loss.png") in capsys.readouterr().out
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "png" / "max_attn_logit.png").shape[0] > 100


def test_history_series_carry_the_monitors(run_dir):
    series = collect(find_log_history(run_dir))
    assert [s for s, _ in series["stability/max_attn_logit/layer_1"]] == [2, 4, 6]
    assert [s for s, _ in series["spike/skip"]] == [4]


def test_tensorboard_events_alone_are_enough(run_dir, tmp_path):
    pytest.importorskip("tensorboard")
    only_events = tmp_path / "events_only"
    shutil.copytree(run_dir / "runs", only_events / "runs")
    stems = {p.stem for p in plot_run(only_events)}
    assert stems == ALL
    assert (only_events / "plots" / "loss.png").exists()


def test_missing_or_empty_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        plot_run(tmp_path)


def test_a_run_with_in_loop_evaluation_gets_the_held_out_figure(tmp_path):
    import json

    history = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 21)]
    for s in (10, 20):
        history.append({"step": s, "eval_loss": 5.5 - s / 20, "eval_bpb": 2.0 - s / 40})
        history[-1].update({f"eval_{n}_{k}": 1.0 + i for i, n in enumerate(("en", "de")) for k in ("loss", "bpb")})
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    written = {p.stem for p in plot_run(tmp_path)}
    assert written == {"loss", "held_out"}
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "plots" / "held_out.png").shape[0] > 300  # three panels
