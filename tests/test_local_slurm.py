"""The local Slurm cluster does what keepbest's requeue story relies on, for real.

If these fail, the Slurm tests of keepbest itself would fail for reasons that are not
keepbest's: wrong signal delivery, requeues that take minutes, arrays that do not run.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from slurm_fixture import SlurmCluster

# The session-wide `slurm_cluster` fixture. tests/ has no __init__.py, so pytest puts tests/ (not
# the repository root) on sys.path; importing the module here instead of registering it would
# also stop pytest from rewriting its asserts.
pytest_plugins = ["slurm_fixture"]

USR1_SCRIPT = """#!/usr/bin/env python3
import pathlib
import signal
import sys
import time

out = pathlib.Path(sys.argv[1])


def on_usr1(signum, frame):
    out.write_text("got SIGUSR1\\n")
    sys.exit(0)


signal.signal(signal.SIGUSR1, on_usr1)
pathlib.Path(str(out) + ".ready").write_text("ready\\n")
time.sleep(60)
sys.exit(3)
"""


def wait_for_file(path: Path, timeout: float = 30) -> str:
    """Contents of PATH once it exists; jobs write their markers asynchronously."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout}s"
        time.sleep(0.1)
    return path.read_text()


def test_wrap_job_runs_and_writes_its_output(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = slurm_cluster.sbatch("-o", str(tmp_path / "out.txt"), "--wrap", "echo hi; sleep 1")
    slurm_cluster.wait_job(job, "COMPLETED")
    assert (tmp_path / "out.txt").read_text() == "hi\n"


def test_requeue_runs_the_job_again_with_restart_count(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    job = slurm_cluster.sbatch(
        "-o",
        str(tmp_path / "out.txt"),
        "--wrap",
        f"echo restart=${{SLURM_RESTART_COUNT:-unset}} >> {runs}; sleep 30",
    )
    slurm_cluster.wait_job(job, "RUNNING")
    wait_for_file(runs)
    start = time.monotonic()
    slurm_cluster.run("scontrol", "requeue", job)
    slurm_cluster.wait_job(job, "RUNNING", timeout=60, Restarts="1")
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 10
    while runs.read_text().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    slurm_cluster.run("scancel", job)
    print(f"requeue -> running again: {elapsed:.1f} s")
    assert runs.read_text() == "restart=unset\nrestart=1\n"
    # cred_expire=5 and sched_interval=1 in slurm.conf; Slurm's defaults take ~2 minutes.
    assert elapsed < 15, f"requeue -> running took {elapsed:.1f} s"


def test_usr1_reaches_a_python_batch_script(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(USR1_SCRIPT)
    marker = tmp_path / "usr1.txt"
    job = slurm_cluster.sbatch("-o", str(tmp_path / "out.txt"), str(script), str(marker))
    # The handler is installed before the ready file exists; a signal before it would kill.
    wait_for_file(Path(f"{marker}.ready"))
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)
    slurm_cluster.wait_job(job, "COMPLETED", ExitCode="0:0")
    assert marker.read_text() == "got SIGUSR1\n"


def test_array_runs_every_task(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = slurm_cluster.sbatch(
        "--array=0-2",
        "-o",
        str(tmp_path / "task-%a.txt"),
        "--wrap",
        "echo task=$SLURM_ARRAY_TASK_ID",
    )
    records = slurm_cluster.wait_job(job, "COMPLETED", count=3)
    assert sorted(rec["ArrayTaskId"] for rec in records) == ["0", "1", "2"]
    for task in range(3):
        assert (tmp_path / f"task-{task}.txt").read_text() == f"task={task}\n"


def test_up_is_idempotent_and_down_leaves_no_process(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second cluster beside the session's one (own ports) goes up, up again, and fully down."""
    from slurm_fixture import SCRIPT, cluster_processes  # already imported as a plugin

    directory = tmp_path_factory.mktemp("slurm2")

    def script(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), action, str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    try:
        start = time.monotonic()
        first = script("up")
        up_seconds = time.monotonic() - start
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"export SLURM_CONF={directory}/etc/slurm.conf\n"
        again = script("up")
        assert (again.returncode, again.stdout) == (0, first.stdout)
        assert script("status").returncode == 0
        print(f"second cluster up: {up_seconds:.1f} s")
    finally:
        assert script("down").returncode == 0
    assert script("status").returncode != 0
    assert script("down").returncode == 0, "down must succeed when already down"
    assert cluster_processes(directory) == []
    assert slurm_cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() in {"idle", "mixed"}
