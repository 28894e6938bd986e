"""tf.distribute: MirroredStrategy on two logical CPUs and two MultiWorkerMirroredStrategy
workers on localhost give one verified best checkpoint, equal to each other bit for bit
and to a single-device run within the documented tolerance."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record, verify_checksum

# Replicas split each batch and sum gradients in another order: documented tolerance.
TOLERANCE = 1e-4


def distributed_config(**distribute) -> dict:
    # 12 steps per epoch: evaluation points every 6 steps, mid-epoch and at epoch ends.
    cfg = small_config(train={"epochs": 3}, checkpoint={"monitor": "loss", "every_steps": 6})
    cfg["model"]["kwargs"] = {"hidden": [32]}  # no Dropout: replicas draw other masks
    if distribute:
        cfg["distribute"] = distribute
    return cfg


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(config: Path, count: int, prefix: dict | None = None) -> list:
    """``train --config config`` as ``count`` workers of one multi-worker run on
    localhost (TF_CONFIG), each its own process; ``prefix``: a command before worker i's."""
    ports = free_ports(count)
    workers = []
    for index in range(count):
        tf_config = {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "keepbest", "train", "--config", str(config)]
        workers.append(
            subprocess.Popen(
                [*(prefix or {}).get(index, []), *command],
                cwd=config.parent,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return workers


def train_in(folder, cfg: dict, env: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run_cli("train", "--config", str(path), cwd=folder, env=env), folder / "runs" / "t"


@pytest.fixture(scope="module")
def single_and_mirrored(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    single, single_dir = train_in(root / "single", distributed_config())
    assert single.returncode == 0, single.stderr
    mirrored, mirrored_dir = train_in(
        root / "mirrored", distributed_config(strategy="mirrored", logical_cpus=2)
    )
    assert mirrored.returncode == 0, mirrored.stderr
    return single_dir, mirrored_dir


def test_mirrored_on_two_logical_cpus_matches_single_device(single_and_mirrored):
    single_dir, mirrored_dir = single_and_mirrored
    single, mirrored = read_record(single_dir), read_record(mirrored_dir)
    verify_checksum(mirrored_dir, mirrored)
    assert mirrored.verified_value == mirrored.value
    assert mirrored.epoch == single.epoch
    assert mirrored.value == pytest.approx(single.value, rel=TOLERANCE)
    one_device = read_history(single_dir / "history.csv")
    two_replicas = read_history(mirrored_dir / "history.csv")
    for one, two in zip(one_device, two_replicas, strict=True):
        assert two["epoch_end_loss"] == pytest.approx(one["epoch_end_loss"], rel=TOLERANCE)


def read_only(folder) -> list[str]:
    """A command prefix that runs a command in its own mount namespace, where ``folder``
    (the run's folder) is mounted read-only: any write there fails with EROFS, even for
    root. Other workers see the folder as usual."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private read-only mount")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(folder)]


def test_two_workers_on_localhost_write_one_checkpoint_equal_to_mirrored(
    tmp_path, single_and_mirrored
):
    """Only the chief writes: the other worker sees the run's folder read-only (a write
    there would fail the run), and the run succeeds."""
    _, mirrored_dir = single_and_mirrored
    cfg = distributed_config(strategy="multi_worker", connect_timeout=60)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    workers = start_workers(path, 2, prefix={1: read_only(tmp_path)})
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    run_dir = tmp_path / "runs" / "t"
    record = read_record(run_dir)
    verify_checksum(run_dir, record)
    assert record.verified_value == record.value
    assert record.sha256 == read_record(mirrored_dir).sha256  # the same bytes as mirrored
    assert len(list(run_dir.glob("*.weights.h5"))) == 1
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".tmp-")]
    assert "verified after reload" in outputs[1][0]  # the non-chief reloaded and checked too
    assert [row["step"] for row in read_history(run_dir / "history.csv")] == list(range(6, 37, 6))


def test_a_worker_whose_peer_never_comes_fails_within_the_timeout(tmp_path):
    cfg = distributed_config(strategy="multi_worker", connect_timeout=5)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ports = free_ports(2)
    tf_config = {
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": 0},
    }
    started = time.monotonic()
    done = run_cli(
        "train",
        "--config",
        str(path),
        cwd=tmp_path,
        env={"TF_CONFIG": json.dumps(tf_config)},
        timeout=120,
    )
    assert done.returncode == -9, done.stderr  # killed by the watchdog (TF cannot be woken)
    assert "did not answer within 5 s (distribute.connect_timeout)" in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs" / "t" / "best.json").exists()


PATCH_CHECK = textwrap.dedent(
    """
    import sys
    from keepbest.cluster import keras_multiworker_patch as patch
    from keepbest.errors import KeepbestError
    print("mismatches", patch.mismatches())
    patch.EXPECTED_SOURCE_SHA256["reduce_per_replica"] = "0" * 64  # as after a Keras upgrade
    try:
        patch.apply()
    except KeepbestError as exc:
        print("refused:", exc)
    """
)


def test_the_keras_patch_matches_the_installed_keras_and_refuses_another():
    done = subprocess.run(
        [sys.executable, "-c", PATCH_CHECK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # Fails here first when a Keras upgrade changes the patched functions.
    assert "mismatches []" in done.stdout
    assert "refused:" in done.stdout and "changed reduce_per_replica" in done.stdout
