"""Multi-process launches for the tests: a free port, and a torchrun group that is killed whole if it hangs.

A hung rendezvous or a collective only some ranks entered would otherwise block the suite forever and leave
workers behind; each launch runs in its own session so that on a timeout the whole group (torchrun and its
workers) goes, and the test fails saying so.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_process_group(
    command: list[str],
    *,
    env: dict[str, str],
    cwd=None,
    timeout: float = 300,
    merge_output: bool = False,
    what: str = "2-process run hung",
) -> subprocess.CompletedProcess:
    """Run `command` in its own session; on `timeout` kill the group and fail the test with `what`."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(what)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
