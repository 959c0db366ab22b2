"""Mutation testing of the core: plant one-line bugs, one at a time, and check that the tests catch each.

    python tools/mutants.py                      # every mutant, each against its test folder
    python tools/mutants.py --list               # the mutants and where each snippet is found now
    python tools/mutants.py --only spike_std     # some of them (repeat --only)
    python tools/mutants.py --quick              # each against its quick test files instead of the folder

Each mutant is a text substitution: a code snippet that must occur exactly once across `wonton_hf/`, and what
to put in its place. Targets are found by searching the snippet in every module, not by file path, so the
list survives code moving between modules; a snippet found nowhere (the code was rewritten) or in several
places is reported as such, never a crash: update its snippet. For each mutant the checkout (tracked and
untracked files, not ignored ones) is copied to a temporary directory, the bug is planted there and pytest
runs there (`-x`: the first failure kills the mutant). A mutant whose tests all pass *survived*: a bug users
could hit that no test sees. Exit status 1 when any survived or any snippet is stale.

Not part of CI: every survivor runs a whole test folder (minutes each on 2 CPU cores). docs/testing.md says
when to run it and holds the last result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "wonton_hf"


@dataclass(frozen=True)
class Mutant:
    name: str
    snippet: str
    """code that must occur exactly once in wonton_hf/ (whitespace included)"""
    replacement: str
    folder: str
    """the test folder of the area, run in full"""
    quick: tuple[str, ...]
    """the test files that should catch it (`--quick`)"""
    why: str


MUTANTS = [
    # -- the six bugs of the issue "Tests that catch the bugs users would hit" --
    Mutant(
        "spike_std_ignored",
        "if loss > mean + self.threshold_std * std:",
        "if loss > mean + self.threshold_std:",
        "tests/callbacks",
        ("tests/callbacks/test_spike_guard_judgement.py",),
        "SpikeGuard ignores the spread: a 1.5x spike at loss 5.5 goes unseen",
    ),
    Mutant(
        "spike_flat_window",
        "if loss > mean + self.threshold_std * std:",
        "if loss >= mean + self.threshold_std * std:",
        "tests/callbacks",
        ("tests/callbacks/test_spike_guard_judgement.py",),
        "SpikeGuard: on a zero-variance window an equal loss is a spike (a plateau rolls back)",
    ),
    Mutant(
        "checkpoints_by_name",
        "    return sorted(found)\n",
        "    return sorted(found, key=lambda item: item[1].name)\n",
        "tests/training",
        ("tests/training/test_checkpoints.py", "tests/callbacks/test_spike_guard_judgement.py"),
        "checkpoints sorted by name: checkpoint-9 after checkpoint-10 and -100",
    ),
    Mutant(
        "optimizer_ignores_unknown_keys",
        "class OptimizerConfig(OptimizerFields):\n",
        'class OptimizerConfig(OptimizerFields):\n    model_config = {**OptimizerFields.model_config, "extra": "ignore"}\n',
        "tests/training",
        ("tests/training/test_config_unknown_keys.py",),
        "the optimizer section accepts `optimizer.warmup=5` silently",
    ),
    Mutant(
        "resume_compares_file_count",
        "if saved is not None and saved != file_signature(source.files):",
        'if saved is not None and saved["files"] != len(source.files):',
        "tests/data",
        ("tests/data/test_resume.py",),
        "resume accepts a state of files [a, b] on files [a, c]",
    ),
    Mutant(
        "exp3_smoothing_swapped",
        "self.smoothing * previous + (1 - self.smoothing) * loss",
        "(1 - self.smoothing) * previous + self.smoothing * loss",
        "tests/data",
        ("tests/data/test_scheduler.py",),
        "EXP3 reward smoothing swapped: at 0.9 the previous reward weighs 0.1",
    ),
    # -- more of the core --
    Mutant(
        "rotary_sign",
        "return torch.cat((-x2, x1), dim=-1)",
        "return torch.cat((x2, -x1), dim=-1)",
        "tests/models",
        ("tests/models/test_modeling_wonton.py", "tests/models/test_parity_gpt_neox.py"),
        "rotary embedding rotates the wrong way",
    ),
    Mutant(
        "z_loss_not_added",
        "loss = ce_loss + self.config.z_loss_coef * z_loss + self.config.max_z_loss_coef * max_z_loss",
        "loss = ce_loss + self.config.max_z_loss_coef * max_z_loss",
        "tests/models",
        ("tests/models/test_modeling_wonton.py",),
        "the z-loss term is left out of the training loss",
    ),
    Mutant(
        "spike_window_not_kept",
        'self._state["losses"] = (self._state["losses"] + [loss])[-self.window :]',
        'self._state["losses"] = (self._state["losses"] + [loss])[: self.window]',
        "tests/callbacks",
        ("tests/callbacks/test_spike_guard_judgement.py", "tests/callbacks/test_spike_guard.py"),
        "SpikeGuard keeps the first `window` losses instead of the last",
    ),
    Mutant(
        "spike_rollback_off_by_one",
        'if self.rollback and self._state["bad_in_a_row"] >= self.max_bad_steps:',
        'if self.rollback and self._state["bad_in_a_row"] > self.max_bad_steps:',
        "tests/callbacks",
        ("tests/callbacks/test_spike_guard.py",),
        "SpikeGuard rolls back one bad step late",
    ),
    Mutant(
        "rollback_ignores_last_good_step",
        'checkpoint = newest_complete_checkpoint(args.output_dir, at_or_before=self._state["last_good_step"])',
        "checkpoint = newest_complete_checkpoint(args.output_dir)",
        "tests/callbacks",
        ("tests/callbacks/test_spike_guard_judgement.py", "tests/callbacks/test_spike_guard.py"),
        "SpikeGuard rolls back to a checkpoint saved during the bad streak",
    ),
    Mutant(
        "incomplete_checkpoints_count",
        "if is_complete(path) and (at_or_before is None or step <= at_or_before)",
        "if (at_or_before is None or step <= at_or_before)",
        "tests/training",
        ("tests/training/test_checkpoints.py",),
        "a half-written checkpoint becomes a resume point",
    ),
    Mutant(
        "averaging_takes_oldest",
        "    return complete[-last:]\n",
        "    return complete[:last]\n",
        "tests/training",
        ("tests/training/test_checkpoints.py",),
        "averaging takes the oldest checkpoints",
    ),
    Mutant(
        "resume_ignores_seed",
        'for name in ("seed", "block_size"):',
        'for name in ("block_size",):',
        "tests/data",
        ("tests/data/test_resume.py",),
        "resume accepts a state of another shuffle seed",
    ),
    Mutant(
        "exp3_clamp_ignores_min",
        "w = {n: (min(max(w[n], self.min_weight), self.max_weight) if n in active else 0.0) for n in w}",
        "w = {n: (min(w[n], self.max_weight) if n in active else 0.0) for n in w}",
        "tests/data",
        ("tests/data/test_scheduler.py",),
        "EXP3 lets a source's weight fall below min_weight",
    ),
    Mutant(
        "section_extra_allowed",
        'model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)',
        'model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True, validate_assignment=True)',
        "tests/training",
        ("tests/training/test_config_unknown_keys.py", "tests/training/test_config.py"),
        "no config section refuses unknown keys",
    ),
    Mutant(
        "flash_without_document_boundaries",
        'return_flash_attn_kwargs=config.model.attn_implementation == "flash_attention_2"',
        "return_flash_attn_kwargs=False",
        "tests/training",
        ("tests/training/test_compile.py",),
        "flash attention on batches of several packed rows attends across documents (no cu_seq_lens)",
    ),
    Mutant(
        "float8_capability_ignored",
        "if capability < MIN_CAPABILITY:",
        "if capability < (8, 0):",
        "tests/training",
        ("tests/training/test_float8.py",),
        "float8 accepted on an A100: accelerate then trains in fp16 instead, silently",
    ),
    Mutant(
        "fsdp_reduce_in_bf16",
        'reduce = torch.float32 if reduce_dtype == "fp32" else param',
        "reduce = param",
        "tests/training",
        ("tests/training/test_fsdp_config.py",),
        "FSDP2 under bf16 reduce-scatters gradients in bf16 although train.fsdp.reduce_dtype says fp32",
    ),
    Mutant(
        "fsdp_cpu_falls_back_to_ddp",
        'PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU',
        "pass",
        "tests/training",
        ("tests/training/test_fsdp2.py",),
        "FSDP2 on CPU processes silently trains unsharded under DDP (accelerate's MULTI_CPU path)",
    ),
]


def checkout_files() -> list[str]:
    """Tracked and untracked files of the checkout, not ignored ones (what a fresh copy would hold)."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listing.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def locate(mutant: Mutant, root: Path = ROOT) -> tuple[str, Path | None]:
    """("ok", file) where the snippet occurs exactly once across the package; else ("snippet not found" |
    "snippet ambiguous: ...", None)."""
    hits = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        count = path.read_text(encoding="utf-8").count(mutant.snippet)
        hits += [path] * count
    if not hits:
        return "snippet not found", None
    if len(hits) > 1:
        return f"snippet ambiguous: {len(hits)} occurrences in {sorted({str(h.relative_to(root)) for h in hits})}", None
    return "ok", hits[0]


