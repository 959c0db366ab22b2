"""Preemption: a real SIGTERM mid-run ends the step, writes a complete checkpoint on every rank, exits with 143;
`resume: auto` continues from that checkpoint (1 process, and 2 processes under torchrun)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.training.test_pretrain import DEMO, DRIVER, ROOT, small
from wonton_hf.checkpointing import list_checkpoints, verify_checkpoint

COMMON = ["train.max_steps=60", "train.save_steps=1000", "tokenizer.vocab_size=384"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONWARNINGS": "ignore"}


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _signal_after(command, progress: Path, run_dir: Path, at_step=2, sig=signal.SIGTERM, whole_group=False):
    """Start `command`, send `sig` once step `at_step` is done; returns (process, stdout+stderr, seconds from the
    signal to the COMPLETE marker of the preemption checkpoint)."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.time() + 400
    while not (progress.is_file() and progress.read_text() and int(progress.read_text()) >= at_step):
        assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.05)
    sent = time.time()
    os.killpg(process.pid, sig) if whole_group else os.kill(process.pid, sig)
    marked = None
    while process.poll() is None and time.time() < deadline:
        if marked is None and any((p / "COMPLETE").is_file() for _, p in list_checkpoints(run_dir)):
            marked = time.time() - sent
        time.sleep(0.02)
    output = process.communicate(timeout=60)[0]
    if marked is None and any((p / "COMPLETE").is_file() for _, p in list_checkpoints(run_dir)):
        marked = time.time() - sent
    return process, output, marked


def _check_preemption_checkpoint(run_dir: Path, ranks: int) -> int:
    checkpoints = list_checkpoints(run_dir)
    assert len(checkpoints) == 1, checkpoints
    step, checkpoint = checkpoints[0]
    assert 2 <= step < 60 and verify_checkpoint(checkpoint).ok
    assert json.loads((checkpoint / "COMPLETE").read_text())["world_size"] == ranks
    assert sorted(p.name for p in (checkpoint / "data_scheduler").glob("rank*.json")) == [
        f"rank{r}.json" for r in range(ranks)
    ]
    return step


def test_sigterm_on_one_process_checkpoints_exits_143_and_resumes(tmp_path):
    progress = tmp_path / "progress"
    args = small(tmp_path, *COMMON)
    process, output, seconds = _signal_after(
        [sys.executable, str(DRIVER), f"--progress={progress}", str(DEMO), *args], progress, tmp_path / "pretrain-demo"
    )
    assert process.returncode == 143, output[-3000:]
    step = _check_preemption_checkpoint(tmp_path / "pretrain-demo", ranks=1)
    assert f"Preempted: {tmp_path / 'pretrain-demo' / f'checkpoint-{step}'} is complete" in output
    assert "Preemption (SIGTERM): step" in output
    print(f"SIGTERM -> COMPLETE on disk: {seconds:.2f} s (1 process)")
    resumed = subprocess.run(
        [sys.executable, str(DRIVER), str(DEMO), *small(tmp_path, *COMMON[1:], f"train.max_steps={step + 2}")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint-{step} (step {step}, the newest complete checkpoint)" in resumed.stderr
    state = json.loads((tmp_path / "pretrain-demo" / f"checkpoint-{step + 2}" / "trainer_state.json").read_text())
    assert state["global_step"] == step + 2


def test_sigterm_on_two_processes_checkpoints_on_every_rank(tmp_path):
    """SIGTERM to the whole process group (what SLURM's scancel / preemption does): torchrun and both workers."""
    progress = tmp_path / "progress"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_port()),
        str(DRIVER),
        f"--progress={progress}",
        str(DEMO),
        *small(tmp_path, *COMMON, "train.global_batch_tokens=512"),
    ]
    process, output, seconds = _signal_after(command, progress, tmp_path / "pretrain-demo", whole_group=True)
    assert process.returncode != 0 and "Preempted:" in output, output[-3000:]  # torchrun reports its own code
    _check_preemption_checkpoint(tmp_path / "pretrain-demo", ranks=2)
    print(f"SIGTERM -> COMPLETE on disk: {seconds:.2f} s (2 processes)")
