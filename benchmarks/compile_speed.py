"""Compiled against eager training steps on CPU, wonton-tiny and wonton-125m shapes, in one run.

Three ways to run the same step (forward + backward + AdamW) on packed rows (document restarts every few hundred
tokens, the document mask on): `eager`; `layers`, each decoder layer compiled in place (`train.compile`,
`wonton_hf.training.compilation`); `model`, the whole model in `torch.compile` (what `TrainingArguments
(torch_compile=True)` does). Each starts from the same weights. The first steps, which compile, are reported
apart (compile time = first two steps minus two steady steps); then the variants take turns, one step each per
round, and the median over rounds is kept, so load from other jobs on a shared machine falls on all of them
alike. Beside wall-clock it prints CPU time per step (this process), the steadier figure on a shared machine.
Not a test: wall-clock never gates CI.

    python benchmarks/compile_speed.py [--presets wonton-tiny wonton-125m --rounds 7 --backend inductor]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch._dynamo

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.training.compilation import compile_decoder_layers

SHAPES = {
    # preset: (rows, tokens per row, document length); the vocabulary is the preset's own
    "wonton-tiny": (8, 256, 100),
    "wonton-125m": (2, 512, 200),
}


def packed_batch(config: WontonConfig, rows: int, length: int, document: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, config.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0))
    positions = (torch.arange(length) % document).repeat(rows, 1)  # a new document every `document` tokens
    return {"input_ids": ids, "labels": ids, "position_ids": positions}


class Variant:
    def __init__(self, name: str, model: WontonForCausalLM, batch: dict[str, torch.Tensor]) -> None:
        self.name, self.model, self.batch = name, model, batch
        self.forward = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.first = 0.0
        self.loss = float("nan")

    def step(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        loss = self.forward(**self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss = float(loss.detach())
        return time.perf_counter() - wall, time.process_time() - cpu


def build(preset: str, backend: str) -> list[Variant]:
    rows, length, document = SHAPES[preset]
    torch.manual_seed(0)
    config = WontonConfig.from_preset(preset, use_cache=False, attn_implementation="sdpa")
    base = WontonForCausalLM(config).train()
    batch = packed_batch(config, rows, length, document)
    variants = [Variant("eager", base, batch)]
    layers = copy.deepcopy(base)
    compile_decoder_layers(layers, backend=backend)
    variants.append(Variant("layers", layers, batch))
    whole = Variant("model", copy.deepcopy(base), batch)
    whole.forward = torch.compile(whole.model, backend=backend)
    variants.append(whole)
    return variants


def measure(preset: str, backend: str, rounds: int) -> list[dict]:
    torch._dynamo.reset()
    variants = build(preset, backend)
    for variant in variants:  # the first two steps compile (forward and backward) or warm the allocator
        variant.first = sum(variant.step()[0] for _ in range(2))
    for _ in range(rounds):
        for variant in variants:
            wall, cpu = variant.step()
            variant.wall.append(wall)
            variant.cpu.append(cpu)
    eager = variants[0]
    rows = []
    for variant in variants:
        wall, cpu = statistics.median(variant.wall), statistics.median(variant.cpu)
        rows.append(
            {
                "preset": preset,
                "variant": variant.name,
                "step_s": wall,
                "cpu_s": cpu,
                "speedup": statistics.median(eager.wall) / wall,
                "cpu_speedup": statistics.median(eager.cpu) / cpu,
                "compile_s": max(0.0, variant.first - 2 * wall) if variant is not eager else 0.0,
                "loss_after": variant.loss,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {args.backend}, sdpa, packed rows")
    print(
        f"{'shape':<12} {'variant':<7} {'tokens':>7} {'step s':>7} {'vs eager':>8} {'CPU vs eager':>12} {'compile s':>9} {'loss':>8}"
    )
    for preset in args.presets:
        rows, length, _ = SHAPES[preset]
        for row in measure(preset, args.backend, args.rounds):
            print(
                f"{preset:<12} {row['variant']:<7} {rows * length:>7} {row['step_s']:>7.3f} {row['speedup']:>7.2f}x "
                f"{row['cpu_speedup']:>11.2f}x {row['compile_s']:>9.1f} {row['loss_after']:>8.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
