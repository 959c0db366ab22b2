"""The GPU check: one command, one table. What the CPU machines cannot measure, on whatever CUDA machine is at hand.

    python benchmarks/gpu_check.py [--quick] [--output gpu_check.json] [--budget-s 480] [--work-dir DIR]

Rows, in this order (the most telling first, so a time budget cuts the least telling):

1. `attention`: flash-attention 2 varlen, sdpa, flex and eager attention with the document mask on packed rows
   (two rows of 2,048 tokens, five documents; wonton-1b's width and head_dim, two layers, bf16). Each backend's
   logits against eager attention in fp32 (max |diff| / max |logit| <= 3e-2, bf16's rounding), and no
   cross-document attention: the first document's tokens are replaced and every other document's logits must
   stay put (<= 1e-3 of the logit scale; any leak moves them by O(1)). flash gets the documents' `cu_seq_lens`
   from the collator, as pretraining passes them.
2. `1b step`: one bf16 training step (forward, backward, fused AdamW; fp32 weights under bf16 autocast as the
   Trainer's `bf16=True`) of `wonton-1b` on packed rows of 2,048 tokens, per attention backend; then per-layer
   `torch.compile` (`train.compile`) and float8 (`train.float8`, torchao through accelerate's own conversion) on
   the fastest backend. tokens/s over the timed steps after two warm-up steps, MFU, peak memory.
3. `launcher`: the real pretraining path (`build_trainer` from a run config, the demo's data and a tokenizer trained
   once) under `accelerate launch` with the repo's configs on all GPUs present: ZeRO-2
   (`deepspeed_zero2.yaml`) and FSDP2 (`fsdp2.yaml`, skipped while that file is absent), each without and with
   compile (and float8 where supported). tokens/s and MFU are the `ThroughputMonitor`'s own log values (median of
   the steps after the first two), peak memory the largest rank's.
4. `7b memory`: `wonton-7b` at micro-batch 1-4, estimated on the meta device (`memory_estimate`) and, where the
   estimate fits the free memory, measured in one real step.

MFU everywhere is `flops_per_token` of `wonton_hf.callbacks.throughput` (6 N + 12 L d T, PaLM appendix B) over the
device's dense bf16 peak (`PEAK_TFLOPS_BF16`), the same count the ThroughputMonitor logs during training.

Every row runs in its own try/except: a failure is a row with status `error` and the exception, and the check
goes on. Without a CUDA device the script says so and exits 0. `--quick` keeps the first backend's step rows, the
launchers without compile and micro-batches 1-2 (about 3 minutes on one H100); the full check is sized to stay
under ~8 minutes on one H100/H200 (`--budget-s`: rows that would start after it are recorded as skipped).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, also in the launched workers

from wonton_hf.callbacks.throughput import flops_per_token, peak_tflops_for  # noqa: E402
from wonton_hf.models.wonton import WontonConfig, WontonForCausalLM  # noqa: E402

DEMO = ROOT / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"
ACCELERATE_CONFIGS = ROOT / "examples" / "configs" / "accelerate"
LAUNCHERS = {
    "ZeRO-2": (ACCELERATE_CONFIGS / "deepspeed_zero2.yaml", ["train.deepspeed=examples/configs/deepspeed/zero2.json"]),
    "FSDP2": (ACCELERATE_CONFIGS / "fsdp2.yaml", []),
}
"""launcher name -> (accelerate config, run-config overrides it needs)"""
BACKENDS = ("flash_attention_2", "sdpa", "flex_attention", "eager")
SEQ_LEN = 2048
DOCUMENTS = ((300, 700, 1048), (1024, 1024))
"""document lengths of the two packed rows of the attention check"""
LOGIT_TOLERANCE = 3e-2
ISOLATION_TOLERANCE = 1e-3
GIB = 2**30


# ---- the table ----


@dataclass
class Row:
    section: str
    name: str
    status: str = "ok"
    """ok | FAIL (a check that ran and failed) | error (an exception) | skip"""
    tokens_per_s: float | None = None
    """per GPU"""
    mfu: float | None = None
    peak_gib: float | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Task:
    section: str
    name: str
    run: Callable[[], Row] | None
    skip: str = ""


@dataclass
class Environment:
    gpus: int
    name: str = ""
    capability: tuple[int, int] = (0, 0)
    flash: bool = False
    torchao: bool = False
    launchers: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def detect(cls) -> Environment:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(
            gpus=gpus,
            name=torch.cuda.get_device_name(0) if gpus else "",
            capability=torch.cuda.get_device_capability(0) if gpus else (0, 0),
            flash=importlib.util.find_spec("flash_attn") is not None,
            torchao=importlib.util.find_spec("torchao") is not None,
            launchers={name: path.is_file() for name, (path, _) in LAUNCHERS.items()},
        )

    @property
    def float8(self) -> str:
        """Why float8 rows are skipped here ("" when they run)."""
        from wonton_hf.training.float8 import MIN_CAPABILITY

        if self.capability < MIN_CAPABILITY:
            return f"float8 needs compute capability >= 8.9, this GPU has {self.capability[0]}.{self.capability[1]}"
        return "" if self.torchao else "torchao not installed (pip install 'wonton_hf[float8]')"

    def backend_skip(self, backend: str) -> str:
        return (
            "flash-attn not installed (pip install 'wonton_hf[flash]')"
            if backend == "flash_attention_2" and not (self.flash)
            else ""
        )


def format_table(rows: list[Row]) -> str:
    header = f"{'section':<11} {'configuration':<34} {'status':<6} {'tok/s/GPU':>10} {'MFU':>6} {'peak GiB':>8}  detail"
    lines = [header, "-" * len(header)]
    for row in rows:
        tokens = f"{row.tokens_per_s:,.0f}" if row.tokens_per_s is not None else "-"
        mfu = f"{100 * row.mfu:.1f}%" if row.mfu is not None else "-"
        peak = f"{row.peak_gib:.1f}" if row.peak_gib is not None else "-"
        detail = " ".join(row.detail.split())
        lines.append(f"{row.section:<11} {row.name:<34} {row.status:<6} {tokens:>10} {mfu:>6} {peak:>8}  {detail}")
    return "\n".join(lines)


# ---- arithmetic ----


def model_flops_utilisation(tokens_per_s: float, flops: float, peak_tflops: float | None) -> float | None:
    """Achieved model FLOP/s (tokens/s x FLOPs per token, `flops_per_token`) over the device's peak."""
    return tokens_per_s * flops / (peak_tflops * 1e12) if peak_tflops else None


