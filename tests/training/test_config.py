from pathlib import Path

import pytest
import yaml

from wonton_hf.training import load_run_config
from wonton_hf.training.checkpoints import COMPLETE_MARKER, mark_complete, newest_complete_checkpoint
from wonton_hf.training.config import dump_run_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs" / "runs"
SOURCES = [{"name": "en", "paths": ["x.jsonl"], "weight": 1.0}]


def test_shipped_run_configs_load_and_derive_accumulation():
    demo = load_run_config(EXAMPLES / "wonton-tiny-cpu.yaml")
    assert demo.model.preset == "wonton-tiny" and demo.gradient_accumulation_steps(1) == 1
    seven = load_run_config(EXAMPLES / "wonton-7b.yaml")
    assert seven.optimizer.betas == (0.9, 0.95) and seven.optimizer.weight_decay == 0.1
    assert seven.optimizer.warmup_steps == 2000 and seven.optimizer.min_lr_rate == 0.1
    assert seven.data.seq_len == 2048 and seven.train.global_batch_tokens == 1_048_576
    # 1M tokens / (2048 x 4 per device): 128 passes in all, split over the ranks
    assert seven.gradient_accumulation_steps(128) == 1 and seven.gradient_accumulation_steps(8) == 16
    assert load_run_config(EXAMPLES / "wonton-1b.yaml").model.preset == "wonton-1b"


def test_overrides_are_parsed_as_yaml():
    config = load_run_config(EXAMPLES / "wonton-tiny-cpu.yaml",
                             ["train.max_steps=7", "model.overrides.qk_layernorm=false", "monitors.spike_guard=null"])
    assert config.train.max_steps == 7 and config.model.overrides == {"qk_layernorm": False}
    assert config.monitors.spike_guard is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_step=5", r"Unknown key\(s\) \['max_step'\] in `train`"),
        ("model.preset=wonton-99b", "`model.preset`"),
        ("data.seq_len=0", "`data.seq_len`"),
        ("train.precision=fp8", "`train.precision`"),
        ("data.share_tolerance=-0.1", "`data.share_tolerance`"),
        ("data.prefetch_blocks=-1", "`data.prefetch_blocks`"),
        ("data.min_segment_tokens=0", "`data.min_segment_tokens`"),
        ("bogus=1", r"Unknown key\(s\) \['bogus'\]"),
    ],
)
def test_config_errors_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        load_run_config(EXAMPLES / "wonton-tiny-cpu.yaml", [override])


@pytest.mark.parametrize(("override", "message"), [("resume=/no/such/checkpoint", "`resume`"),
                                                   ("train.deepspeed=/no/such.json", "`train.deepspeed`"),
                                                   ("tokenizer.path=/no/such/dir", "`tokenizer.path`")])
def test_missing_files_are_reported_at_launch(override, message):
    config = load_run_config(EXAMPLES / "wonton-tiny-cpu.yaml", [override])
    with pytest.raises(ValueError, match=message):
        config.check_files()


def test_batch_that_does_not_divide_names_the_fields():
    config = load_run_config(None, ["train.global_batch_tokens=1000"], data={"sources": SOURCES, "seq_len": 256})
    with pytest.raises(ValueError, match="global_batch_tokens"):
        config.gradient_accumulation_steps(1)


def test_empty_sources_fail_before_work():
    with pytest.raises(ValueError, match="data.sources"):
        load_run_config(None, [])


def test_resolved_config_round_trips(tmp_path):
    config = load_run_config(EXAMPLES / "wonton-tiny-cpu.yaml", ["train.max_steps=9"])
    dump_run_config(config, tmp_path / "run.yaml")
    assert load_run_config(tmp_path / "run.yaml") == config
    assert yaml.safe_load((tmp_path / "run.yaml").read_text())["optimizer"]["betas"] == [0.9, 0.95]


def test_only_marked_checkpoints_are_resume_points(tmp_path):
    for step in (100, 200, 300):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert newest_complete_checkpoint(tmp_path) is None
    mark_complete(tmp_path / "checkpoint-100", 100)
    mark_complete(tmp_path / "checkpoint-200", 200)
    # checkpoint-300 was being written when the process died: never a resume point
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-200"
    assert (tmp_path / "checkpoint-200" / COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob("checkpoint-*/.COMPLETE.tmp"))
