"""keepbest on two Slurm nodes: scripts/slurm/train-multinode.sbatch starts one worker per node
with srun; the workers find each other through SlurmClusterResolver (distribute.port_base) and
train with MultiWorkerMirroredStrategy to one verified best checkpoint, the same bytes as the
same run on two devices of one process."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import REPO, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record, verify_checksum

if TYPE_CHECKING:
    from slurm_fixture import SlurmCluster

pytest_plugins = ["slurm_fixture"]

MULTINODE_SBATCH = REPO / "scripts" / "slurm" / "train-multinode.sbatch"


def write_config(folder: Path, **distribute) -> Path:
    cfg = small_config(train={"epochs": 3}, checkpoint={"monitor": "loss"})
    cfg["model"]["kwargs"] = {"hidden": [32]}  # no Dropout: replicas would draw other masks
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


def test_two_node_job_trains_one_verified_best_equal_to_mirrored(
    slurm_multinode: SlurmCluster, tmp_path: Path, mirrored_run: Path
) -> None:
    config = write_config(tmp_path, strategy="multi_worker", port_base=23500, connect_timeout=60)
    job = submit(slurm_multinode, tmp_path, str(MULTINODE_SBATCH), str(config))
    record = slurm_multinode.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)[0]
    log = (tmp_path / f"job-{job}.log").read_text()
    assert record["JobState"] == "COMPLETED", log
    assert record["NodeList"] == "n[1-2]"

    run_dir = tmp_path / "runs" / "t"
    best = read_record(run_dir)
    verify_checksum(run_dir, best)
    assert best.verified_value == best.value
    assert best.sha256 == read_record(mirrored_run).sha256  # across two nodes: the same bytes
    assert [p.name for p in run_dir.glob("*.weights.h5")] == ["best.weights.h5"]
    assert len(read_history(run_dir / "history.csv")) == 3
    # Both workers verified the checkpoint (srun --label: "0: ", "1: "); only the chief reports
    # epochs.
    for task in (0, 1):
        assert re.search(rf"^{task}: verified after reload: .* \(exact\)$", log, re.M), log
    assert re.search(r"^0: epoch 3/3 ", log, re.M) and not re.search(r"^1: epoch", log, re.M)


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
