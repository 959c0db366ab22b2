"""Full and read-only output directories: a clear message before or during a save, and nothing saved is lost."""

import errno
import os
import shutil
import subprocess
from collections import namedtuple

import pytest
import torch

from tests.callbacks.helpers import tiny_model, trainer, training_args
from wonton_hf.checkpointing import CheckpointCompletionCallback, CheckpointSaveError, storage, verify_checkpoint
from wonton_hf.checkpointing.storage import guard_checkpoint_saves

Usage = namedtuple("Usage", "total used free")


def _run(tmp_path, max_steps=4, out=None):
    run = trainer(
        tiny_model(), training_args(out or tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=2)
    )
    guard_checkpoint_saves(run)
    run.add_callback(CheckpointCompletionCallback())
    return run


def _free_at_second_save(monkeypatch, free_after_first):
    """`shutil.disk_usage` as the guard sees it: plenty before the first checkpoint, `free_after_first` after."""
    real = shutil.disk_usage

    def fake(path):
        usage = real(path)
        first = any(p.name == "checkpoint-2" for p in (storage.Path(path)).glob("checkpoint-*"))
        return Usage(usage.total, usage.used, free_after_first if first else usage.free)

    monkeypatch.setattr(storage.shutil, "disk_usage", fake)


def test_too_little_space_stops_before_the_save_naming_directory_and_size(tmp_path, monkeypatch):
    _free_at_second_save(monkeypatch, free_after_first=1000)
    run = _run(tmp_path)
    with pytest.raises(
        CheckpointSaveError, match=rf"Not enough space to save a checkpoint in {tmp_path}: 0.00 GB free"
    ):
        run.train()
    assert verify_checkpoint(tmp_path / "checkpoint-2").ok  # the checkpoint already saved is intact
    assert not (tmp_path / "checkpoint-4").exists()  # stopped before writing anything


def test_space_for_one_more_checkpoint_warns_early(tmp_path, monkeypatch, caplog):
    real = shutil.disk_usage

    def fake(path):
        checkpoint = tmp_path / "checkpoint-2"
        if not checkpoint.exists():
            return real(path)
        needed = storage.last_checkpoint_bytes(tmp_path) or 0
        return Usage(10 * needed, 8 * needed, int(1.5 * needed))  # room for one more

    monkeypatch.setattr(storage.shutil, "disk_usage", fake)
    with caplog.at_level("WARNING", logger="wonton_hf.checkpointing.storage"):
        _run(tmp_path).train()
    assert f"Disk space is running out in {tmp_path}" in caplog.text and "1 more checkpoint(s)" in caplog.text
    assert verify_checkpoint(tmp_path / "checkpoint-4").ok


def test_torch_write_error_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """The error measured on a full disk, raised by the optimizer save; free space reads as nothing left."""
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4800 vs 4733")
        return real_save(obj, f, *args, **kwargs)

    run = _run(tmp_path)
    run.remove_callback(storage.DiskSpaceCallback)  # the pre-check would stop it first
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointSaveError, match=r"failed: the disk is full \(a write stopped short\)") as info:
        run.train()
    assert str(tmp_path / "checkpoint-4") in str(info.value) and "unexpected pos" in str(info.value)
    assert verify_checkpoint(tmp_path / "checkpoint-2").ok and not (tmp_path / "checkpoint-4" / "COMPLETE").exists()


def test_os_errors_during_a_save_are_named(tmp_path):
    for code, words in [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")]:
        message = storage.describe_save_failure(OSError(code, os.strerror(code)), tmp_path / "checkpoint-4", 10**6)
        assert words in message and str(tmp_path / "checkpoint-4") in message and "0.00 GB" in message


def _read_only(path):
    """A read-only directory: chmod for a normal user; as root (which ignores modes) a read-only tmpfs mount."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"root without mount rights: cannot make a read-only directory ({mount.stderr.decode()[:80]})")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_read_only_output_directory_is_named_before_the_save(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    restore = _read_only(out)
    try:
        with pytest.raises(
            CheckpointSaveError,
            match=rf"Cannot save a checkpoint in {out}: (the file system is "
            r"read-only|permission denied)",
        ):
            _run(tmp_path, max_steps=2, out=out).train()
    finally:
        restore()


def test_a_real_full_disk_during_a_save(tmp_path):
    """A 1 MB tmpfs (root with mount rights only): the real ENOSPC, through torch's / safetensors' own errors."""
    out = tmp_path / "small"
    out.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)]).returncode:
        pytest.skip("needs root with mount rights for a small tmpfs")
    try:
        run = _run(tmp_path, max_steps=2, out=out)
        run.remove_callback(storage.DiskSpaceCallback)
        with pytest.raises(
            CheckpointSaveError,
            match=rf"Saving a checkpoint to {out / 'checkpoint-2'} failed: the "
            "disk is full",
        ):
            run.train()
    finally:
        subprocess.run(["umount", str(out)], check=True)
