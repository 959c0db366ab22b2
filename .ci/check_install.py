"""Resolve the package and its extras with pip in a throwaway venv, before CI installs anything.

Why: a new upstream release can make `pip install -e ".[dev]"` unresolvable (or resolvable only after minutes of
backtracking), and pip then names the last pair it tried, not the cause. In December 2026 pip reported
`s3fs 2025.3.1 depends on fsspec==2025.3.1.*` while the cause was `boto3 1.44.8` wanting botocore 1.44 and
`aiobotocore 3.10.0` pinning botocore 1.43. pip's own record of each conflict it backtracked on (its `-vv`
"Will try a different candidate, due to conflict" blocks) starts with the cause, so when a resolution fails this
script resolves it again verbosely and prints the first of those blocks. A resolution that succeeds only after
backtracking passes, naming the packages pip walked back through.

The venv gets the pip that `python3 -m venv` bundles, not an upgraded one: README command 2 runs exactly that pip,
and `.ci/run` upgrades pip before its own install, so the two together cover old and new resolvers. Only a dry run
(`--dry-run --report`): nothing is installed, and pip talks only to the index it is configured with.

Usage: python .ci/check_install.py [--timeout SECONDS] [TARGET ...]   (default targets: the README's and users')
Exit 0 when every target resolves within the timeout; 1 otherwise, with the conflicts named.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The README's commands (`.` and `.[dev]`) and the extras users install. `.[flash]` is left out: flash-attn ships
# only sources whose build needs CUDA, so even its metadata cannot be had on a CPU machine.
# `.[dev]` holds every requirement of the other extras; the users' union is resolved apart, without the test tools.
TARGETS = (".[dev]", ".[s3,deepspeed,eval,judge]")
# README commands install this torch first (the CPU wheel on disk); resolving against it keeps pip from fetching a
# multi-GB CUDA build's metadata, as the real install would.
TORCH = "torch==2.13.0"
KEY_PACKAGES = ("transformers", "accelerate", "trl", "datasets", "deepspeed", "lm-eval", "s3fs", "boto3")
DIAGNOSIS_CONFLICTS = 3
CONFLICT_START = "Will try a different candidate, due to conflict:"
BACKTRACK = re.compile(r"pip is (?:still )?looking at multiple versions of (\S+) ")
REQ_NAME = re.compile(r"(?:depends on|The user requested)\s+([A-Za-z0-9._-]+)")


@dataclass
class Resolution:
    target: str
    returncode: int | None = None  # None: killed at the timeout
    seconds: float = 0.0
    conflicts: list[list[str]] = field(default_factory=list)  # pip's blocks, in the order pip met them
    backtracked: list[str] = field(default_factory=list)
    pip_error: list[str] = field(default_factory=list)  # pip's own closing message
    resolved: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def make_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin" / "pip"


def resolve(pip: Path, target: str, timeout: float, workdir: Path, verbose: bool = False) -> Resolution:
    """One `pip install --dry-run` of `target`, reading pip's log as it streams.

    With `verbose`, pip's -vv log (tens of MB, twice the time) carries each conflict it backtracked on; without,
    only which packages it backtracked through. The first pass is quiet; a failed one is rerun verbose.
    """
    result = Resolution(target)
    report = workdir / f"report-{abs(hash((target, verbose)))}.json"
    command = [str(pip), "install", "--dry-run", "--ignore-installed", "--report", str(report), TORCH]
    command += ["-vv"] if verbose else []
    command += ["-e", target] if target.startswith(".") else [target]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    block: list[str] | None = None
    in_error = False
    for line in process.stdout:  # type: ignore[union-attr]
        line = line.rstrip("\n")
        if block is not None:
            if line.startswith("    ") and REQ_NAME.search(line):
                block.append(line.strip())
                continue
            result.conflicts.append(block)
            block = None
            if verbose and len({tuple(b) for b in result.conflicts}) >= DIAGNOSIS_CONFLICTS:
                process.kill()  # the first conflicts name the cause; the rest of a failing run is the long walk back
                break
        if line.startswith(CONFLICT_START):
            block = []
        elif match := BACKTRACK.search(line):
            if match.group(1) not in result.backtracked:
                result.backtracked.append(match.group(1))
        elif line.startswith("ERROR:") or "The conflict is caused by" in line or in_error:
            in_error = True
            result.pip_error.append(line)
    if block:
        result.conflicts.append(block)
    process.wait()
    timer.cancel()
    result.seconds = time.monotonic() - start
    killed = process.returncode is not None and process.returncode < 0
    result.returncode = None if killed else process.returncode
    if result.ok and report.exists():
        installs = json.loads(report.read_text())["install"]
        result.resolved = {
            re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"] for item in installs
        }
    return result


def contested(block: list[str]) -> str:
    names = {match.group(1).lower() for line in block if (match := REQ_NAME.search(line))}
    return ", ".join(sorted(names))


def describe(result: Resolution, limit: int = DIAGNOSIS_CONFLICTS) -> str:
    """The first distinct conflicts pip met: the first one is the cause, the rest what pip tried next."""
    lines, seen = [], set()
    for block in result.conflicts:
        key = tuple(block)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"  on {contested(block)}:")
        lines += [f"    {requirement}" for requirement in block]
        if len(seen) == limit:
            break
    if result.backtracked:
        lines.append(f"  pip backtracked through the versions of: {', '.join(result.backtracked)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per target before it counts as failed")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="wonton-install-check-") as tmp:
        pip = make_venv(Path(tmp) / "venv")
        pip_version = subprocess.run([str(pip), "--version"], capture_output=True, text=True).stdout.split()[1]
        with ThreadPoolExecutor(max_workers=2) as pool:  # pip resolves on one core; CI has two
            results = list(pool.map(lambda target: resolve(pip, target, args.timeout, Path(tmp)), args.targets))
        for result in results:
            target = result.target
            if result.ok:
                picks = ", ".join(f"{n} {result.resolved[n]}" for n in KEY_PACKAGES if n in result.resolved)
                print(f"== install check: {target} resolves with pip {pip_version} in {result.seconds:.0f} s ({picks})")
                if result.backtracked:
                    print(f"   after backtracking through the versions of {', '.join(result.backtracked)}")
                continue
            failed = True
            why = (
                "did not resolve"
                if result.returncode is not None
                else f"was still backtracking after {args.timeout:.0f} s"
            )
            diagnosis = resolve(pip, target, args.timeout, Path(tmp), verbose=True)
            result.conflicts, result.backtracked = diagnosis.conflicts, result.backtracked or diagnosis.backtracked
            print(f'== install check FAILED: `pip install -e "{target}"` {why} (pip {pip_version}).')
            print(
                "The conflicts pip met, first one first (the first is the cause; pip's last message is only where it gave up):"
            )
            print(describe(result) or "  (pip reported no conflict; its own message follows)")
            if result.pip_error:
                print("pip's own message:\n  " + "\n  ".join(result.pip_error[-12:]))
            print(
                "Fix it in setup.cfg: let the package that pins the contested one choose it (do not ask for it separately),"
            )
            print("or bound the requirement that pulls the newest release; then rerun `python .ci/check_install.py`.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
