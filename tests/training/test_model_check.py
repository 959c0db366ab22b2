"""The model section is checked against the model's own rules with the rest of the config: one `ConfigError`,
exit code 2, before torch is imported or a tokenizer trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wonton_hf.chat.config import load_sft_config
from wonton_hf.training import ConfigError, load_run_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        (["model.overrides.hidden_size=130"], "model.overrides.hidden_size", "divisible by `num_attention_heads`"),
        (["model.overrides.num_attention_heads=3"], "model.overrides", "divisible by `num_attention_heads`"),
        (["model.overrides.hidden_size=132"], "model.overrides.hidden_size", "RoPE needs an even head dim"),
        (["model.overrides.vocab_size=1000"], "model.overrides.vocab_size", "smaller than the tokenizer"),
        (["model.overrides.position_embedding_type=alibi"], "model.overrides.position_embedding_type", "one of"),
        (["model.overrides.rope_parameters={partial_rotary_factor: 0.5}"], "model.overrides.rope_parameters", "full"),
        (["model.overrides.attention_dropout=1.5"], "model.overrides.attention_dropout", "[0, 1)"),
        (
            ["model.overrides.position_embedding_type=learned", "model.overrides.max_position_embeddings=128"],
            "model.overrides.max_position_embeddings",
            "learned positions",
        ),
    ],
)
def test_model_shape_problems_are_config_errors(overrides, path, message):
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, overrides)
    assert path in dict(error.value.problems), error.value
    assert message in dict(error.value.problems)[path], error.value


def test_shape_problems_come_with_the_field_problems():
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, ["model.overrides.hidden_size=130", "monitors.spike_guard.min_window=500"])
    assert {"model.overrides.hidden_size", "monitors.spike_guard.min_window"} <= {p for p, _ in error.value.problems}


def test_valid_overrides_and_init_from_pass():
    config = load_run_config(DEMO, ["model.overrides.hidden_size=256", "model.overrides.num_attention_heads=8"])
    assert config.model.overrides == {"hidden_size": 256, "num_attention_heads": 8}
    load_run_config(DEMO, ["model.overrides.vocab_size=8192"])  # larger than the 4,096-piece tokenizer: fine


def test_sft_tiny_model_shape_is_checked():
    with pytest.raises(ConfigError) as error:
        load_sft_config(None, ["model.tiny_overrides.hidden_size=130", "data.sources=[{name: a, format: oasst}]"])
    assert "model.tiny_overrides.hidden_size" in dict(error.value.problems), error.value
    load_sft_config(
        None,
        ["model.path=some/model", "model.tiny_overrides.hidden_size=130", "data.sources=[{name: a, format: oasst}]"],
    )


def test_bad_shape_exits_2_with_one_message_before_the_tokenizer(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "pretrain.py"),
            "model.overrides.hidden_size=130",
            f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Invalid run config (1 problem):" in result.stderr and "model.overrides.hidden_size" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pretrain-demo").exists()  # no tokenizer trained, nothing written


def test_monitor_rules_are_the_monitors_own():
    from wonton_hf.callbacks import SpikeGuard

    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, ["monitors.spike_guard.min_window=500"])
    message = dict(error.value.problems)["monitors.spike_guard.min_window"]
    with pytest.raises(ValueError, match="min_window") as raised:
        SpikeGuard(min_window=500)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("data.sources[0].name=''", "data.sources[0].name"),
        ("data.sources[0].paths=[]", "data.sources[0].paths"),
        ("data.sources[0].read_retries=-1", "data.sources[0].read_retries"),
        ("data.feedback={smoothing: 1.5}", "data.feedback.smoothing"),
        ("monitors.stability.output_norm_iterations=-1", "monitors.stability.output_norm_iterations"),
    ],
)
def test_class_rules_are_reported_under_their_config_path(override, path):
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, [override])
    assert path in dict(error.value.problems), error.value


def test_vocab_size_below_a_given_tokenizer_is_a_config_error(tmp_path):
    """With `tokenizer.path`, the saved tokenizer's size is read from its tokenizer.json (no transformers)."""
    from wonton_hf.tokenization import train_tokenizer

    saved = tmp_path / "tokenizer"
    train_tokenizer(
        texts=["ein kleiner Text", "a small text", "un petit texte"] * 50, vocab_size=384
    ).tokenizer.save_pretrained(saved)
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, [f"tokenizer.path={saved}", "model.overrides.vocab_size=100"])
    assert "smaller than the tokenizer" in dict(error.value.problems)["model.overrides.vocab_size"]
    load_run_config(DEMO, [f"tokenizer.path={saved}", "model.overrides.vocab_size=4096"])
