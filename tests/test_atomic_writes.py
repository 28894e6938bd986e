"""Promise 3: a failed or interrupted write never costs what was already saved."""

from __future__ import annotations

import hashlib
import json

import h5py
import pytest

from conftest import run_cli, run_with_file_size_limit, small_config
from keepbest.atomic import sha256_file, write_json_atomic
from keepbest.rundir.layout import PENDING_FILE, RECORD_FILE, WEIGHTS_FILE
from keepbest.rundir.record import BestRecord, read_record, recover, verify_checksum


def test_previous_best_survives_a_failed_save(write_config, tmp_path):
    # hidden 1024: the weights file is ~300 KB, far above the limit set below.
    # Resume states only at the end (every 10000 steps): the best's write fails first.
    path = write_config(
        small_config(
            model={"builder": "mlp", "kwargs": {"hidden": [1024]}},
            train={"epochs": 1},
            resume={"every_steps": 10000, "max_overhead": None},
        )
    )
    assert run_cli("train", "--config", str(path), cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "runs" / "t"
    before = read_record(run_dir)
    before_bytes = (run_dir / WEIGHTS_FILE).read_bytes()

    done = run_with_file_size_limit(path, 100_000, epochs=4)
    assert done.returncode == 6, done.stderr
    assert "could not save the best checkpoint of step 24 (epoch 2)" in done.stderr
    assert "the previous best is intact" in done.stderr
    assert "Traceback" not in done.stderr

    assert (run_dir / WEIGHTS_FILE).read_bytes() == before_bytes
    assert read_record(run_dir) == before
    verify_checksum(run_dir, before)
    with h5py.File(run_dir / WEIGHTS_FILE, "r"):
        pass
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
    assert not (run_dir / PENDING_FILE).exists()


def _record(sha: str, epoch: int) -> dict:
    return BestRecord(
        epoch=epoch,
        monitor="val_loss",
        mode="min",
        value=1.0 / epoch,
        checkpoint=WEIGHTS_FILE,
        sha256=sha,
        saved_at="2026-01-01T00:00:00+00:00",
        versions={},
    ).model_dump()


@pytest.mark.parametrize("weights_replaced", [False, True])
def test_a_commit_killed_between_its_renames_is_resolved_by_checksum(tmp_path, weights_replaced):
    """Kill points 2-3 and 3-4 of record.commit_best, laid out as files on disk."""
    old, new = b"old weights", b"new weights"
    (tmp_path / WEIGHTS_FILE).write_bytes(new if weights_replaced else old)
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    write_json_atomic(tmp_path / RECORD_FILE, _record(old_sha, 1))
    write_json_atomic(tmp_path / PENDING_FILE, _record(new_sha, 2))

    expected_epoch = 2 if weights_replaced else 1
    assert read_record(tmp_path).epoch == expected_epoch
    assert recover(tmp_path).epoch == expected_epoch
    assert not (tmp_path / PENDING_FILE).exists()
    on_disk = json.loads((tmp_path / RECORD_FILE).read_text())
    assert on_disk["epoch"] == expected_epoch
    assert on_disk["sha256"] == sha256_file(tmp_path / WEIGHTS_FILE)


def test_json_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
