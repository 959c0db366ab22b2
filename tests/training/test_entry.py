"""The example scripts and the CLI as a user meets them: one message, exit code 2, before any heavy import.

Fast is asserted as behaviour, not wall-clock (a loaded CI machine makes any time bound flaky): the checks run with
`torch` and `transformers` made unimportable, so a check path that imports either fails with their message.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = ROOT / "examples" / "pretrain.py"
SFT = ROOT / "examples" / "sft.py"
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
HEAVY = ("torch", "transformers")


@pytest.fixture(scope="module")
def light_env(tmp_path_factory):
    """ENV with stand-ins for torch and transformers first on the path: importing either raises."""
    blockers = tmp_path_factory.mktemp("no-heavy-imports")
    for name in HEAVY:
        (blockers / name).mkdir()
        (blockers / name / "__init__.py").write_text(
            f"raise ImportError('the config check imported {name}: it must stay light')\n", encoding="utf-8"
        )
    return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(blockers), ENV.get("PYTHONPATH")]))}


# The bad inputs of issue 15, each as the user typed it, with the field path the message must name.
BAD_CONFIGS = [
    (["optimizer.learning_rate=abc"], "optimizer.learning_rate"),
    (["train.max_steps=abc"], "train.max_steps"),
    (["train.max_steps=2.5"], "train.max_steps"),
    (["monitors.stability.every_n_step=5"], "monitors.stability.every_n_step"),
    (["data.feedback.update_evry=5"], "data.feedback.update_evry"),
    (["data.schedule={points: [{at: 0, weights: {en: 1}}], unit: epochs}"], "data.schedule.unit"),
    (["data.sources[3].on_exhausted=stop"], "data.sources[3].on_exhausted"),
    (["train.use_cpu=maybe"], "train.use_cpu"),
    (["data.sources[2].wieght=3"], "data.sources[2].wieght"),
    (["model.preset=wonton-7B"], "model.preset"),
    (["evaluation.sources=[en, klingon]"], "evaluation.sources[1]"),
    (["evaluation.eval_steps=301"], "evaluation.eval_steps"),
    (["evaluation.held_out_share=0"], "evaluation.held_out_share"),
    (["evaluation.held_out_share=1"], "evaluation.held_out_share"),
    (["evaluation.feedback_from_held_out=true"], "evaluation.feedback_from_held_out"),
    (["downstream={tasks: [xnli_dee]}"], "downstream.tasks[0]"),
]


def _run(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("overrides", "path"), BAD_CONFIGS, ids=[b[1] for b in BAD_CONFIGS])
def test_each_bad_config_is_one_message_naming_the_field_exit_2_before_any_work(overrides, path, tmp_path, light_env):
    result = _run(PRETRAIN, f"output_dir={tmp_path}", *overrides, env=light_env)
    assert result.returncode == 2, result.stderr
    assert f"  {path}: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("pretrain.py: Invalid run config (1 problem):")
    assert not any(tmp_path.iterdir()), "nothing may be written (no tokenizer, no run directory)"


def test_valid_exponent_learning_rate_passes_the_check(light_env):
    result = _run(PRETRAIN, "--check", "optimizer.learning_rate=1e-3", env=light_env)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_sft_config_errors_are_one_message_too(tmp_path, light_env):
    result = _run(
        SFT,
        f"output_dir={tmp_path}",
        "train.epochs=0",
        "data.sources[0].format=gpt5",
        "model.trust_remote_code=maybe",
        "monitors.stability.every_n_step=2",
        env=light_env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for path in (
        "train.epochs",
        "data.sources[0].format",
        "model.trust_remote_code",
        "monitors.stability.every_n_step",
    ):
        assert f"  {path}: " in result.stderr, result.stderr


def test_help_config_prints_every_field():
    result = _run(PRETRAIN, "--help-config")
    assert result.returncode == 0
    assert "data.sources[*].weight (float, default: 1.0) - Unnormalised mixture weight" in result.stdout
    result = _run(SFT, "--help-config")
    assert "model.trust_remote_code (bool, default: False)" in result.stdout


def test_launch_checks_first_and_does_not_start_accelerate_on_a_bad_config(tmp_path):
    accelerate_config = ROOT / "examples" / "configs" / "accelerate" / "multi_cpu.yaml"
    result = _run(PRETRAIN, "--launch", str(accelerate_config), "train.max_steps=abc")
    assert result.returncode == 2 and "train.max_steps" in result.stderr
    assert "CalledProcessError" not in result.stderr and "starting: accelerate launch" not in result.stdout


def test_wonton_hf_help_is_fast_and_imports_nothing_heavy(light_env):
    result = subprocess.run(
        [sys.executable, "-m", "wonton_hf.cli", "--help"], capture_output=True, text=True, env=light_env
    )
    assert result.returncode == 0 and "plot-run" in result.stdout and "tokenizer" in result.stdout, result.stderr
    code = (
        "import sys, wonton_hf.cli as c; c.build_parser(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False",
        "False",
    ]


def test_the_cli_table_lists_what_the_modules_register():
    import argparse
    import importlib

    from wonton_hf.cli import SUBCOMMANDS

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    for module in dict.fromkeys(m for m, _ in SUBCOMMANDS.values()):
        importlib.import_module(module).add_subcommands(subparsers)
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    assert registered == {name: help_text for name, (_, help_text) in SUBCOMMANDS.items()}


def test_launch_hands_a_valid_config_to_accelerate(tmp_path):
    accelerate_config = ROOT / "examples" / "configs" / "accelerate" / "single_cpu.yaml"
    small = [
        "data.seq_len=64",
        "train.per_device_batch_size=4",
        "train.global_batch_tokens=256",
        "train.max_steps=2",
        "evaluation=null",
        "tokenizer.vocab_size=512",
        "tokenizer.max_documents_per_source=20",
        "train.logging_steps=1",
        "optimizer.warmup_steps=1",
        "train.report_to=[]",
        "monitors.stability=null",
        f"output_dir={tmp_path}",
    ]
    result = _run(PRETRAIN, "--launch", str(accelerate_config), *small)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting: accelerate launch --config_file" in result.stdout
    assert result.stdout.count("step 1/2 | loss ") == 1 and "Data report (1 rank(s))" in result.stdout
    assert (tmp_path / "pretrain-demo" / "final" / "config.json").is_file()
