"""`train.fsdp`: config-time refusals naming the field, the mapping onto the Trainer's FSDP2 plugin, the launch
checks, and (slow) the shipped CPU launcher config training the demo sharded through `accelerate launch`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.launch import free_port
from tests.training.test_pretrain import DEMO, DRIVER, ROOT, small
from wonton_hf.training import LaunchError, check_launch, load_run_config
from wonton_hf.training.fsdp import fsdp_training_arguments, mixed_precision_policy
from wonton_hf.training.schema import ConfigError

ACCELERATE = ROOT / "examples" / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (["train.deepspeed=examples/configs/deepspeed/zero2.json"], "train.fsdp", "both set"),
        (["train.gradient_checkpointing=true"], "train.gradient_checkpointing", "train.fsdp.activation_checkpointing"),
        (["train.precision=fp16"], "train.precision", "use bf16"),
        (["train.precision=fp32", "train.fsdp.reduce_dtype=bf16"], "train.fsdp.reduce_dtype", "train.precision: bf16"),
        (["train.fsdp.layer_classes=[]"], "train.fsdp.layer_classes", "is empty"),
        (
            ["train.average_last=2", "train.save_total_limit=null", "train.save_steps=100"],
            "train.average_last",
            "state_dict_type: full",
        ),
    ],
)
def test_fsdp_conflicts_fail_at_config_time_naming_the_field(overrides, field, message):
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, ["train.fsdp={}", *overrides])
    assert any(path == field and message in text for path, text in error.value.problems), error.value


def test_full_checkpoints_allow_averaging_and_bf16_on_cpu_is_accepted():
    config = load_run_config(
        DEMO,
        [
            "train.fsdp.state_dict_type=full",
            "train.average_last=2",
            "train.save_total_limit=null",
            "train.save_steps=100",
        ]
        + ["train.precision=bf16"],
    )
    assert config.train.fsdp.state_dict_type == "full" and config.train.fsdp.reduce_dtype == "fp32"


def test_the_section_maps_onto_the_trainers_fsdp2_plugin(tmp_path):
    from transformers import TrainingArguments

    config = load_run_config(
        DEMO, ["train.fsdp.activation_checkpointing=true", "train.fsdp.reshard_after_forward=false"]
    )
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **fsdp_training_arguments(config.train.fsdp))
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["transformer_cls_names_to_wrap"] == "WontonDecoderLayer"
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT" and plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["activation_checkpointing"] is True and plugin["reshard_after_forward"] is False
    assert fsdp_training_arguments(None) == {}
    # bf16 parameters, fp32 gradient reduction (accelerate alone would reduce in bf16); fp32 runs cast nothing
    policy = mixed_precision_policy({"bf16": True}, "fp32")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision_policy({"bf16": True}, "bf16").reduce_dtype == torch.bfloat16
    assert mixed_precision_policy({"bf16": False, "fp16": False}, "fp32") is None


def test_fsdp_launches_that_cannot_shard_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    with pytest.raises(LaunchError, match="fsdp2_cpu.yaml"):  # plain python: no process group
        check_launch(load_run_config(DEMO, small(tmp_path, "train.fsdp={}")))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # the FSDP launcher config, but no train.fsdp section
    with pytest.raises(LaunchError, match=r"add `train.fsdp: \{\}`"):
        check_launch(load_run_config(DEMO, small(tmp_path)))
    check_launch(load_run_config(DEMO, small(tmp_path, "train.fsdp={}")))
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(LaunchError, match="DeepSpeed"):
        check_launch(load_run_config(DEMO, small(tmp_path, "train.fsdp={}")))


def test_the_shipped_launcher_configs_ask_for_fsdp2():
    for name, processes in (("fsdp2.yaml", 8), ("fsdp2_cpu.yaml", 2)):
        config = yaml.safe_load((ACCELERATE / name).read_text())
        assert config["distributed_type"] == "FSDP" and config["fsdp_config"] == {"fsdp_version": 2}
        assert config["num_processes"] == processes
    assert yaml.safe_load((ACCELERATE / "fsdp2_cpu.yaml").read_text())["use_cpu"] is True


@pytest.mark.slow  # the whole demo pipeline on 2 processes (~75 s on 2 cores)
def test_accelerate_launch_with_the_cpu_config_trains_the_demo_sharded(tmp_path):
    """The documented command: `accelerate launch --config_file fsdp2_cpu.yaml examples/pretrain.py ...`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / "fsdp2_cpu.yaml")]
    command += ["--main_process_port", str(free_port()), str(DRIVER), str(DEMO)]
    command += small(tmp_path, "train.fsdp={}", "train.max_steps=4", "train.global_batch_tokens=512")
    command += ["train.save_steps=2", "evaluation.eval_steps=2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "pretrain-demo"
    shards = sorted(p.name for p in (run_dir / "checkpoint-4" / "pytorch_model_fsdp_0").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard file per rank
    assert json.loads((run_dir / "checkpoint-4" / "COMPLETE").read_text())["world_size"] == 2
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")  # gathered into an ordinary directory
    assert sum(p.numel() for p in model.parameters()) > 0
    assert Path(run_dir / "final" / "modeling_wonton.py").is_file()
