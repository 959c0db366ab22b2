"""The run config: typed sections, numbers read as numbers, every problem in one error naming its path."""

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

from wonton_hf.training import load_run_config
from wonton_hf.training.config import DATA_FORMATS, FeedbackConfig, ScheduleConfig, SourceConfig, dump_run_config
from wonton_hf.training.model_check import model_fields
from wonton_hf.training.schema import LR_SCHEDULERS, ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs" / "runs"
DEMO = EXAMPLES / "wonton-tiny-cpu.yaml"
SOURCES = [{"name": "en", "paths": ["x.jsonl"], "weight": 1.0}]


def test_shipped_run_configs_load_and_derive_accumulation():
    demo = load_run_config(DEMO)
    assert demo.model.preset == "wonton-tiny" and demo.gradient_accumulation_steps(1) == 1
    seven = load_run_config(EXAMPLES / "wonton-7b.yaml")
    assert seven.optimizer.betas == (0.9, 0.95) and seven.optimizer.weight_decay == 0.1
    assert seven.optimizer.warmup_steps == 2000 and seven.optimizer.min_lr_rate == 0.1
    assert seven.data.seq_len == 2048 and seven.train.global_batch_tokens == 1_048_576
    # 1M tokens / (2048 x 4 per device): 128 passes in all, split over the ranks
    assert seven.gradient_accumulation_steps(128) == 1 and seven.gradient_accumulation_steps(8) == 16
    assert load_run_config(EXAMPLES / "wonton-1b.yaml").model.preset == "wonton-1b"


def test_overrides_are_parsed_as_yaml():
    config = load_run_config(
        DEMO,
        [
            "train.max_steps=7",
            "evaluation.eval_steps=7",
            "model.overrides.qk_layernorm=false",
            "monitors.spike_guard=null",
            "data.sources[1].weight=0.5",
            "monitors.stability.every_n_steps=5",
        ],
    )
    assert config.train.max_steps == 7 and config.model.overrides == {"qk_layernorm": False}
    assert config.monitors.spike_guard is None and config.monitors.stability.every_n_steps == 5
    assert config.data.sources[1].weight == 0.5


def test_exponent_numbers_are_numbers_in_yaml_and_in_overrides(tmp_path):
    assert load_run_config(DEMO, ["optimizer.learning_rate=1e-3"]).optimizer.learning_rate == 1e-3
    text = DEMO.read_text().replace("learning_rate: 2.0e-3", "learning_rate: 2e-3")
    assert "learning_rate: 2e-3" in text
    (tmp_path / "run.yaml").write_text(text)
    config = load_run_config(tmp_path / "run.yaml", ["model.overrides.z_loss_coef=1e-4"])
    assert config.optimizer.learning_rate == 2e-3 and config.model.overrides["z_loss_coef"] == 1e-4


@pytest.mark.parametrize(
    ("override", "path", "message"),
    [
        ("train.max_step=5", "train.max_step", "did you mean `max_steps`"),
        ("model.preset=wonton-99b", "model.preset", "accepted: wonton-tiny"),
        ("data.seq_len=0", "data.seq_len", "got 0"),
        ("train.precision=fp8", "train.precision", "must be one of 'auto'"),
        ("data.share_tolerance=-0.1", "data.share_tolerance", "greater than or equal to 0"),
        ("data.prefetch_blocks=-1", "data.prefetch_blocks", "got -1"),
        ("data.min_segment_tokens=0", "data.min_segment_tokens", "greater than 0"),
        ("bogus=1", "bogus", "accepted keys: data, downstream, evaluation, model, monitors"),
        ("model.overrides.hiden_size=64", "model.overrides", "did you mean `hidden_size`"),
        ("optimizer.lr_scheduler_type=cosin", "optimizer.lr_scheduler_type", "'cosine'"),
        ("optimizer.betas=[0.9,1.5]", "optimizer.betas", "[0, 1)"),
        ("data.feedback.min_weight=0.6", "data.feedback.min_weight", None),
        ("data.sources[0].format=parq", "data.sources[0].format", "'parquet'"),
        ("monitors.spike_guard.window=1", "monitors.spike_guard.window", "greater than or equal to 2"),
        ("train.global_batch_tokens=1000", "train.global_batch_tokens", "positive multiple"),
        # an interval that never fires: the message gives the largest value that does, and the way to turn it off
        ("evaluation.eval_steps=301", "evaluation.eval_steps", "set it to at most 300 (or set `evaluation: null`"),
    ],
)
def test_config_errors_name_the_field(override, path, message):
    overrides = [override] + (["data.feedback.max_weight=0.5"] if "min_weight" in override else [])
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, overrides)
    paths = [p for p, _ in error.value.problems]
    assert path in paths, error.value
    if message:
        assert message in dict(error.value.problems)[path], error.value


