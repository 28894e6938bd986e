"""keepbest on two Slurm nodes: scripts/slurm/train-multinode.sbatch starts one worker per node
with srun; the workers find each other through SlurmClusterResolver (distribute.port_base) and
train with MultiWorkerMirroredStrategy to one verified best checkpoint, the same bytes as the
same run on two devices of one process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import REPO, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record, verify_checksum
from keepbest.rundir.resume_store import ResumeStore

if TYPE_CHECKING:
    from slurm_fixture import SlurmCluster

pytest_plugins = ["slurm_fixture"]

MULTINODE_SBATCH = REPO / "scripts" / "slurm" / "train-multinode.sbatch"


def write_config(folder: Path, **distribute) -> Path:
    # 90 steps per epoch, 270 in all; evaluations every 30 steps (mid-epoch mostly); with
    # several workers, stop requests and resume states are agreed on every 10 steps.
    cfg = small_config(
        data={"batch_size": 16},
        train={"epochs": 3},
        checkpoint={"monitor": "loss", "every_steps": 30},
    )
    cfg["model"]["kwargs"] = {"hidden": [32]}  # no Dropout: replicas would draw other masks
    if distribute.get("strategy") == "multi_worker":
        distribute = {"sync_every_steps": 10, "heartbeat_timeout": 10, **distribute}
    cfg["distribute"] = distribute
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same training in one process on two logical CPUs (tests/test_distribute.py shows
    that two MultiWorkerMirroredStrategy workers on localhost give these exact bytes)."""
    config = write_config(tmp_path_factory.mktemp("mirrored"), strategy="mirrored", logical_cpus=2)
    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    return config.parent / "runs" / "t"


def submit(cluster: SlurmCluster, folder: Path, *args: str) -> str:
    return cluster.sbatch(
        f"--chdir={folder}",
        f"--output={folder}/job-%j.log",
        f"--export=ALL,KEEPBEST_PYTHON={sys.executable},TF_CPP_MIN_LOG_LEVEL=2",
        *args,
    )


# What keepbest's workers see of Slurm, without Slurm: slurm_resolver in one fresh interpreter
# (TensorFlow loads once), for each case only that case's SLURM_* variables, on a host without
# nvidia-smi and without CUDA_VISIBLE_DEVICES.
RESOLVE = """
import json, os, sys
from keepbest.cluster.distribute import slurm_resolver
from keepbest.errors import ConfigError

results = []
for case in json.loads(sys.argv[1]):
    for key in [key for key in os.environ if key.startswith("SLURM_")]:
        del os.environ[key]
    os.environ.update(case)
    try:
        resolver = slurm_resolver(port_base=23456)
    except ConfigError as exc:
        results.append({"error": str(exc)})
        continue
    results.append({
        "spec": resolver.cluster_spec().as_dict(),
        "task": [resolver.task_type, resolver.task_id],
        "accelerators": resolver.num_accelerators(),
    })
print(json.dumps(results))
"""

STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "2"}
CASES = {
    # srun -N2 --ntasks-per-node=1, seen by task 1
    "two nodes": {
        **STEP,
        "SLURM_PROCID": "1",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
    },
    # srun -N1 -n2 (the single-node fallback), seen by task 0
    "one node": {
        **STEP,
        "SLURM_PROCID": "0",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_STEP_TASKS_PER_NODE": "2",
    },
    # the batch script itself: no SLURM_STEP_* variables
    "batch script": {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n[1-2]"},
}


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PATH"] = os.path.dirname(sys.executable)  # no nvidia-smi there
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE, json.dumps(list(CASES.values()))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(zip(CASES, json.loads(done.stdout), strict=True))


def test_slurm_resolver_lays_out_the_step_on_a_host_without_gpus(resolved) -> None:
    """One task per node: the same port on every node; two tasks on one node: two ports. No
    accelerators (TensorFlow's own resolver fails here: nvidia-smi missing, or 0 GPUs)."""
    assert resolved["two nodes"] == {
        "spec": {"worker": ["n1:23456", "n2:23456"]},
        "task": ["worker", 1],
        "accelerators": {},
    }
    assert resolved["one node"] == {
        "spec": {"worker": ["localhost:23456", "localhost:23457"]},
        "task": ["worker", 0],
        "accelerators": {},
    }


def test_slurm_resolver_outside_a_step_is_one_clear_error(resolved) -> None:
    error = resolved["batch script"]["error"]
    assert error.startswith(
        "distribute.strategy: multi_worker in Slurm job 7 needs one worker per task started "
        "with srun (SLURM_STEP_NUM_TASKS not found"
    )
    assert "\n" not in error


@pytest.fixture(scope="module")
def two_node_run(slurm_multinode: SlurmCluster, tmp_path_factory) -> tuple[Path, str]:
    """The config trained by a 2-node job without interruption: its run dir and its log."""
    folder = tmp_path_factory.mktemp("two-nodes")
    config = write_config(folder, strategy="multi_worker", port_base=23500, connect_timeout=60)
    job = submit(slurm_multinode, folder, str(MULTINODE_SBATCH), str(config))
    record = slurm_multinode.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)[0]
    log = (folder / f"job-{job}.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    assert record["NodeList"] == "n[1-2]"
    return folder / "runs" / "t", log


def test_two_node_job_trains_one_verified_best_equal_to_mirrored(
    two_node_run: tuple[Path, str], mirrored_run: Path
) -> None:
    run_dir, log = two_node_run
    best = read_record(run_dir)
    verify_checksum(run_dir, best)
    assert best.verified_value == best.value
    assert best.sha256 == read_record(mirrored_run).sha256  # across two nodes: the same bytes
    assert [p.name for p in run_dir.glob("*.weights.h5")] == ["best.weights.h5"]
    assert [row["step"] for row in read_history(run_dir / "history.csv")] == list(
        range(30, 271, 30)
    )
    # Both workers verified the checkpoint (srun --label: "0: ", "1: "); only the chief reports
    # evaluations.
    for task in (0, 1):
        assert re.search(rf"^{task}: verified after reload: .* \(exact\)$", log, re.M), log
    assert re.search(r"^0: step 270 \(epoch 3/3\) ", log, re.M), log
    assert not re.search(r"^1: step", log, re.M), log


def comparable(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "seconds"}
        for row in read_history(run_dir / "history.csv")
    ]


