"""Multi-node launch as on a cluster: two launcher invocations (node ranks 0 and 1, one process each) meeting at a
static rendezvous on 127.0.0.1, the way `examples/slurm/pretrain.sbatch` starts one torchrun per node."""

import json
import os
import signal
import socket
import subprocess
import sys

from tests.training.test_pretrain import DEMO, DRIVER, ROOT, small
from wonton_hf.checkpointing import verify_checkpoint


def test_two_nodes_with_one_process_each_train_and_checkpoint(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONWARNINGS": "ignore"}
    args = small(
        tmp_path, "train.max_steps=2", "train.save_steps=2", "train.global_batch_tokens=512", "evaluation=null"
    )
    nodes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"),
                *("--node_rank", str(node), "--rdzv_backend", "static"),
                *("--master_addr", "127.0.0.1", "--master_port", str(port)),
                *(str(DRIVER), str(DEMO), *args),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for process in nodes:
            outputs.append(process.communicate(timeout=400)[0])
    finally:
        for process in nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    checkpoint = tmp_path / "pretrain-demo" / "checkpoint-2"
    assert verify_checkpoint(checkpoint).ok
    assert json.loads((checkpoint / "COMPLETE").read_text())["world_size"] == 2
    assert (checkpoint / "rng_state_1.pth").is_file() and (checkpoint / "data_scheduler" / "rank1.json").is_file()
    assert "Data report (2 rank(s))" in outputs[0]
