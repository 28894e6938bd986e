"""`keepbest tune` as a Slurm job array on a real scheduler: two array tasks share one
journal store; one is signalled mid-trial (as before preemption), requeues itself, and
resumes its own trial in the same run dir when it runs again; the trial counts once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import yaml

from conftest import REPO, run_cli, small_config
from keepbest.rundir.history import read_history

if TYPE_CHECKING:
    from slurm_fixture import SlurmCluster

pytest_plugins = ["slurm_fixture"]

TUNE_SBATCH = REPO / "scripts" / "slurm" / "tune.sbatch"
TRIALS = 3
EPOCHS = 5


def trials_of(folder: Path) -> list:
    path = folder / "runs" / "st" / "optuna.journal"
    if not path.is_file():
        return []
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    study = optuna.load_study(study_name="st", storage=optuna.storages.JournalStorage(backend))
    return study.get_trials()


def test_a_tune_array_shares_one_study_and_a_requeued_task_resumes_its_trial(
    slurm_cluster: SlurmCluster, tmp_path: Path
):
    # ~180 steps per epoch, 5 epochs: the signal, sent once the trial has finished its first
    # epoch, lands mid-trial (finding the trial's task and signalling it through Slurm took
    # longer than the rest of a 2-epoch trial once on a busy machine: it stopped during the
    # final verification, and the trial resumed with nothing left to train)
    cfg = small_config(name="st", data={"batch_size": 8}, train={"epochs": EPOCHS})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    space = {"optimizer.learning_rate": {"log_uniform": [0.001, 0.01]}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    array = slurm_cluster.sbatch(
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/tune-%A_%a.log",
        "--array=0-1",
        "--cpus-per-task=1",
        f"--export=ALL,KEEPBEST_PYTHON={sys.executable},TF_CPP_MIN_LOG_LEVEL=2",
        str(TUNE_SBATCH),
        "exp.yaml",
        "space.yaml",
        str(TRIALS),
        "--sampler",
        "random",
    )
    deadline = time.monotonic() + 180
    while True:  # the first trial with a finished epoch: signal the task that trains it
        started = [
            t
            for t in trials_of(tmp_path)
            if t.state == optuna.trial.TrialState.RUNNING
            and "run_dir" in t.user_attrs
            and read_history(tmp_path / "runs/st" / t.user_attrs["run_dir"] / "history.csv")
        ]
        if started:
            break
        assert time.monotonic() < deadline, slurm_cluster.jobs(array)
        time.sleep(0.2)
    victim = started[0]
    job = victim.user_attrs["keepbest_owner"]["slurm_job"]
    # Named as ARRAY_TASK: one task's bare job id can be the array's, which is every task.
    [task] = [r["ArrayTaskId"] for r in slurm_cluster.jobs(array) if r["JobId"] == job]
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", f"{array}_{task}")

    records = slurm_cluster.wait_job(array, "COMPLETED", timeout=300, count=2)
    [signalled] = [r for r in records if r["JobId"] == job]
    assert int(signalled["Restarts"]) >= 1
    # the requeue named the one task: its sibling ran once, undisturbed
    assert [int(r["Restarts"]) for r in records if r["JobId"] != job] == [0], records
    logs = {
        r["JobId"]: (tmp_path / f"tune-{array}_{r['ArrayTaskId']}.log").read_text() for r in records
    }
    for line in ["stopped by SIGUSR1", "requeued Slurm job", "(restart 1)"]:
        assert line in logs[job], logs[job]
    # the trial resumes in whichever task claims it first: the requeued one (same
    # SLURM_JOB_ID), or the other one, on this one-node cluster where the stopped
    # process is seen to be gone
    resumed_by = [
        log
        for log in logs.values()
        if f"== trial {victim.number}: resuming" in log and "resuming at epoch" in log
    ]
    assert len(resumed_by) == 1, logs

    trials = trials_of(tmp_path)
    assert [t.number for t in trials] == list(range(TRIALS))  # the resumed trial counted once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(": new (" in log for log in logs.values())  # both tasks claimed trials
    resumed = tmp_path / "runs/st" / trials[victim.number].user_attrs["run_dir"]
    assert [row["epoch"] for row in read_history(resumed / "history.csv")] == list(
        range(1, EPOCHS + 1)
    )

    summary = run_cli("summary", "runs/st", "--json", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    rows = json.loads(summary.stdout)
    assert [row["status"] for row in rows] == ["done"] * TRIALS  # a run dir's word
    assert all(row["verified"] for row in rows)
