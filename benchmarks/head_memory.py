"""Peak memory and time of one training step: Wonton's chunked head vs its unchunked fused loss vs GPT-NeoX.

What is measured: the peak resident memory (RSS) a training step (forward + backward, labels = inputs) adds over
the model at rest. Each configuration runs in a fresh subprocess so that peaks and allocator caches never mix:
the child builds the model, records its current RSS (`VmRSS`), resets the kernel's high-water mark
(`echo 5 > /proc/self/clear_refs` resets `VmHWM`), runs one step, and reports `VmHWM - baseline`: everything the
step allocates (activations, logits or loss buffers, parameter gradients) at its highest point. Then it times
`--steps` more steps (gradients set to None between them) and reports the fastest wall time and the fastest CPU
time of the process (on a shared machine other jobs only ever add time, so the minimum is the steadiest figure). Ratios are against the fp32 logits
(`tokens x vocab x 4` bytes). Linux only (procfs). Not a test: numbers depend on the machine.

    python benchmarks/head_memory.py                               # d128, 4 layers, V=139,776, 2 x 2,048 tokens
    python benchmarks/head_memory.py --preset wonton-125m --batch 1 --seq 2048
    python benchmarks/head_memory.py --sweep-tokens 1024 2048 4096 8192 --models chunked fused
    python benchmarks/head_memory.py --models chunked --chunks 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODELS = ("chunked", "fused", "gpt-neox")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import gc

    import torch
    from model_throughput import neox_like  # benchmarks/ is on sys.path: this script's folder

    from wonton_hf import WontonConfig, WontonForCausalLM

    torch.manual_seed(0)
    shape = dict(spec["shape"])
    config = WontonConfig.from_preset(
        spec["preset"],
        **shape,
        max_position_embeddings=max(spec["seq"], 512),
        attn_implementation="sdpa",
        loss_chunk_size=spec["chunk"] if spec["model"] == "chunked" else 0,
    )
    if spec["model"] == "gpt-neox":
        model = neox_like(config)  # the same GPT-NeoX as the throughput benchmark's baseline
    else:
        model = WontonForCausalLM(config)
    model.train()
    ids = torch.randint(4, config.vocab_size, (spec["batch"], spec["seq"]))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()

    gc.collect()
    baseline = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    step()
    peak = _rss_kib("VmHWM")
    walls, cpus = [], []
    for _ in range(spec["steps"]):
        model.zero_grad(set_to_none=True)
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "added_bytes": (peak - baseline) * 1024,
        "step_s": min(walls),
        "cpu_s": min(cpus),
        "params": sum(p.numel() for p in model.parameters()),
    }


def run(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="wonton-tiny")
    parser.add_argument("--vocab", type=int, default=None, help="default: 139,776 for wonton-tiny, else the preset's")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--sweep-tokens", type=int, nargs="*", default=None, help="tokens per micro-batch (batch 1)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024], help="loss_chunk_size of the chunked model")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import torch

    vocab = args.vocab or (139_776 if args.preset == "wonton-tiny" else None)
    shape = {"vocab_size": vocab} if vocab else {}
    sizes = [(1, t) for t in args.sweep_tokens] if args.sweep_tokens else [(args.batch, args.seq)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, vocab {vocab or '-'}")
    print(f"{'model':<16}{'tokens':>8}{'peak added':>13}{'x fp32 logits':>15}{'step s':>9}{'CPU s':>9}")
    for batch, seq in sizes:
        for model in args.models:
            for chunk in args.chunks if model == "chunked" else [0]:
                spec = dict(
                    preset=args.preset, shape=shape, batch=batch, seq=seq, model=model, chunk=chunk, steps=args.steps
                )
                result = run(spec)
                tokens = batch * seq
                logits = tokens * (vocab or _preset_vocab(args.preset)) * 4
                name = f"{model}/{chunk}" if model == "chunked" else model
                print(
                    f"{name:<16}{tokens:>8}{result['added_bytes'] / 1e9:>10.2f} GB{result['added_bytes'] / logits:>14.2f}x"
                    f"{result['step_s']:>9.2f}{result['cpu_s']:>9.2f}",
                    flush=True,
                )


def _preset_vocab(preset: str) -> int:
    from wonton_hf.models.wonton.configuration_wonton import WONTON_PRESETS

    return WONTON_PRESETS[preset]["vocab_size"]


if __name__ == "__main__":
    main()
