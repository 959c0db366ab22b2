"""The main job end to end: real Trainer, real tokenizer trained at start-up, real data scheduler."""

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import wonton_hf  # noqa: F401
from wonton_hf.training import LaunchError, build_trainer, check_launch, launch_checks, load_run_config, run

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"
DRIVER = Path(__file__).with_name("pretrain_driver.py")
SMALL = [
    "data.seq_len=64",
    "train.per_device_batch_size=4",
    "train.global_batch_tokens=256",
    "tokenizer.vocab_size=512",
    "tokenizer.max_documents_per_source=30",
    "train.logging_steps=1",
    "optimizer.warmup_steps=2",
    "train.report_to=[]",
    # the demo evaluates (every 60 steps): here every 5 steps on 2 windows per source (and at the last step)
    "evaluation.eval_steps=5",
    "evaluation.windows_per_source=2",
]


def small(tmp_path, *extra):
    return SMALL + [f"output_dir={tmp_path}", *extra]


def test_demo_trains_saves_and_the_result_loads_and_generates(tmp_path, capsys):
    config = load_run_config(DEMO, small(tmp_path, "train.max_steps=12", "train.save_steps=6"))
    prepared = build_trainer(config)
    final = run(prepared)
    console = capsys.readouterr().out
    losses = [e["loss"] for e in prepared.trainer.state.log_history if "loss" in e]
    # One console line per log event (not the ~90-key dict); the full set is still in trainer_state.json.
    lines = [line for line in console.splitlines() if line.lstrip().startswith("step ")]
    assert len(lines) == 12 and all(len(line) < 200 for line in lines[1:]), console
    assert lines[0].lstrip().startswith("step  1/12 | loss ") and " | mix en 0.08 " in lines[0]
    assert "{'loss'" not in console and "finished: 12 steps" in console
    # The end-of-run data report, summed over ranks, agrees with the last log event's counts.
    report = json.loads((config.run_dir / "data_report.json").read_text())
    last = [e for e in prepared.trainer.state.log_history if "loss" in e][-1]
    assert {n: s["tokens"] for n, s in report["sources"].items()} == {
        k.split("/")[-1]: v for k, v in last.items() if k.startswith("data/tokens/")
    }
    assert report["totals"]["tokens"] == 12 * 256 and "Data report (1 rank(s)):" in console
    assert len(losses) == 12 and losses[-1] < losses[0]
    steps = [e for e in prepared.trainer.state.log_history if "loss" in e]
    # The per-source loss is in every log event (for the sources that had tokens since the previous one: a step
    # here is 256 tokens, so a 16% source can be absent from one), and over the run every source shows up.
    assert all(any(key.startswith("data/loss/") for key in e) for e in steps), steps
    assert {"data/loss/en", "data/loss/code"} <= {key for e in steps for key in e}
    assert any("stability/max_z_loss" in e for e in prepared.trainer.state.log_history)
    # In-loop evaluation at steps 5, 10 and the last: one log event each, one console line each.
    evals = [e for e in prepared.trainer.state.log_history if "eval_bpb" in e]
    assert [e["step"] for e in evals] == [5, 10, 12]
    names = [s.name for s in config.data.sources]
    assert all({f"eval_{n}_loss" for n in names} | {f"eval_{n}_bpb" for n in names} <= set(e) for e in evals)
    assert not any(k.startswith("data/") for e in evals for k in e)  # the data counts stay on training events
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    eval_lines = [line for line in console.splitlines() if line.lstrip().startswith("eval step")]
    assert len(eval_lines) == 3 and all(len(line) < 200 for line in eval_lines), eval_lines
    assert "held-out loss" in eval_lines[0] and " en " in eval_lines[0]
    assert (config.run_dir / "checkpoint-12" / "COMPLETE").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("The weather", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert (config.run_dir / "run_config.yaml").is_file() and (
        config.run_dir / "tokenizer" / "tokenizer.json"
    ).is_file()


def _losses(run_dir: Path) -> dict[int, float]:
    state = json.loads((run_dir / "checkpoint-12" / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def _data(run_dir: Path) -> dict[int, dict[str, float]]:
    state = json.loads((run_dir / "checkpoint-12" / "trainer_state.json").read_text())
    return {
        e["step"]: {k: v for k, v in e.items() if k.startswith("data/tokens")}
        for e in state["log_history"]
        if "loss" in e
    }


def _drive(args, env=None, check=True):
    return subprocess.run(
        [sys.executable, str(DRIVER), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_kill_9_then_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    common = ["train.max_steps=12", "train.save_steps=3", "train.save_total_limit=null"]
    reference = _drive([str(DEMO), *small(tmp_path / "ref", *common)])
    assert reference.returncode == 0, reference.stderr[-3000:]
    kill_at = random.Random().randint(4, 11)  # killed in on_step_end: before that step's checkpoint is written
    # BPE training breaks count ties in hash order (tokenizers' word map), so both runs share one tokenizer
    common.append(f"tokenizer.path={tmp_path / 'ref' / 'pretrain-demo' / 'tokenizer'}")
    killed = _drive([f"--kill-at={kill_at}", str(DEMO), *small(tmp_path / "run", *common)])
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = _drive([str(DEMO), *small(tmp_path / "run", *common)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = ((kill_at - 1) // 3) * 3  # >= 3: killed at step 4 or later
    assert (
        f"Resuming from {tmp_path / 'run' / 'pretrain-demo' / f'checkpoint-{resumed_from}'} (step {resumed_from}"
        in resumed.stderr
    )
    ref_losses, run_losses = _losses(tmp_path / "ref" / "pretrain-demo"), _losses(tmp_path / "run" / "pretrain-demo")
    assert sorted(run_losses) == list(range(1, 13))
    for step in range(1, 13):
        assert run_losses[step] == pytest.approx(ref_losses[step], rel=1e-6, abs=1e-6), (step, kill_at)
    assert _data(tmp_path / "run" / "pretrain-demo") == _data(tmp_path / "ref" / "pretrain-demo")


def test_two_cpu_processes_train_with_ddp(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(DRIVER),
            str(DEMO),
            *small(tmp_path, "train.max_steps=4", "train.global_batch_tokens=512", "evaluation.eval_steps=2"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "pretrain-demo" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (tmp_path / "pretrain-demo" / "checkpoint-4" / "data_scheduler" / "rank1.json").is_file()
    report = json.loads((tmp_path / "pretrain-demo" / "data_report.json").read_text())
    assert report["ranks"] == 2 and report["totals"]["tokens"] == 4 * 512  # both ranks' windows, summed
    assert result.stdout.count("Data report (2 rank(s))") == 1  # printed once, by rank 0
    # the held-out evaluation, sharded over the 2 ranks by the Trainer (18 windows: the last batch is padded with
    # repeats), equals the same evaluation of the checkpoint in one process
    logged = [e for e in state["log_history"] if "eval_bpb" in e]
    assert [e["step"] for e in logged] == [2, 4]
    args = small(tmp_path, "train.max_steps=4", "train.global_batch_tokens=512", "evaluation.eval_steps=2")
    assert_same_eval(logged[-1], recomputed_eval(args, tmp_path / "pretrain-demo" / "checkpoint-4"))


def recomputed_eval(config_args: list[str], checkpoint: Path) -> dict[str, float]:
    """The held-out metrics of a checkpoint, recomputed in this one process (no Trainer, no ranks)."""
    from torch.utils.data import DataLoader

    from wonton_hf.data import PackedWindowCollator
    from wonton_hf.data.callbacks.held_out import HeldOutEvaluation
    from wonton_hf.training.pretrain import build_eval_dataset, build_scheduler, build_sources

    config = load_run_config(DEMO, config_args)
    tokenizer = AutoTokenizer.from_pretrained(config.run_dir / "tokenizer")
    args = type("Args", (), {"per_device_train_batch_size": config.train.per_device_batch_size})()
    args.gradient_accumulation_steps = 1
    scheduler = build_scheduler(config, build_sources(config), tokenizer, args)
    evaluation = HeldOutEvaluation(build_eval_dataset(config, scheduler))
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    evaluation.on_train_begin(None, None, None, model=model)
    with torch.no_grad():
        for batch in DataLoader(evaluation.dataset, batch_size=3, collate_fn=PackedWindowCollator()):
            batch.pop("source_ids")
            model(**batch)
    return evaluation.metrics()


def assert_same_eval(logged: dict, recomputed: dict) -> None:
    keys = [k for k in recomputed if k.startswith("eval_")]
    assert len(keys) > 4 and set(keys) <= set(logged)
    for key in keys:
        assert logged[key] == pytest.approx(recomputed[key], abs=2e-4), key


def test_deepspeed_without_a_launcher_is_refused_with_the_command_to_use(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = load_run_config(DEMO, small(tmp_path, f"train.deepspeed={ROOT / 'examples/configs/deepspeed/zero2.json'}"))
    with pytest.raises(LaunchError, match="accelerate launch --config_file"):
        check_launch(config)


def test_deepspeed_with_accelerate_cpu_mode_is_refused_naming_the_variable(tmp_path, monkeypatch):
    """Under torchrun with ACCELERATE_USE_CPU=true (the DDP-on-CPU setting) DeepSpeed failed inside the Trainer
    with an AttributeError on AcceleratorState."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    config = load_run_config(DEMO, small(tmp_path, f"train.deepspeed={ROOT / 'examples/configs/deepspeed/zero2.json'}"))
    with pytest.raises(LaunchError, match="Unset ACCELERATE_USE_CPU"):
        check_launch(config)
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    check_launch(config)


def test_accelerate_cpu_with_two_processes_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(
        launch_checks,
        "_parent_command_line",
        lambda: ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--num_processes", "2", "--cpu", "x.py"],
    )
    with pytest.raises(LaunchError, match="multi_cpu.yaml"):
        check_launch(load_run_config(DEMO, small(tmp_path)))


def test_deepspeed_zero2_on_two_cpu_processes_shards_the_optimizer(tmp_path):
    """The GPU recipe (accelerate + DeepSpeed ZeRO-2 + zero2.json with "auto" values) run on 2 CPU processes."""
    downstream = []  # lm-eval on the model in memory, on rank 0 while rank 1 waits (where the `eval` extra is in)
    if importlib.util.find_spec("lm_eval") is not None:
        from tests.evaluation.fixtures import write_offline_data

        offline = write_offline_data(tmp_path / "offline")
        downstream = [
            f"downstream={{tasks: [xnli_de], every_n_steps: 3, at_save: false, limit: 2, data_dir: {offline}}}"
        ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "examples/configs/accelerate/deepspeed_zero2_cpu.yaml"),
            "--main_process_port",
            "29534",
            str(DRIVER),
            str(DEMO),
            *small(
                tmp_path,
                "train.max_steps=4",
                "train.global_batch_tokens=512",
                "train.save_steps=2",
                "train.average_last=2",
                "evaluation.eval_steps=2",
                f"train.deepspeed={ROOT / 'examples/configs/deepspeed/zero2.json'}",
                *downstream,
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "pretrain-demo" / "checkpoint-4"
    shards = sorted((checkpoint / "global_step4").glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert [s.name[:14] for s in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"]
    # each rank holds its half of the fp32 Adam state (partitions differ by at most padding)
    states = [torch.load(s, map_location="cpu", weights_only=False)["optimizer_state_dict"] for s in shards]
    sizes = [sum(t.numel() for t in st["single_partition_of_fp32_groups"]) for st in states]
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(checkpoint).parameters())
    assert abs(sizes[0] - sizes[1]) <= 16 and sum(sizes) >= n_params
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    logged = [e for e in state["log_history"] if "eval_bpb" in e]
    assert [e["step"] for e in logged] == [2, 4]
    if downstream:
        scored = [e for e in state["log_history"] if "eval_downstream/xnli_de/acc" in e]
        assert [e["step"] for e in scored] == [3] and 0 <= scored[0]["eval_downstream/xnli_de/acc"] <= 1
    args = small(tmp_path, "train.max_steps=4", "train.global_batch_tokens=512", "evaluation.eval_steps=2")
    assert_same_eval(logged[-1], recomputed_eval(args, checkpoint))
    # ZeRO-2 partitions the optimizer state, not the weights: each checkpoint holds the full model, and
    # `train.average_last` averaged checkpoints 2 and 4 into a model that loads
    averaged = tmp_path / "pretrain-demo" / "final-averaged"
    assert json.loads((averaged / "averaging.json").read_text())["steps"] == [2, 4]
    parts = [AutoModelForCausalLM.from_pretrained(checkpoint.with_name(f"checkpoint-{s}")).state_dict() for s in (2, 4)]
    mean = AutoModelForCausalLM.from_pretrained(averaged).state_dict()
    assert all(torch.allclose(mean[k], (parts[0][k] + parts[1][k]) / 2, atol=1e-6) for k in mean)
