"""Run by test_tensor_parallel.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Loads a saved tiny Wonton twice in the same processes, with `tp_plan="auto"` and without, and compares the logits,
the gradients of a loss (the sharded ones gathered to full tensors) and greedy `generate`. Rank 0 writes
`result.json` with the largest differences.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from transformers import AutoModelForCausalLM  # noqa: E402

import wonton_hf  # noqa: E402, F401  (registers Wonton with the Auto classes)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def main(model_dir: str, out: str, static: bool) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sharded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, tp_plan="auto")
    vocab = reference.config.vocab_size
    input_ids = torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(1))
    result = {"tp_size": sharded.tp_size}

    with torch.no_grad():
        ref_logits = reference(input_ids).logits
        tp_logits = sharded(input_ids).logits
    result["logits"] = (ref_logits - tp_logits).abs().max().item()
    result["logits_scale"] = ref_logits.abs().max().item()

    # Backward: the same loss on both; the sharded gradients are gathered to full tensors.
    for model in (reference, sharded):
        model.train()  # dropout is 0 in the tiny config
        model(input_ids, labels=input_ids).loss.backward()
    tp_params = dict(sharded.named_parameters())
    grads = {}
    for name, param in reference.named_parameters():
        tp_grad = tp_params[name].grad
        grads[name] = float("inf") if tp_grad is None else (param.grad - _full(tp_grad)).abs().max().item()
    result["grads"] = grads
    result["grads_scale"] = max(p.grad.abs().max().item() for p in reference.parameters())

    for model in (reference, sharded):
        model.eval()
    prompt = input_ids[:, :5]
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        ref_tokens = reference.generate(prompt, **kwargs)
        tp_tokens = sharded.generate(prompt, **kwargs)
    result["generate_equal"] = bool(torch.equal(ref_tokens, tp_tokens))
    if static:  # a static cache is sized per rank from the plan: each rank holds its heads only
        with torch.no_grad():
            static_tokens = sharded.generate(prompt, cache_implementation="static", **kwargs)
        result["generate_static_equal"] = bool(torch.equal(ref_tokens, static_tokens))

    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], static=sys.argv[3:] == ["static"])
