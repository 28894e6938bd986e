"""keepbest as Slurm batch jobs on a real scheduler: preempted or requeued jobs save,
requeue themselves, resume, and end with the same best checkpoint as a local run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import REPO, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record

if TYPE_CHECKING:
    from slurm_fixture import SlurmCluster

pytest_plugins = ["slurm_fixture"]

TRAIN_SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"
SWEEP_SBATCH = REPO / "scripts" / "slurm" / "sweep.sbatch"


def job_config(folder: Path) -> Path:
    # ~360 steps per epoch: signals land mid-epoch; Dropout exercises the seed state.
    cfg = small_config(data={"batch_size": 4}, train={"epochs": 4})
    cfg["model"]["kwargs"] = {"hidden": [32], "dropout": 0.2}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> Path:
    """The same config trained without interruption, outside Slurm."""
    config = job_config(tmp_path_factory.mktemp("local"))
    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    return config.parent / "runs" / "t"


def submit(cluster: SlurmCluster, folder: Path, script: Path, *args: str) -> str:
    return cluster.sbatch(
        f"--chdir={folder}",
        f"--output={folder}/job-%j.log",
        "--cpus-per-task=1",
        f"--export=ALL,KEEPBEST_PYTHON={sys.executable},TF_CPP_MIN_LOG_LEVEL=2",
        str(script),
        *args,
    )


def wait_for_rows(run_dir: Path, rows: int, cluster: SlurmCluster, job: str, timeout=120.0):
    deadline = time.monotonic() + timeout
    while len(read_history(run_dir / "history.csv")) < rows:
        state = cluster.job(job).get("JobState")
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job} is {state}"
        assert time.monotonic() < deadline, f"job {job} made no progress"
        time.sleep(0.1)


def wait_until_done(cluster: SlurmCluster, job: str, timeout: float = 240.0) -> dict:
    """The job's record once it COMPLETED (fails at once on FAILED/CANCELLED)."""
    deadline = time.monotonic() + timeout
    while True:
        record = cluster.job(job)
        state = record.get("JobState")
        if state == "COMPLETED":
            return record
        assert state not in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), record
        assert time.monotonic() < deadline, f"job {job} still {state} after {timeout}s"
        time.sleep(0.2)


def assert_matches_reference(run_dir: Path, reference: Path) -> None:
    mine, theirs = read_record(run_dir), read_record(reference)
    assert (mine.epoch, mine.value, mine.sha256) == (theirs.epoch, theirs.value, theirs.sha256)
    assert mine.verified_value == mine.value

    def strip(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert strip(read_history(run_dir / "history.csv")) == strip(
        read_history(reference / "history.csv")
    )


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        # #SBATCH --signal=B:USR1 (or preemption): keepbest saves and requeues itself.
        (("scancel", "--signal=USR1", "--batch"), ["stopped by SIGUSR1", "requeued Slurm job"]),
        # scontrol requeue of a running job: Slurm sends SIGTERM, then requeues.
        (("scontrol", "requeue"), ["stopped by SIGTERM"]),
    ],
    ids=["usr1", "scontrol-requeue"],
)
def test_interrupted_job_requeues_resumes_and_matches_a_local_run(
    slurm_cluster: SlurmCluster, tmp_path: Path, local_reference: Path, action, expected
):
    config = job_config(tmp_path)
    job = submit(slurm_cluster, tmp_path, TRAIN_SBATCH, str(config))
    run_dir = tmp_path / "runs" / "t"
    wait_for_rows(run_dir, 1, slurm_cluster, job)
    slurm_cluster.run(*action, job)

    record = wait_until_done(slurm_cluster, job)
    assert int(record["Restarts"]) >= 1
    log = (tmp_path / f"job-{job}.log").read_text()
    for line in [*expected, "resuming at epoch", "(restart 1)"]:
        assert line in log
    assert_matches_reference(run_dir, local_reference)


def test_array_sweep_trains_every_run_and_summary_ranks_them(
    slurm_cluster: SlurmCluster, tmp_path: Path
):
    cfg = small_config(name="sw", train={"epochs": 2})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (tmp_path / "grid.yaml").write_text("optimizer.learning_rate: [0.001, 0.003, 0.01]\n")
    dry = run_cli("sweep", "exp.yaml", "--grid", "grid.yaml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "sbatch --array=0-2" in dry.stdout

    job = slurm_cluster.sbatch(
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/sweep-%A_%a.log",
        "--array=0-2",
        "--cpus-per-task=1",
        f"--export=ALL,KEEPBEST_PYTHON={sys.executable},TF_CPP_MIN_LOG_LEVEL=2",
        str(SWEEP_SBATCH),
        "exp.yaml",
        "grid.yaml",
    )
    slurm_cluster.wait_job(job, "COMPLETED", timeout=240, count=3)

    summary = run_cli("summary", str(tmp_path / "runs" / "sw"), "--json", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    rows = json.loads(summary.stdout)
    assert sorted(row["name"] for row in rows) == [
        "learning_rate=0.001",
        "learning_rate=0.003",
        "learning_rate=0.01",
    ]
    assert all(row["status"] == "done" and row["verified"] for row in rows)
    values = [row["value"] for row in rows]
    assert values == sorted(values)  # val_loss: best first
    for row in rows:  # the keys that differ between the runs, with each run's value
        assert row["swept"] == {"optimizer.learning_rate": float(row["name"].split("=")[1])}
