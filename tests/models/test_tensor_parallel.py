"""Tensor parallelism: `from_pretrained(dir, tp_plan="auto")` on 2 CPU processes (gloo) equals the unsharded model.

The fused `qkv_proj` stacks `[q; k; v]` along its output, so a plain colwise shard would hand rank 0 all of q and
half of k; the plan's `wonton_packed_qkv_colwise` style gives each rank its heads of each of q, k and v.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.launch import free_port, run_process_group
from wonton_hf import WontonConfig, WontonForCausalLM


def _save_tiny(model_dir: Path, position_embedding_type: str) -> None:
    torch.manual_seed(0)
    config = WontonConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        position_embedding_type=position_embedding_type,
        qk_layernorm=True,
        loss_chunk_size=8,  # the default is on: under TP the model falls back to the full logits
        initializer_range=0.1,  # large enough that a misplaced shard shows in the logits and in `generate`
    )
    model = WontonForCausalLM(config)
    with torch.no_grad():  # non-trivial biases and norms, so a misplaced shard of any of them shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(model_dir)


def _run_tp(model_dir: Path, out: Path, static: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).with_name("tensor_parallel_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), str(worker), str(model_dir), str(out)] + (
        ["static"] if static else []
    )
    result = run_process_group(command, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("position_embedding_type", ["rope", "learned"])
def test_tp_auto_matches_the_unsharded_model(tmp_path, position_embedding_type):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    model_dir = tmp_path / "model"
    _save_tiny(model_dir, position_embedding_type)
    # a static cache (sized per rank) once: it costs a third of a run
    result = _run_tp(model_dir, tmp_path / "result.json", static=position_embedding_type == "rope")
    print(json.dumps(result, indent=1))
    assert result["tp_size"] == 2
    assert result["logits"] <= 1e-5 * max(result["logits_scale"], 1.0), result["logits"]
    worst = {name: diff for name, diff in result["grads"].items() if diff > 1e-5 * max(result["grads_scale"], 1.0)}
    assert not worst, worst
    assert result["generate_equal"]
    assert result.get("generate_static_equal", True)