def wait_for_rows(run_dir: Path, rows: int, cluster: SlurmCluster, job: str) -> None:
    deadline = time.monotonic() + 240
    while len(read_history(run_dir / "history.csv")) < rows:
        assert cluster.job(job)["JobState"] in ("PENDING", "RUNNING", "CONFIGURING")
        assert time.monotonic() < deadline, f"job {job} made no progress"
        time.sleep(0.2)


def test_a_preempted_two_node_job_requeues_resumes_and_ends_bit_identical(
    slurm_multinode: SlurmCluster, tmp_path: Path, two_node_run: tuple[Path, str]
) -> None:
    """USR1 to every step of the job (as a preemption notice): both workers stop at the
    same step, the chief saves and requeues, the requeued job resumes both workers and
    ends with the uninterrupted 2-node run's bytes and history."""
    config = write_config(tmp_path, strategy="multi_worker", port_base=23510, connect_timeout=60)
    job = submit(slurm_multinode, tmp_path, str(MULTINODE_SBATCH), str(config))
    run_dir = tmp_path / "runs" / "t"
    # Signalled after the first evaluation (step 30): the 60 steps to the epoch's end
    # outlast scancel and Slurm's delivery (after step 60, 30 steps of a few ms each did
    # not always: the stop then landed at the epoch end, step 90).
    wait_for_rows(run_dir, 1, slurm_multinode, job)
    slurm_multinode.run("scancel", "--signal=USR1", "--full", job)
    record = slurm_multinode.wait_job(
        job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=300, Restarts="1"
    )[0]
    log = (tmp_path / f"job-{job}.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    stops = re.findall(r"^(\d): error: stopped by .* at step (\d+) ", log, re.M)
    assert sorted(task for task, _ in stops) == ["0", "1"], log
    assert len({step for _, step in stops}) == 1, log  # the same step on both workers
    assert int(stops[0][1]) < 270 and int(stops[0][1]) % 90, log  # mid-training, mid-epoch
    assert "requeued Slurm job" in log, log
    assert re.search(r"^0: resuming at epoch \d, batch \d+", log, re.M), log
    reference, _ = two_node_run
    assert read_record(run_dir).sha256 == read_record(reference).sha256
    assert comparable(run_dir) == comparable(reference)


def worker_pid(config: Path, task: int) -> int:
    """The pid of the keepbest worker of ``task`` training ``config`` (this machine)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            str(config).encode() in cmdline
            and b"keepbest" in cmdline
            and (f"SLURM_PROCID={task}".encode() in environ)
        ):
            return int(proc.name)
    raise AssertionError(f"no worker {task} for {config}")


def test_a_killed_worker_stops_the_other_with_one_line_and_a_requeue_resumes(
    slurm_multinode: SlurmCluster, tmp_path: Path, two_node_run: tuple[Path, str]
) -> None:
    config = write_config(tmp_path, strategy="multi_worker", port_base=23520, connect_timeout=60)
    job = submit(slurm_multinode, tmp_path, str(MULTINODE_SBATCH), str(config))
    run_dir = tmp_path / "runs" / "t"
    wait_for_rows(run_dir, 3, slurm_multinode, job)
    os.kill(worker_pid(config, 1), signal.SIGKILL)
    killed = time.monotonic()
    record = slurm_multinode.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=120)[0]
    ended = time.monotonic() - killed
    log = (tmp_path / f"job-{job}.log").read_text()
    assert record["JobState"] == "FAILED", log
    assert ended < 10 + 30, f"the chief took {ended:.0f} s to notice (heartbeat_timeout 10 s)"
    chief = [line for line in log.splitlines() if line.startswith("0: ")]
    assert chief[-1].startswith("0: error: distribute: worker 1 (n2:23520) stopped answering"), log
    assert "Traceback" not in "\n".join(chief), log
    saved = ResumeStore(run_dir).latest()
    assert saved is not None

    slurm_multinode.run("scontrol", "requeue", job)
    record = slurm_multinode.wait_job(job, "COMPLETED", timeout=300)[0]
    log = (tmp_path / f"job-{job}.log").read_text()
    resumed_at = saved.progress.epoch + 1
    assert re.search(rf"^0: resuming at epoch {resumed_at}", log, re.M), log
    reference, _ = two_node_run
    assert read_record(run_dir).sha256 == read_record(reference).sha256
    assert comparable(run_dir) == comparable(reference)


def test_multi_worker_in_the_batch_script_without_srun_is_one_clear_error(
    slurm_multinode: SlurmCluster, tmp_path: Path
) -> None:
    """The batch script itself is no worker step: one line naming srun, exit 2."""
    config = write_config(tmp_path, strategy="multi_worker")
    command = f"exec {sys.executable} -m keepbest train --config {config}"
    job = submit(slurm_multinode, tmp_path, "--nodes=2", "--wrap", command)
    record = slurm_multinode.wait_job(job, ("COMPLETED", "FAILED"), timeout=120)[0]
    log = (tmp_path / f"job-{job}.log").read_text()
    assert record["ExitCode"] == "2:0", log
    lines = log.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in log, log
    assert "needs one worker per task started with srun" in lines[0], log
    assert not (tmp_path / "runs").exists()
