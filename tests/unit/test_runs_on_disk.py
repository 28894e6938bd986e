"""Run dirs read without TensorFlow: the layout's names, the status of a run in each
state, stale temporaries, and what may change on resume. Run dirs are written here by
hand (real files, real checksums), so these tests need no training."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keepbest.config import config_to_yaml, load_config
from keepbest.config.diff import training_differences
from keepbest.rundir.layout import RunDir
from keepbest.rundir.lock import RunLock
from keepbest.rundir.record import read_record_or_none
from keepbest.rundir.status import run_status

CONFIG = {
    "name": "t",
    "data": {"source": "digits", "validation": {"split": 0.2}},
    "train": {"epochs": 10},
    "checkpoint": {"monitor": "val_loss", "patience": 3},
}


def make_run(
    folder: Path,
    *,
    epoch: int,
    batch: int = 0,
    best_epoch: int | None = None,
    verified: bool = True,
    stop_kind: str | None = None,
    config: dict = CONFIG,
) -> RunDir:
    """A run dir as training leaves it: config, spec, a best checkpoint and a resume
    state after ``epoch`` epochs (``batch`` batches into the next)."""
    run = RunDir(folder / "runs" / "t")
    run.path.mkdir(parents=True)
    cfg = load_config(config, base_dir=folder)
    run.config_file.write_text(config_to_yaml(cfg))
    run.spec_file.write_text('{"input_shape": [8, 8, 1], "num_classes": 10, "target_shape": []}')
    if best_epoch is not None:
        run.weights_file.write_bytes(b"weights of epoch %d" % best_epoch)
        record = {
            "epoch": best_epoch,
            "monitor": "val_loss",
            "mode": "min",
            "value": 0.25,
            "checkpoint": run.weights_file.name,
            "sha256": hashlib.sha256(run.weights_file.read_bytes()).hexdigest(),
            "verified_value": 0.25 if verified else None,
            "saved_at": "2026-11-29T00:00:00+00:00",
            "versions": {},
        }
        run.record_file.write_text(json.dumps(record))
    if epoch or batch:
        run.resume_dir.mkdir()
        weights = run.resume_dir / "state-000000000001.npz"
        weights.write_bytes(b"state")
        manifest = {
            "progress": {"epoch": epoch, "batch": batch},
            "global_step": 1,
            "stop_kind": stop_kind,
            "history": [],
            "weights_file": weights.name,
            "sha256": hashlib.sha256(b"state").hexdigest(),
            "signature": [],
        }
        (run.resume_dir / "state-000000000001.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize(
    ("shape", "state", "detail"),
    [
        ({"epoch": 0}, "resumable", "no epoch finished yet; train again to start"),
        ({"epoch": 4, "best_epoch": 3}, "resumable", "stopped after epoch 4 of 10; train again"),
        ({"epoch": 4, "batch": 7, "best_epoch": 3}, "resumable", "stopped in epoch 5 of 10"),
        ({"epoch": 10, "best_epoch": 9}, "done", "all 10 epochs are done"),
        (
            {"epoch": 6, "best_epoch": 3, "stop_kind": "patience"},
            "done",
            "stopped after epoch 6 of 10: no improvement of val_loss for 3 epochs (patience 3)",
        ),
        (
            {"epoch": 2, "best_epoch": 1, "stop_kind": "nonfinite"},
            "done",
            "stopped after epoch 2 of 10: val_loss became non-finite",
        ),
        (
            {"epoch": 10, "best_epoch": 9, "verified": False},
            "resumable",
            "training ended after epoch 10; train again to verify the best",
        ),
        (
            {"epoch": 3, "stop_kind": "nonfinite"},
            "failed",
            "training ended after epoch 3 without a best checkpoint (val_loss became non-finite)",
        ),
    ],
)
def test_status_of_each_kind_of_run(tmp_path, shape, state, detail):
    status = run_status(make_run(tmp_path, **shape).path)
    assert (status.state, status.detail[: len(detail)]) == (state, detail)


def test_patience_raised_after_an_early_stop_makes_the_run_resumable(tmp_path):
    run = make_run(tmp_path, epoch=6, best_epoch=3, stop_kind="patience")
    config = yaml.safe_load(run.config_file.read_text())
    config["checkpoint"]["patience"] = 5
    run.config_file.write_text(yaml.safe_dump(config))
    assert run_status(run.path).state == "resumable"


def test_status_of_new_running_and_corrupt_runs(tmp_path):
    assert run_status(tmp_path / "nothing").state == "new"
    run = make_run(tmp_path, epoch=4, best_epoch=3)
    with RunLock(run.path):
        running = run_status(run.path)
    assert running.state == "running" and running.epochs_done == 4
    run.weights_file.write_bytes(b"something else")
    failed = run_status(run.path)
    assert failed.state == "failed" and "does not match the sha256" in failed.detail


def test_stale_temporaries_are_removed_from_the_run_dir_and_resume(tmp_path):
    run = make_run(tmp_path, epoch=2, best_epoch=2)
    left = [run.path / ".tmp-123-ab.best.weights.h5", run.resume_dir / ".tmp-9-cd.state.npz"]
    for path in left:
        path.write_bytes(b"half")
    kept = sorted(p.name for p in run.resume_dir.iterdir() if p not in left)
    assert sorted(run.remove_stale_temps()) == sorted(left)
    assert not any(path.exists() for path in left)
    assert sorted(p.name for p in run.resume_dir.iterdir()) == kept
    assert read_record_or_none(run.path).epoch == 2


def test_the_set_aside_name_is_recognised():
    run = RunDir("runs/t")
    aside = run.set_aside_path()
    assert aside.parent == run.path.parent and RunDir.is_set_aside(aside)
    assert not RunDir.is_set_aside(run.path)


def test_what_may_change_when_a_run_resumes(tmp_path):
    saved = load_config(CONFIG, base_dir=tmp_path)

    def diff(**changes):
        raw = json.loads(json.dumps(CONFIG))
        for dotted, value in changes.items():
            section, _, key = dotted.partition("__")
            raw.setdefault(section, {})[key] = value
        return training_differences(saved, load_config(raw, base_dir=tmp_path))

    assert diff(train__epochs=20) == []  # may grow
    assert diff(checkpoint__patience=5) == []
    assert diff(checkpoint__patience=None) == []  # off
    assert diff(resume__requeue=False, logging__tensorboard=True) == []
    assert diff(train__epochs=5) == ["train.epochs: 10 -> 5"]
    assert diff(checkpoint__patience=2) == ["checkpoint.patience: 3 -> 2"]
    assert diff(optimizer__learning_rate=0.01) == ["optimizer.learning_rate: 0.001 -> 0.01"]


def test_rundir_config_and_data_spec_import_no_tensorflow():
    code = (
        "import sys\n"
        "import keepbest, keepbest.rundir.status, keepbest.rundir.show, keepbest.rundir.table\n"
        "import keepbest.config, keepbest.data.sources, keepbest.monitor, keepbest.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
