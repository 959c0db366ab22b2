"""WSD in the run config and checkpoint averaging, on one real short Trainer run (checkpoints every 2 steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import wonton_hf  # noqa: F401
from wonton_hf.cli import main as cli
from wonton_hf.training import ConfigError, build_trainer, load_run_config, run
from wonton_hf.training.averaging import average_checkpoints
from wonton_hf.training.pretrain import build_training_arguments

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"
SMALL = [
    "data.seq_len=64",
    "train.per_device_batch_size=4",
    "train.global_batch_tokens=256",
    "tokenizer.vocab_size=512",
    "tokenizer.max_documents_per_source=30",
    "train.logging_steps=1",
    "train.report_to=[]",
    "monitors.stability=null",
    "monitors.throughput=null",
    "monitors.spike_guard=null",
    "evaluation=null",  # these runs are shorter than the demo's evaluation interval
]
WSD = [
    "optimizer.lr_scheduler_type=warmup_stable_decay",
    "optimizer.warmup_steps=2",
    "optimizer.decay_steps=3",
    "optimizer.decay_type=linear",
    "optimizer.min_lr_rate=0.1",
    "optimizer.learning_rate=1e-3",
]


@pytest.fixture(scope="module")
def wsd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wsd")
    config = load_run_config(
        DEMO,
        SMALL
        + WSD
        + [
            f"output_dir={out}",
            "train.max_steps=8",
            "train.save_steps=2",
            "train.save_total_limit=null",
            "train.average_last=3",
        ],
    )
    prepared = build_trainer(config)
    run(prepared)
    return config, prepared.trainer.state.log_history


def test_wsd_learning_rate_warms_up_stays_then_decays(wsd_run):
    _, history = wsd_run
    lr = {e["step"]: e["learning_rate"] for e in history if "learning_rate" in e}
    assert sorted(lr) == list(range(1, 9))
    peak, floor = 1e-3, 0.1
    # step s trains with the scheduler's value after s - 1 steps: warm-up from the floor over 2 steps, stable for
    # 8 - 2 - 3 = 3 steps (steps 3-5; step 6 is decay's first, still at 100%), linear decay by (1 - floor) / 3 a step
    expected = [floor, (1 + floor) / 2, 1, 1, 1, 1, 1 - (1 - floor) / 3, 1 - 2 * (1 - floor) / 3]
    assert [lr[s] / peak for s in range(1, 9)] == pytest.approx(expected)


def test_decay_fraction_maps_to_transformers_kwargs():
    config = load_run_config(
        DEMO,
        SMALL
        + [
            "optimizer.lr_scheduler_type=warmup_stable_decay",
            "train.max_steps=300",
            "optimizer.decay_fraction=0.25",
            "optimizer.min_lr_rate=0.0",
        ],
    )
    args = build_training_arguments(config)
    assert args.lr_scheduler_type == "warmup_stable_decay"
    assert args.lr_scheduler_kwargs == {"num_decay_steps": 75, "decay_type": "1-sqrt", "min_lr_ratio": 0.0}
    plain = build_training_arguments(load_run_config(DEMO, SMALL))
    assert plain.lr_scheduler_kwargs == {"min_lr_rate": 0.1}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (["optimizer.decay_steps=10"], "optimizer.decay_steps", "only used by lr_scheduler_type warmup_stable_decay"),
        (
            ["optimizer.lr_scheduler_type=warmup_stable_decay", "optimizer.decay_steps=290"],
            "optimizer.decay_steps",
            "exceed train.max_steps (300)",
        ),
        (
            ["optimizer.lr_scheduler_type=warmup_stable_decay", "optimizer.decay_fraction=0.95"],
            "optimizer.decay_fraction",
            "warm-up (30) + decay (285)",
        ),
        (["optimizer.decay_fraction=0"], "optimizer.decay_fraction", "greater than 0"),
        (["optimizer.decay_type=exp"], "optimizer.decay_type", "'1-sqrt'"),
        (["train.average_last=1"], "train.average_last", "greater than or equal to 2"),
        (["train.average_last=3"], "train.average_last", "save_total_limit (2) keeps fewer"),
        (["train.average_last=4", "train.save_total_limit=null"], "train.average_last", "saves only 3 checkpoint"),
    ],
)
def test_bad_schedule_and_averaging_values_fail_naming_the_field(overrides, field, message):
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, overrides)
    assert message in dict(error.value.problems).get(field, ""), error.value


def test_validate_rechecks_fields_changed_in_code():
    config = load_run_config(DEMO, ["optimizer.lr_scheduler_type=warmup_stable_decay"])
    config.optimizer.decay_steps = 1000
    with pytest.raises(ConfigError, match="optimizer.decay_steps: warm-up"):
        config.validate()


def test_help_config_shows_the_new_fields():
    from wonton_hf.training.config import run_config_help

    text = run_config_help()
    for line in (
        "optimizer.decay_fraction (float, default: 0.2)",
        "optimizer.decay_steps (int | None, default: None)",
        "optimizer.decay_type (Literal['linear', 'cosine', '1-sqrt'], default: '1-sqrt')",
        "train.average_last (int | None, default: None)",
    ):
        assert line in text, line


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_run_config_option_writes_final_averaged_that_loads(wsd_run):
    config, _ = wsd_run
    averaged = config.run_dir / "final-averaged"
    report = json.loads((averaged / "averaging.json").read_text())
    assert report["steps"] == [4, 6, 8]
    parts = [_weights(config.run_dir / f"checkpoint-{s}") for s in (4, 6, 8)]
    mean = {k: sum(p[k] for p in parts) / 3 for k in parts[0]}
    got = _weights(averaged)
    assert got.keys() == mean.keys()
    assert all(torch.allclose(got[k], mean[k], atol=1e-6) for k in mean)
    assert not torch.equal(got["model.embed_tokens.weight"], parts[-1]["model.embed_tokens.weight"])
    model = AutoModelForCausalLM.from_pretrained(averaged)
    state = model.state_dict()
    assert all(torch.equal(state[k], got[k]) for k in got)
    assert not any(averaged.glob("optimizer*")) and not (averaged / "trainer_state.json").exists()
    assert (averaged / "tokenizer.json").is_file()


def test_cli_averages_only_complete_checkpoints(wsd_run, tmp_path, capsys):
    config, _ = wsd_run
    run_dir = tmp_path / "run"
    for step in (4, 6, 8):
        shutil.copytree(config.run_dir / f"checkpoint-{step}", run_dir / f"checkpoint-{step}")
    (run_dir / "checkpoint-8" / "COMPLETE").unlink()  # a save a crash cut short
    assert cli(["average-checkpoints", str(run_dir), "--last", "2", "--output", str(tmp_path / "avg")]) == 0
    assert "steps 4, 6" in capsys.readouterr().out
    assert json.loads((tmp_path / "avg" / "averaging.json").read_text())["steps"] == [4, 6]
    assert cli(["average-checkpoints", str(run_dir), "--last", "3"]) == 2
    err = capsys.readouterr().err
    assert "2 complete checkpoint(s), 3 asked" in err and "checkpoint-8" in err
    assert not (run_dir / "final-averaged").exists()


def test_mismatched_checkpoints_are_refused(wsd_run, tmp_path):
    config, _ = wsd_run
    for step in (4, 6):
        shutil.copytree(config.run_dir / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    weights = _weights(tmp_path / "checkpoint-6")
    weights.pop("model.norm.weight")
    from safetensors.torch import save_file

    save_file(weights, tmp_path / "checkpoint-6" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not hold the same tensors"):
        average_checkpoints(tmp_path, 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()