def run_mutant(mutant: Mutant, files: list[str], quick: bool, timeout: int) -> tuple[str, float, str]:
    """(verdict, seconds, detail): killed | survived | timeout | snippet not found | snippet ambiguous."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        copy = Path(tmp)
        for name in files:
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        status, path = locate(mutant, copy)
        if path is None:
            return status, 0.0, ""
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(mutant.snippet, mutant.replacement, 1), encoding="utf-8")
        tests = list(mutant.quick if quick else (mutant.folder,))
        env = {
            **os.environ,
            "PYTHONPATH": str(copy),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            # the copy sits elsewhere: ../shared is found where the checkout's tests find it
            "WONTON_SHARED": os.environ.get("WONTON_SHARED", str(ROOT.parent / "shared")),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
        try:
            result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - started, ""
        seconds = time.perf_counter() - started
        tail = [line for line in result.stdout.splitlines() if line.strip()][-1:] or [""]
        failed = [
            line.split(" ", 1)[1].split(" - ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED ")
        ]
        if result.returncode == 0:
            return "survived", seconds, tail[0]
        if result.returncode == 1:
            return "killed", seconds, failed[0] if failed else tail[0]
        return f"error (pytest exit {result.returncode})", seconds, tail[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the mutants and where each snippet is now")
    parser.add_argument("--only", action="append", default=[], help="run this mutant (repeatable)")
    parser.add_argument("--quick", action="store_true", help="run each mutant's quick test files, not its folder")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutant (default 1800)")
    options = parser.parse_args(argv)

    unknown = set(options.only) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not options.only or m.name in options.only]
    if options.list:
        for mutant in chosen:
            status, path = locate(mutant)
            where = str(path.relative_to(ROOT)) if path else status
            print(f"{mutant.name:34} {where:40} {mutant.why}")
        return 0

    files = checkout_files()
    bad = 0
    print(f"{len(chosen)} mutant(s), {'quick test files' if options.quick else 'test folders'}", flush=True)
    for mutant in chosen:
        verdict, seconds, detail = run_mutant(mutant, files, options.quick, options.timeout)
        bad += verdict != "killed"
        print(f"{mutant.name:34} {verdict:18} {seconds:6.0f}s  {detail}", flush=True)
    print(f"{len(chosen) - bad} killed, {bad} not killed (survived, stale snippet, timeout or error)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
