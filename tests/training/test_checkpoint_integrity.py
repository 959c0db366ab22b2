"""Checkpoint integrity: the COMPLETE marker is a manifest (size + hash of every file); resume and SpikeGuard's
rollback verify it, name a damaged checkpoint and file, and fall back to the previous good one."""

import json

import pytest

from wonton_hf.checkpointing import (
    CheckpointIntegrityError,
    mark_complete,
    newest_verified_checkpoint,
    resume_plan,
    verify_checkpoint,
)
from wonton_hf.cli import main as cli


def _checkpoint(root, step, size=64 * 1024):
    path = root / f"checkpoint-{step}"
    (path / f"global_step{step}").mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * (size // 256))
    (path / f"global_step{step}" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o" * 1000)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    mark_complete(path, step, world_size=2)
    return path


def _flip(path, offset=8192, length=4096):
    """4 KB flipped inside the file, header untouched: what a bad disk block does."""
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = bytes(b ^ 0xFF for b in data[offset : offset + length])
    path.write_bytes(bytes(data))


def test_the_marker_records_every_file_with_size_and_hash(tmp_path):
    checkpoint = _checkpoint(tmp_path, 10)
    record = json.loads((checkpoint / "COMPLETE").read_text())
    assert record["step"] == 10 and record["world_size"] == 2 and record["hash"] == "xxh3_128"
    assert set(record["files"]) == {
        "model.safetensors",
        "trainer_state.json",
        "global_step10/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    }
    assert record["files"]["model.safetensors"]["size"] == 64 * 1024
    assert verify_checkpoint(checkpoint).ok


@pytest.mark.parametrize("algorithm", ["sha256", "blake2b"])
def test_markers_hashed_with_another_algorithm_still_verify(tmp_path, algorithm):
    """The algorithm is recorded per marker: checkpoints marked with hashlib's before the switch stay checkable."""
    from wonton_hf.checkpointing.protocol import build_manifest

    checkpoint = _checkpoint(tmp_path, 10)
    record = json.loads((checkpoint / "COMPLETE").read_text())
    record.update(hash=algorithm, files=build_manifest(checkpoint, algorithm))
    (checkpoint / "COMPLETE").write_text(json.dumps(record))
    assert verify_checkpoint(checkpoint).ok
    _flip(checkpoint / "model.safetensors")
    assert not verify_checkpoint(checkpoint).ok


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: _flip(c / "model.safetensors"), "checkpoint-20/model.safetensors: content differs"),
        (lambda c: (c / "trainer_state.json").write_text("{}"), "checkpoint-20/trainer_state.json: size 2 bytes"),
        (
            lambda c: (c / "global_step20" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink(),
            "checkpoint-20/global_step20/zero_pp_rank_0_mp_rank_00_optim_states.pt: missing",
        ),
    ],
)
def test_resume_skips_a_damaged_checkpoint_and_names_it(tmp_path, damage, message):
    _checkpoint(tmp_path, 10)
    damage(_checkpoint(tmp_path, 20))
    plan = resume_plan(tmp_path, "auto")
    assert plan.checkpoint == tmp_path / "checkpoint-10"
    assert "skipped " in plan.notice and "FAILED verification" in plan.notice and message in plan.notice
    # SpikeGuard's rollback uses the same lookup
    chosen, failed = newest_verified_checkpoint(tmp_path, at_or_before=25)
    assert chosen == tmp_path / "checkpoint-10" and [r.checkpoint.name for r in failed] == ["checkpoint-20"]


def test_resume_stops_when_no_checkpoint_passes(tmp_path):
    _flip(_checkpoint(tmp_path, 10) / "model.safetensors")
    with pytest.raises(CheckpointIntegrityError, match="checkpoint-10/model.safetensors: content differs"):
        resume_plan(tmp_path, "auto")
    with pytest.raises(CheckpointIntegrityError, match="content differs"):
        resume_plan(tmp_path, str(tmp_path / "checkpoint-10"))  # a damaged checkpoint chosen by hand is refused
    assert resume_plan(tmp_path, "never").checkpoint is None


def test_files_added_after_marking_are_ignored_and_old_markers_still_count(tmp_path):
    checkpoint = _checkpoint(tmp_path, 10)
    (checkpoint / "global_step10_universal").mkdir()  # the cached world-size conversion
    (checkpoint / "global_step10_universal" / "x.pt").write_bytes(b"u")
    (checkpoint / "latest_universal").write_text("global_step10_universal")
    assert verify_checkpoint(checkpoint).ok
    legacy = tmp_path / "checkpoint-20"
    legacy.mkdir()
    (legacy / "COMPLETE").write_text(json.dumps({"step": 20, "time": 0}))
    result = verify_checkpoint(legacy)
    assert result.ok and not result.has_manifest and "not verified" in result.summary()
    assert resume_plan(tmp_path, "auto").checkpoint == legacy


def test_verify_checkpoint_command(tmp_path, capsys):
    good = _checkpoint(tmp_path, 10)
    bad = _checkpoint(tmp_path, 20)
    assert cli(["verify-checkpoint", str(good)]) == 0
    assert "checkpoint-10: OK (3 files" in capsys.readouterr().out
    _flip(bad / "model.safetensors")
    assert cli(["verify-checkpoint", str(bad)]) == 1
    assert "checkpoint-20 FAILED verification: checkpoint-20/model.safetensors" in capsys.readouterr().out
    assert cli(["verify-checkpoint", str(tmp_path)]) == 1  # a run directory: every checkpoint
    out = capsys.readouterr().out
    assert "checkpoint-10: OK" in out and "checkpoint-20 FAILED" in out
    assert cli(["verify-checkpoint", str(tmp_path / "nope")]) == 2


def test_a_real_run_resumes_past_a_damaged_newest_checkpoint(tmp_path):
    """End to end through the pretraining launcher: 4 KB flipped in the newest checkpoint's weights (header intact,
    it would load without complaint) -> the resumed run names it, resumes from the previous one, and finishes."""
    from tests.training.test_pretrain import DEMO, _drive, small

    common = ["train.max_steps=6", "train.save_steps=2", "train.save_total_limit=null", "evaluation=null"]
    first = _drive([str(DEMO), *small(tmp_path, *common[1:], "train.max_steps=4")])
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "pretrain-demo"
    _flip(run_dir / "checkpoint-4" / "model.safetensors", offset=1 << 16)
    resumed = _drive([str(DEMO), *small(tmp_path, *common)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {run_dir / 'checkpoint-2'} (step 2" in resumed.stderr, resumed.stderr[-3000:]
    assert "checkpoint-4/model.safetensors: content differs" in resumed.stderr
    assert json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
