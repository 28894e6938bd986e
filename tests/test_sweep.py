"""`keepbest sweep` and `keepbest summary` without Slurm: a serial sweep trains every
run, a second call skips the finished ones and continues the stopped ones, a bad grid
value refuses the whole sweep before anything trains, and summary ranks by the
monitor's own direction."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record

NAMES = ["learning_rate=0.003", "learning_rate=0.03"]


def write(folder: Path, cfg: dict, grid: dict) -> None:
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))


def test_a_serial_sweep_trains_skips_finished_runs_and_continues_stopped_ones(tmp_path):
    cfg = small_config(name="sw", train={"epochs": 1}, checkpoint={"monitor": "val_accuracy"})
    write(tmp_path, cfg, {"optimizer.learning_rate": [0.003, 0.03]})
    first = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    headings = [line for line in first.stdout.splitlines() if line.startswith("== ")]
    assert headings == [f"== run 1/2: {NAMES[0]}", f"== run 2/2: {NAMES[1]}"]  # from 1
    runs = tmp_path / "runs" / "sw"
    assert sorted(p.name for p in runs.iterdir()) == NAMES
    trained = {name: (runs / name / "best.weights.h5").stat().st_mtime_ns for name in NAMES}

    again = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("is complete (all 1 epochs are done); nothing to train") == 2
    assert {n: (runs / n / "best.weights.h5").stat().st_mtime_ns for n in NAMES} == trained
    # --index counts from 0, as --dry-run lists the runs and Slurm's --array=0-1 does
    listed = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", "--dry-run", cwd=tmp_path)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()[:2]] == ["0", "1"]
    only = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", "--index", "1", cwd=tmp_path)
    assert only.returncode == 0, only.stderr
    assert only.stdout.startswith(f"== run 2/2: {NAMES[1]}\n")

    # More epochs: each run continues from its resume state instead of starting over.
    longer = run_cli(
        "sweep", "exp.yaml", "--grid", "grid.yaml", "--set", "train.epochs=2", cwd=tmp_path
    )
    assert longer.returncode == 0, longer.stderr
    assert longer.stdout.count("resuming at epoch 2") == 2
    for name in NAMES:
        assert [row["epoch"] for row in read_history(runs / name / "history.csv")] == [1, 2]

    summary = run_cli("summary", str(runs), "--json", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    rows = json.loads(summary.stdout)
    accuracies = {name: read_record(runs / name).value for name in NAMES}
    assert [row["name"] for row in rows] == sorted(NAMES, key=accuracies.get, reverse=True)
    assert [row["mode"] for row in rows] == ["max", "max"]
    assert all(row["status"] == "done" and row["verified"] for row in rows)


def test_a_bad_value_anywhere_in_the_grid_refuses_the_whole_sweep(tmp_path):
    write(tmp_path, small_config(name="sw"), {"optimizer.learning_rate": [0.01, -1.0]})
    done = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: run 2/2 (learning_rate=-1.0): ")
    expected = "optimizer.learning_rate: must be a finite number greater than 0 (got -1.0)"
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # not even run 0 trained
