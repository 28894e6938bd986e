"""The local Slurm cluster does what keepbest's requeue story relies on, for real.

If these fail, the Slurm tests of keepbest itself would fail for reasons that are not
keepbest's: wrong signal delivery, requeues that take minutes, arrays that do not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


# ---- two nodes: n1 and n2, each a slurmd with its own network stack ----------------------------

MULTINODE_SBATCH = (
    Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "train-multinode.sbatch"
)

# Stands in for the Python interpreter of train-multinode.sbatch (KEEPBEST_PYTHON): it ignores
# `-m keepbest train --config ...`, records the signals its task gets, and exits 75 (as keepbest
# does when stopped) a moment after the first stop signal, so that duplicates are counted too.
RECORDER = """#!{python}
import os, pathlib, signal, sys, time

folder = pathlib.Path(os.environ["RECORD_DIR"])
name = f"restart{{os.environ.get('SLURM_RESTART_COUNT', '0')}}-task{{os.environ['SLURM_PROCID']}}"
stop_at = time.monotonic() + 60


def record(signum, frame):
    global stop_at
    with open(folder / f"{{name}}.signals", "a") as out:
        out.write(signal.Signals(signum).name + "\\n")
    stop_at = min(stop_at, time.monotonic() + 1.0)


signal.signal(signal.SIGUSR1, record)
signal.signal(signal.SIGTERM, record)
ready = folder / f"{{name}}.tmp"
ready.write_text(os.environ["SLURMD_NODENAME"])
ready.rename(folder / f"{{name}}.ready")
while time.monotonic() < stop_at:
    time.sleep(0.05)
sys.exit(75)
"""

# One cross-worker all-reduce with MultiWorkerMirroredStrategy, the cluster taken from Slurm.
ALL_REDUCE = """
import json, os, sys
import tensorflow as tf
from keepbest.cluster.distribute import slurm_resolver

resolver = slurm_resolver(port_base=int(sys.argv[1]))
spec = resolver.cluster_spec().as_dict()
strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
rank = int(os.environ["SLURM_PROCID"])
total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(10.0**rank)), axis=None)
print(json.dumps({"rank": rank, "node": os.environ["SLURMD_NODENAME"], "spec": spec,
                  "task": [resolver.task_type, resolver.task_id], "sum": float(total)}))
