"""Training-step and cached-generation throughput of WontonForCausalLM against GPT-NeoX of the same shape.

Baseline: transformers' `GPTNeoXForCausalLM` (sequential residual, full rotary, biases), measured in the same
process, interleaved with ours, median of several rounds. Wonton runs as shipped (max-z loss on, its default).
Prints ratios (ours / baseline); > 1 means Wonton is faster. Beside wall-clock throughput it prints the
ratio of process CPU time per token, the steadier figure on a machine other jobs share. Not a test:
wall-clock never gates CI.

    python benchmarks/model_throughput.py [--batch 8 --seq 256 --rounds 7 --steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from wonton_hf import WontonConfig, WontonForCausalLM


def neox_like(config: WontonConfig) -> GPTNeoXForCausalLM:
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act="gelu",
            max_position_embeddings=config.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
            use_parallel_residual=False,
            tie_word_embeddings=False,
            attention_bias=True,
            attn_implementation="sdpa",
        )
    )


def train_tokens_per_second(model, ids: torch.Tensor, steps: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process)"""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return ids.numel() * steps / (time.perf_counter() - start), ids.numel() * steps / (time.process_time() - cpu)


@torch.no_grad()
def generate_tokens_per_second(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    model.eval()
    start, cpu = time.perf_counter(), time.process_time()
    out = model.generate(
        prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0
    )
    generated = (out.shape[1] - prompt.shape[1]) * out.shape[0]
    return generated / (time.perf_counter() - start), generated / (time.process_time() - cpu)


def compare(name: str, measure, ours, theirs, rounds: int) -> float:
    measure(ours), measure(theirs)  # warm-up: allocator, kernels, first-call overheads
    ours_s, theirs_s = [], []
    for _ in range(rounds):
        ours_s.append(measure(ours))
        theirs_s.append(measure(theirs))
    wall = [statistics.median(x[0] for x in runs) for runs in (ours_s, theirs_s)]
    cpu = [statistics.median(x[1] for x in runs) for runs in (ours_s, theirs_s)]
    ratio = wall[0] / wall[1]
    print(
        f"{name:<44} wonton {wall[0]:>9.0f} tok/s   gpt-neox {wall[1]:>9.0f} tok/s   ratio {ratio:.3f}x   "
        f"(CPU time: {cpu[0] / cpu[1]:.3f}x)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, wonton-tiny shape, sdpa, "
        f"batch {args.batch} x {args.seq}"
    )
    ids = torch.randint(4, 8192, (args.batch, args.seq))
    prompt = ids[:4, :32]
    for qk_layernorm in (False, True):
        config = WontonConfig.from_preset("wonton-tiny", qk_layernorm=qk_layernorm, attn_implementation="sdpa")
        ours, theirs = WontonForCausalLM(config), neox_like(config)
        label = f"train step, QK-LayerNorm {'on' if qk_layernorm else 'off'}"
        compare(label, lambda m: train_tokens_per_second(m, ids, args.steps), ours, theirs, args.rounds)
    for qk_layernorm in (False, True):
        config = WontonConfig.from_preset("wonton-tiny", qk_layernorm=qk_layernorm, attn_implementation="sdpa")
        compare(
            f"generation with KV cache, QK-LayerNorm {'on' if qk_layernorm else 'off'}",
            lambda m: generate_tokens_per_second(m, prompt, args.new_tokens),
            WontonForCausalLM(config),
            neox_like(config),
            args.rounds,
        )


if __name__ == "__main__":
    main()