def memory_estimate(preset: str, micro_batch: int, seq_len: int = SEQ_LEN, **overrides: Any) -> dict[str, float]:
    """Bytes (GiB) one GPU holds for a bf16-autocast AdamW step of `preset`, without sharding or recomputation.

    Parameters are counted exactly on the meta device. Training state: fp32 weights, fp32 gradients and AdamW's
    two fp32 moments, 16 bytes per parameter (the Trainer's `bf16=True` keeps fp32 weights). Activations: 34 bytes
    per token, layer and hidden unit (Korthikanti et al. 2022, table 2, for a GPT block with a 4x MLP and a fused
    attention kernel that keeps no T x T scores). Output head: the chunked loss's fp32 `[chunk, vocab]` buffer, its
    bf16 copy and a weight-sized fp32 gradient accumulator; no `[tokens, vocab]` logits exist.
    """
    config = WontonConfig.from_preset(preset, **overrides)
    with torch.device("meta"):
        model = WontonForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    tokens = micro_batch * seq_len
    chunk = min(config.loss_chunk_size or tokens, tokens)
    parts = {
        "parameters_billion": parameters / 1e9,
        "state_gib": 16 * parameters / GIB,
        "activations_gib": 34 * tokens * config.hidden_size * config.num_hidden_layers / GIB,
        "head_gib": (chunk * config.vocab_size * (4 + 2) + 4 * config.vocab_size * config.hidden_size) / GIB,
    }
    parts["total_gib"] = parts["state_gib"] + parts["activations_gib"] + parts["head_gib"]
    return parts


def packed_position_ids(lengths_per_row: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    return torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths_per_row])


def median_after_warmup(values: list[float], warmup: int = 2) -> float | None:
    kept = values[warmup:] if len(values) > warmup else values
    return statistics.median(kept) if kept else None


# ---- rows ----


def _free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _model(preset: str, attn: str, dtype: torch.dtype = torch.float32, **overrides: Any) -> WontonForCausalLM:
    config = WontonConfig.from_preset(preset, attn_implementation=attn, use_cache=False, **overrides)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return WontonForCausalLM(config).to(dtype)