"""


def submit_recorded(cluster: SlurmCluster, folder: Path) -> str:
    """train-multinode.sbatch on both nodes with RECORDER as its Python; waits until both tasks
    have their signal handlers installed."""
    recorder = folder / "recorder.py"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    job = cluster.sbatch(
        f"--chdir={folder}",
        f"--output={folder}/job.log",
        f"--export=ALL,KEEPBEST_PYTHON={recorder},RECORD_DIR={folder}",
        str(MULTINODE_SBATCH),
        "exp.yaml",
    )
    for task in (0, 1):
        wait_for_file(folder / f"restart0-task{task}.ready")
    return job


def test_srun_runs_one_task_on_each_node_with_its_own_network(
    slurm_multinode: SlurmCluster,
) -> None:
    report = (
        'echo "$SLURM_PROCID $SLURMD_NODENAME $(hostname) $(stat -L -c %i /proc/self/ns/net)'
        ' $(getent hosts n1 n2 | tr -s " \\n" "=,")"'
    )
    done = slurm_multinode.run("srun", "-N2", "--ntasks-per-node=1", "bash", "-c", report)
    lines = sorted(done.stdout.split("\n")[:-1])
    tasks = [line.split() for line in lines]
    assert [(rank, node, host) for rank, node, host, _, _ in tasks] == [
        ("0", "n1", "n1"),
        ("1", "n2", "n2"),
    ], done.stdout
    namespaces = {netns for _, _, _, netns, _ in tasks}
    here = str(os.stat("/proc/self/ns/net").st_ino)
    assert len(namespaces) == 2 and here not in namespaces, "nodes must have their own networks"
    for *_, hosts in tasks:
        assert hosts == "10.199.0.11=n1,10.199.0.12=n2,", done.stdout


def test_two_node_multi_worker_all_reduce(slurm_multinode: SlurmCluster, tmp_path: Path) -> None:
    """Both workers listen on the same port, each on its own node, and sum across the nodes."""
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    start = time.monotonic()
    done = slurm_multinode.run(
        "srun", "-N2", "--ntasks-per-node=1", sys.executable, str(script), "23456", timeout=180
    )
    print(f"2-node all-reduce job: {time.monotonic() - start:.1f} s")
    results = sorted(
        (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")),
        key=lambda result: result["rank"],
    )
    spec = {"worker": ["n1:23456", "n2:23456"]}
    assert results == [
        {"rank": 0, "node": "n1", "spec": spec, "task": ["worker", 0], "sum": 11.0},
        {"rank": 1, "node": "n2", "spec": spec, "task": ["worker", 1], "sum": 11.0},
    ], done.stdout + done.stderr


@pytest.mark.parametrize(
    ("options", "per_task", "shell_forwards"),
    [
        # Every step and the batch shell: directly, and once more through the shell's forward.
        (["--full"], 2, True),
        # The batch shell only, like `#SBATCH --signal=B:USR1@...`: through the forward only.
        (["--batch"], 1, True),
        # The job steps only: directly; the batch shell gets nothing.
        ([], 1, False),
    ],
    ids=["full", "batch", "steps"],
)
def test_usr1_reaches_every_task_of_a_two_node_job(
    slurm_multinode: SlurmCluster, tmp_path: Path, options, per_task, shell_forwards
) -> None:
    job = submit_recorded(slurm_multinode, tmp_path)
    slurm_multinode.run("scancel", "--signal=USR1", *options, job)
    record = slurm_multinode.wait_job(job, ("COMPLETED", "FAILED"))[0]
    log = (tmp_path / "job.log").read_text()
    for task in (0, 1):
        received = (tmp_path / f"restart0-task{task}.signals").read_text().split()
        assert received == ["SIGUSR1"] * per_task, f"task {task}: {received}\n{log}"
    assert ("batch shell got SIGUSR1; forwarding" in log) == shell_forwards, log
    # The shell survived the signal and exits with the workers' status (75: stopped).
    assert "workers done (srun exit status 75)" in log, log
    assert record["ExitCode"] == "75:0", record


def test_requeue_of_a_two_node_job_runs_both_tasks_again(
    slurm_multinode: SlurmCluster, tmp_path: Path
) -> None:
    job = submit_recorded(slurm_multinode, tmp_path)
    start = time.monotonic()
    slurm_multinode.run("scontrol", "requeue", job)
    for task, node in ((0, "n1"), (1, "n2")):
        assert wait_for_file(tmp_path / f"restart1-task{task}.ready", timeout=60) == node
    elapsed = time.monotonic() - start
    slurm_multinode.wait_job(job, "RUNNING", Restarts="1")
    slurm_multinode.run("scancel", job)
    print(f"2-node requeue -> both tasks running again: {elapsed:.1f} s")
    for task in (0, 1):  # Slurm's SIGTERM before the requeue, through the batch shell
        assert (tmp_path / f"restart0-task{task}.signals").read_text().split() == ["SIGTERM"]
    log = (tmp_path / "job.log").read_text()
    assert "(restart 0) on n[1-2] (n1)" in log and "(restart 1) on n[1-2] (n1)" in log, log
    assert elapsed < 20, f"requeue -> running took {elapsed:.1f} s"


def test_multinode_up_again_is_a_no_op_and_bad_node_counts_are_refused(
    slurm_multinode: SlurmCluster, tmp_path: Path
) -> None:
    from slurm_fixture import SCRIPT  # already imported as a plugin

    def script(*args: str) -> subprocess.CompletedProcess:
        command = ["bash", str(SCRIPT), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    directory = str(slurm_multinode.dir)
    again = script("up", "--nodes", "2", directory)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"export SLURM_CONF={directory}/etc/slurm.conf\nexport PATH={directory}/bin:$PATH\n"
    )
    assert script("status", directory).returncode == 0
    refused = {
        ("up", "--nodes", "3", directory): "runs with 2 node(s); run 'down' first",
        ("up", "--nodes", "0", str(tmp_path)): "--nodes wants 1..99, got '0'",
        ("up", "--nodes=two", str(tmp_path)): "--nodes wants 1..99, got 'two'",
        ("down", "--nodes", "2", str(tmp_path)): "--nodes applies to 'up' only",
        ("up", "--nodes", "2", "relative/dir"): "DIR must be an absolute path",
    }
    for args, message in refused.items():
        done = script(*args)
        assert (done.returncode, done.stdout) == (1, ""), args
        assert done.stderr.count("\n") == 1 and message in done.stderr, (args, done.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing was created for refused commands
    assert script("status", directory).returncode == 0  # the running cluster is unharmed