def test_all_problems_come_at_once_each_with_its_path():
    with pytest.raises(ConfigError) as error:
        load_run_config(
            DEMO,
            [
                "train.max_steps=abc",
                "optimizer.learning_rate=abc",
                "data.sources[2].wieght=1",
                "monitors.throughput.peak_tflop=1",
                "train.use_cpu=maybe",
                "oops",
            ],
        )
    paths = {p for p, _ in error.value.problems}
    assert {
        "train.max_steps",
        "optimizer.learning_rate",
        "data.sources[2].wieght",
        "monitors.throughput.peak_tflop",
        "train.use_cpu",
        "",
    } <= paths
    assert str(error.value).startswith("Invalid run config (6 problems):")


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"data.sources\[1\].name: got 'en'"):
        load_run_config(None, [], data={"sources": SOURCES * 2, "seq_len": 256}, train={"global_batch_tokens": 1024})
    schedule = {"points": [{"at": 10, "weights": {"en": 1}}, {"at": 5, "weights": {"de": 1}}]}
    with pytest.raises(ConfigError) as error:
        load_run_config(
            None,
            [],
            data={"sources": SOURCES, "seq_len": 256, "schedule": schedule},
            train={"global_batch_tokens": 1024},
        )
    assert {"data.schedule.points", "data.schedule.points[1].weights.de"} <= {p for p, _ in error.value.problems}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resume=/no/such/checkpoint", "resume"),
        ("train.deepspeed=/no/such.json", "train.deepspeed"),
        ("tokenizer.path=/no/such/dir", "tokenizer.path"),
    ],
)
def test_missing_files_are_reported_at_launch(override, message):
    config = load_run_config(DEMO, [override])
    with pytest.raises(ConfigError, match=message):
        config.check_files()


def test_empty_sources_fail_before_work():
    with pytest.raises(ConfigError, match="data.sources: is empty"):
        load_run_config(None, [])


def test_resolved_config_round_trips(tmp_path):
    config = load_run_config(DEMO, ["train.max_steps=9", "data.feedback={update_every: 5}", "evaluation.eval_steps=3"])
    dump_run_config(config, tmp_path / "run.yaml")
    assert load_run_config(tmp_path / "run.yaml") == config
    assert yaml.safe_load((tmp_path / "run.yaml").read_text())["optimizer"]["betas"] == [0.9, 0.95]


def test_help_config_lists_every_field_with_doc_and_default():
    from wonton_hf.training.config import run_config_help

    text = run_config_help()
    for line in (
        "data.sources[*].exhaustion (Literal['repeat', 'stop'], default: 'repeat')",
        "monitors.stability.every_n_steps (int, default: 10) - optimizer steps between measurements",
        "optimizer.learning_rate (float, default: 0.0003) - peak learning rate",
        "data.feedback.update_every (int, default: 10)",
    ):
        assert line in text, line


def test_checking_a_config_imports_neither_torch_nor_transformers():
    import subprocess

    code = (
        "import sys; from wonton_hf.training.config import load_run_config; "
        f"load_run_config({str(DEMO)!r}, ['optimizer.learning_rate=1e-3']); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the schema stays in step with the classes it describes ----


def exc_info_of(override: str) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, [override])
    return error.value


def test_schema_matches_the_classes_it_mirrors():
    from transformers.trainer_utils import SchedulerType

    from wonton_hf.data import DataSource, Exp3Feedback, WeightSchedule
    from wonton_hf.data.sources import FORMATS
    from wonton_hf.models.wonton import WONTON_PRESETS, WontonConfig

    def public(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}

    assert set(SourceConfig.model_fields) == public(DataSource)
    assert set(FeedbackConfig.model_fields) == public(Exp3Feedback)
    assert set(ScheduleConfig.model_fields) == public(WeightSchedule)
    assert DATA_FORMATS == FORMATS
    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(model_fields()) <= {f.name for f in dataclasses.fields(WontonConfig)} | {"output_attentions"}
    assert all(name in str(exc_info_of("model.preset=wonton-99b")) for name in WONTON_PRESETS)


def test_monitor_options_are_read_from_the_monitor_classes():
    from wonton_hf.callbacks import SpikeGuard, StabilityMonitor, ThroughputMonitor
    from wonton_hf.training.config import MonitorsConfig

    for name, cls in (("stability", StabilityMonitor), ("throughput", ThroughputMonitor), ("spike_guard", SpikeGuard)):
        options = MonitorsConfig.model_fields[name].default_factory()
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
        assert set(options.model_dump()) == set(fields), name
        for key, value in options.model_dump().items():
            default = (
                fields[key].default_factory()
                if fields[key].default_factory is not dataclasses.MISSING
                else fields[key].default
            )
            assert value == default, (name, key)
    assert [f.name for f in dataclasses.fields(SpikeGuard)][:2] == ["enabled", "window"]


def test_no_module_parses_the_package_source():
    """Sections are built from the classes themselves (`section_from_dataclass`), never from their source text."""
    package = Path(__file__).resolve().parents[2] / "wonton_hf"
    offenders = [p.name for p in package.rglob("*.py") if "import ast" in p.read_text(encoding="utf-8")]
    assert offenders == []