def _inputs(ids: torch.Tensor, positions: torch.Tensor, attn: str) -> dict[str, Any]:
    from wonton_hf.data.collator import flash_attn_kwargs

    batch: dict[str, Any] = {"input_ids": ids.cuda(), "position_ids": positions.cuda()}
    if attn == "flash_attention_2":
        batch.update({k: v.cuda() if torch.is_tensor(v) else v for k, v in flash_attn_kwargs(positions).items()})
    return batch


def attention_row(backend: str) -> Row:
    overrides = dict(num_hidden_layers=2, vocab_size=8192)
    positions = packed_position_ids(DOCUMENTS)
    ids = torch.randint(0, 8192, positions.shape, generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    first = DOCUMENTS[0][0]
    changed[0, :first] = torch.randint(0, 8192, (first,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = _model("wonton-1b", "eager", **overrides).eval()(**_inputs(ids, positions, "eager")).logits
        model = _model("wonton-1b", backend, torch.bfloat16, **overrides).eval()
        logits = model(**_inputs(ids, positions, backend)).logits.float()
        moved = model(**_inputs(changed, positions, backend)).logits.float()
    scale = reference.abs().max().item()
    error = (logits - reference).abs().max().item() / scale
    leak = max((moved[0, first:] - logits[0, first:]).abs().max().item(), (moved[1] - logits[1]).abs().max().item())
    leak /= scale
    ok = error <= LOGIT_TOLERANCE and leak <= ISOLATION_TOLERANCE
    return Row(
        "attention",
        backend,
        "ok" if ok else "FAIL",
        detail=f"logits vs fp32 eager {error:.1e} (<= {LOGIT_TOLERANCE:g}); other documents moved {leak:.1e} "
        f"(<= {ISOLATION_TOLERANCE:g})",
    )


def step_row(attn: str, *, compile: bool = False, float8: bool = False, batch: int = 4, steps: int = 6) -> Row:
    """One configuration of the wonton-1b bf16 step; see the module docstring."""
    from wonton_hf.training.compilation import compile_decoder_layers

    model = _model("wonton-1b", attn).train()
    if float8:  # what accelerate's `prepare` does for `mixed_precision="fp8"` with the AO backend
        from accelerate.utils.ao import convert_model_to_fp8_ao

        from wonton_hf.training.float8 import recipe_kwargs

        convert_model_to_fp8_ao(model, config=recipe_kwargs("tensorwise").config)
    if compile:
        compile_decoder_layers(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    lengths = tuple((700, 900, SEQ_LEN - 1600) for _ in range(batch))
    positions = packed_position_ids(lengths)
    ids = torch.randint(0, model.config.vocab_size, positions.shape, generator=torch.Generator().manual_seed(0))
    inputs = {**_inputs(ids, positions, attn), "labels": ids.cuda()}

    def one_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    _free_cuda()
    warm = time.perf_counter()
    for _ in range(2):  # compiles (forward, then backward) and warms the allocator
        one_step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - warm
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = batch * SEQ_LEN * steps / elapsed
    flops = flops_per_token(model, SEQ_LEN)
    mfu = model_flops_utilisation(tokens_per_s, flops, peak_tflops_for(torch.cuda.get_device_name()))
    name = "+".join([attn, *(["compile"] if compile else []), *(["float8"] if float8 else [])])
    row = Row("1b step", name, tokens_per_s=tokens_per_s, mfu=mfu, peak_gib=torch.cuda.max_memory_allocated() / GIB)
    row.detail = f"micro-batch {batch} x {SEQ_LEN}, {steps} steps; warm-up {warm:.0f} s"
    return row  # the model and optimizer go with this frame; `run_tasks` then empties the CUDA cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_overrides(work: Path, name: str, gpus: int, batch: int, steps: int, attn: str) -> list[str]:
    """The run config of a launcher row: the demo's data and sources at wonton-1b's shape and vocabulary."""
    return [
        f"output_dir={work}",
        f"run_name={name}",
        f"tokenizer.path={work / 'tokenizer' / 'tokenizer'}",
        "model.preset=wonton-1b",
        "model.overrides.vocab_size=139776",
        f"model.attn_implementation={attn}",
        f"data.seq_len={SEQ_LEN}",
        f"train.per_device_batch_size={batch}",
        f"train.global_batch_tokens={batch * SEQ_LEN * gpus}",
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        f"train.save_steps={steps + 1000}",
        "train.report_to=[]",
        "optimizer.warmup_steps=0",
        "evaluation=null",
    ]


def launcher_row(launcher: str, *, gpus: int, work: Path, compile: bool, float8: bool, attn: str, steps: int) -> Row:
    config_file, extra = LAUNCHERS[launcher]
    name = "+".join([launcher, attn, *(["compile"] if compile else []), *(["float8"] if float8 else [])])
    run_name = name.replace("+", "_")
    overrides = launcher_overrides(work, run_name, gpus, 4, steps, attn) + extra
    overrides += (["train.compile={}"] if compile else []) + (["train.float8={}"] if float8 else [])
    result = work / f"{run_name}.json"
    spec = json.dumps({"overrides": overrides, "output": str(result)})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
        "--num_processes", str(gpus), "--num_machines", "1", "--main_process_port", str(_free_port()),
        __file__, "--worker", spec,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    if done.returncode != 0 or not result.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return Row("launcher", name, "error", detail=f"exit {done.returncode}: {' | '.join(tail)}")
    report = json.loads(result.read_text())
    logged = [e for e in report["log_history"] if "throughput/device/tokens_per_s" in e]
    tokens = median_after_warmup([e["throughput/device/tokens_per_s"] for e in logged])
    mfus = [e["throughput/device/mfu"] for e in logged if "throughput/device/mfu" in e]
    return Row(
        "launcher",
        name,
        tokens_per_s=tokens,
        mfu=median_after_warmup(mfus),
        peak_gib=report["peak_gib"],
        detail=f"{gpus} GPU(s), micro-batch 4 x {SEQ_LEN}, {len(logged)} logged steps (first 2 left out)",
    )


def worker(spec: str) -> None:
    """Inside `accelerate launch`: one short pretraining run; rank 0 writes its log and the largest peak memory."""
    from wonton_hf.distributed import is_distributed, is_main_process
    from wonton_hf.training import build_trainer, load_run_config

    options = json.loads(spec)
    prepared = build_trainer(load_run_config(DEMO, options["overrides"]))
    prepared.trainer.train()
    peak = torch.tensor(float(torch.cuda.max_memory_allocated()), device="cuda")
    if is_distributed():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    if is_main_process():
        report = {"log_history": prepared.trainer.state.log_history, "peak_gib": peak.item() / GIB}
        Path(options["output"]).write_text(json.dumps(report))


def memory_row(micro_batch: int, *, real: bool) -> Row:
    estimate = memory_estimate("wonton-7b", micro_batch)
    row = Row("7b memory", f"wonton-7b micro-batch {micro_batch}")
    row.detail = (
        f"estimate {estimate['total_gib']:.0f} GiB = state {estimate['state_gib']:.0f} + activations "
        f"{estimate['activations_gib']:.1f} + head {estimate['head_gib']:.1f}"
    )
    if not real:
        return row
    _free_cuda()
    free = torch.cuda.mem_get_info()[0] / GIB
    if estimate["total_gib"] > free:
        row.detail += f"; no real step: {free:.0f} GiB free"
        return row
    model = optimizer = None
    try:
        model = _model("wonton-7b", "sdpa").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        ids = torch.randint(0, model.config.vocab_size, (micro_batch, SEQ_LEN), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        row.peak_gib = torch.cuda.max_memory_allocated() / GIB
        row.detail += f"; real step peak {row.peak_gib:.1f} GiB"
    except torch.OutOfMemoryError:
        row.detail += f"; real step: out of memory ({free:.0f} GiB free)"
    finally:
        del model, optimizer
        _free_cuda()
    return row


# ---- the plan ----


def plan(env: Environment, work: Path, quick: bool) -> list[Task]:
    """Every row the check will print, with the reason where one is skipped on this machine."""
    tasks: list[Task] = []
    for backend in BACKENDS:
        skip = env.backend_skip(backend)
        tasks.append(Task("attention", backend, None if skip else (lambda b=backend: attention_row(b)), skip))
    runnable = [b for b in BACKENDS if not env.backend_skip(b) and b != "eager"]
    best = runnable[0]
    for backend in BACKENDS[:-1]:  # eager attention keeps T x T scores: not a training configuration at 2,048
        skip = env.backend_skip(backend) or ("--quick: first backend only" if quick and backend != best else "")
        tasks.append(Task("1b step", backend, None if skip else (lambda b=backend: step_row(b)), skip))
    tasks.append(Task("1b step", f"{best}+compile", lambda: step_row(best, compile=True)))
    float8_skip = env.float8 or ("--quick" if quick else "")
    tasks.append(
        Task(
            "1b step",
            f"{best}+compile+float8",
            None if float8_skip else (lambda: step_row(best, compile=True, float8=True)),
            float8_skip,
        )
    )
    steps = 6 if quick else 10
    for launcher, present in env.launchers.items():
        for compile, float8 in ((False, False), (True, False), (True, True)):
            name = "+".join([launcher, best, *(["compile"] if compile else []), *(["float8"] if float8 else [])])
            skip = "" if present else f"{LAUNCHERS[launcher][0].relative_to(ROOT)} not found"
            skip = skip or (env.float8 if float8 else "") or ("--quick" if quick and compile else "")
            run = partial(
                launcher_row, launcher, gpus=env.gpus, work=work, compile=compile, float8=float8, attn=best, steps=steps
            )
            tasks.append(Task("launcher", name, None if skip else run, skip))
    for micro_batch in (1, 2, 3, 4):
        real = not (quick and micro_batch > 2)
        tasks.append(
            Task(
                "7b memory", f"wonton-7b micro-batch {micro_batch}", lambda m=micro_batch, r=real: memory_row(m, real=r)
            )
        )
    return tasks


def run_tasks(tasks: list[Task], budget_s: float, clock: Callable[[], float] = time.monotonic) -> list[Row]:
    """Each task in turn, each failure a row; tasks that would start after `budget_s` are skipped."""
    rows, start = [], clock()
    for task in tasks:
        if task.run is None:
            rows.append(Row(task.section, task.name, "skip", detail=task.skip))
            continue
        if clock() - start > budget_s:
            rows.append(Row(task.section, task.name, "skip", detail=f"time budget ({budget_s:.0f} s) spent"))
            continue
        began = clock()
        try:
            row = task.run()
        except Exception as error:  # noqa: BLE001 (the point of the check: record it, go on)
            where = traceback.extract_tb(error.__traceback__)[-1]
            row = Row(task.section, task.name, "error", detail=f"{type(error).__name__}: {error} ({where.name})"[:400])
        row.seconds = clock() - began
        rows.append(row)
        print(format_table([row]).splitlines()[-1], flush=True)
        _free_cuda()
    return rows


def versions() -> dict[str, str]:
    import accelerate
    import transformers

    found = {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    for name in ("flash_attn", "torchao", "deepspeed"):
        if importlib.util.find_spec(name) is not None:
            found[name] = getattr(__import__(name), "__version__", "?")
    found["cuda"] = str(torch.version.cuda)
    return found


def write_tokenizer(work: Path) -> None:
    """The launcher rows' tokenizer, trained once on the demo's sources (the runs then only load it)."""
    from wonton_hf.training import load_run_config
    from wonton_hf.training.pretrain import build_sources, build_tokenizer

    config = load_run_config(DEMO, [f"output_dir={work}", "run_name=tokenizer"])
    build_tokenizer(config, build_sources(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations (about 3 minutes on one H100)")
    parser.add_argument("--output", type=Path, help="write the table (and the environment) as JSON here")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no row after this many seconds")
    parser.add_argument("--work-dir", type=Path, help="launcher runs and their tokenizer (default: a temporary one)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    env = Environment.detect()
    if not env.gpus:
        print("gpu_check: no CUDA device on this machine; nothing to measure (run it on a GPU machine).")
        if args.output:
            args.output.write_text(json.dumps({"cuda": False, "rows": []}, indent=1))
        return 0
    print(f"gpu_check: {env.gpus} x {env.name} (capability {env.capability[0]}.{env.capability[1]}); {versions()}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tasks = plan(env, work, args.quick)
    if any(t.section == "launcher" and t.run is not None for t in tasks):
        write_tokenizer(work)
    print(format_table([]))
    rows = run_tasks(tasks, args.budget_s)
    print("\n" + format_table(rows))
    if args.output:
        report = {"cuda": True, "date": time.strftime("%Y-%m-%d"), "gpus": env.gpus, "gpu": env.name}
        report |= {"versions": versions(), "rows": [asdict(r) for r in rows]}
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
