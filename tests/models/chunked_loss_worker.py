"""Run by test_chunked_loss_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Each rank trains on its half of a batch with the chunked head; the reduced gradient (DDP) or the SGD update
(DeepSpeed ZeRO-2, gradients partitioned across the ranks) must equal one process's unchunked step on the
whole batch. Writes `rank<R>.json` with the largest difference per parameter group.
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wonton_hf import WontonConfig, WontonForCausalLM  # noqa: E402


def build() -> WontonForCausalLM:
    torch.manual_seed(0)
    config = WontonConfig(
        vocab_size=301,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        z_loss_coef=1e-2,
        max_z_loss_coef=3e-2,
        loss_chunk_size=7,
    )
    model = WontonForCausalLM(config).train()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    return model


def main(out: str, mode: str) -> None:
    if mode == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    else:
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build()
    reference = copy.deepcopy(model)
    reference.config.loss_chunk_size = 0
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 301, (4, 10), generator=generator)
    labels = ids.clone()
    labels[0, :6] = -100
    labels[3, 2:] = -100
    total = int((labels[:, 1:] != -100).sum())  # the step's token count, as the Trainer passes it
    mine = slice(rank * 2, rank * 2 + 2)

    reference(input_ids=ids, labels=labels).loss.backward()
    expected = {name: p.grad for name, p in reference.named_parameters()}

    if mode == "ddp":
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        # DDP averages gradients over ranks: scale by the world size, as the Trainer does with a global count.
        out_ = ddp(input_ids=ids[mine], labels=labels[mine], num_items_in_batch=total)
        (out_.loss * world).backward()
        got = {name: p.grad for name, p in model.named_parameters()}
    else:
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
            config={
                "train_micro_batch_size_per_gpu": 2,
                "gradient_accumulation_steps": 1,
                "zero_optimization": {"stage": 2},
                "zero_allow_untested_optimizer": True,
                "gradient_clipping": 0.0,  # DeepSpeed clips at 1.0 otherwise: the update would not be the gradient
                "bf16": {"enabled": False},
            },
        )
        out_ = engine(input_ids=ids[mine], labels=labels[mine], num_items_in_batch=total)
        engine.backward(out_.loss * world)
        engine.step()
        got = {name: before[name] - p.detach() for name, p in engine.module.named_parameters()}  # lr 1: the gradient
    assert out_.logits is None, "the chunked head must have run"
    diffs = {name: float((got[name] - expected[name]).abs().max()) for name in expected}
    scale = max(float(g.abs().max()) for g in expected.values())
    Path(out, f"rank{rank}.json").write_text(json.dumps({"diffs": diffs, "scale": scale}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
