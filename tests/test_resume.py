"""Promise 4: interruption is a non-event. Real processes, real signals, real kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import run_cli, run_with_file_size_limit, small_config
from keepbest.errors import EXIT_BAD_INPUT, EXIT_CORRUPT, EXIT_RUN_BUSY, EXIT_STOPPED
from keepbest.rundir.history import read_history
from keepbest.rundir.layout import PENDING_FILE, RESUME_DIR
from keepbest.rundir.record import read_record, verify_checksum
from keepbest.rundir.resume_store import ResumeStore

# One step per epoch (a batch larger than the data) means a signal is only ever noticed
# at an epoch end; batches of 1 make ~1440 steps (about a second) per epoch, so a signal
# sent shortly after an epoch end lands mid-epoch.
SHAPES = {
    "boundary": {"data": {"batch_size": 2048}, "checkpoint": {"monitor": "loss"}},
    "mid_epoch": {"data": {"batch_size": 1}},
    # evaluation points every 499 steps: judged, saved and stopped mid-epoch; the training
    # set pass measures the first 20 batches
    "steps": {
        "data": {"batch_size": 1},
        "checkpoint": {"monitor": "loss", "every_steps": 499, "train_eval_steps": 20},
    },
}


# Epochs of a signal test: batches of 1 take about a second an epoch, so 3 leave time for
# a signal 0.1 s into epoch 2; one step an epoch needs more epochs for the signal to land.
EPOCHS = {"boundary": 5, "mid_epoch": 3, "steps": 3}


def config_for(shape: str, epochs: int | None = None) -> dict:
    cfg = small_config(train={"epochs": epochs or EPOCHS[shape]}, **SHAPES[shape])
    cfg["model"]["kwargs"] = {"hidden": [32], "dropout": 0.2}  # Dropout: SeedGenerator state
    return cfg


def write(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_training(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "keepbest", "train", "--config", str(config)],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def wait_for_rows(run_dir: Path, rows: int, process: subprocess.Popen, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(read_history(run_dir / "history.csv")) < rows:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)


def comparable(rows: list[dict]) -> list[dict]:
    """History rows without the wall-clock column, the one thing allowed to differ."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    mine, theirs = read_record(run_dir), read_record(reference)
    assert (mine.epoch, mine.value) == (theirs.epoch, theirs.value)
    assert mine.sha256 == theirs.sha256  # the same bytes: weights equal bit for bit
    assert mine.verified_value == mine.value
    assert comparable(read_history(run_dir / "history.csv")) == comparable(
        read_history(reference / "history.csv")
    )


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs of each config shape, trained once for the module."""
    runs = {}
    for shape in SHAPES:
        config = write(tmp_path_factory.mktemp(f"ref-{shape}"), config_for(shape))
        done = run_cli("train", "--config", str(config), cwd=config.parent)
        assert done.returncode == 0, done.stderr
        runs[shape] = config.parent / "runs" / "t"
    return runs


@pytest.mark.parametrize(
    ("signame", "shape"),
    [  # each signal once mid-epoch or at a boundary (one handler serves them all), each
        # stop point once: mid-epoch, epoch boundary, evaluation every N steps
        ("SIGTERM", "mid_epoch"),
        ("SIGINT", "mid_epoch"),
        ("SIGUSR1", "boundary"),
        ("SIGTERM", "steps"),
    ],
)
def test_signal_then_resume_equals_uninterrupted_run(tmp_path, references, signame, shape):
    config = write(tmp_path, config_for(shape))
    run_dir = tmp_path / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 1, process)
    while ResumeStore(run_dir).latest() is None:  # epoch 1's state follows its history row
        time.sleep(0.02)
    if shape == "mid_epoch":
        time.sleep(0.1)  # into epoch 2 (about a second of ~1440 steps)
    process.send_signal(getattr(signal, signame))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED, stderr
    assert f"stopped by {signame}" in stderr and "resume state saved" in stderr
    state = ResumeStore(run_dir).latest()
    if shape == "boundary":
        assert state.progress.batch == 0, stderr
    else:
        assert state.progress.batch > 0, stderr
        assert "after batch" in stderr
    rows = read_history(run_dir / "history.csv")
    if shape == "steps":  # one row per evaluation point up to the stop
        assert [row["step"] for row in rows] == list(
            range(499, state.manifest.global_step + 1, 499)
        )
    else:
        assert len(rows) == state.progress.epoch

    done = run_cli("train", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming at epoch {state.progress.epoch + 1}" in done.stdout
    assert_same_run(run_dir, references[shape])


def test_second_sigint_stops_at_once_and_the_last_epoch_state_resumes(tmp_path_factory):
    # A 4M-parameter model: saving its 50 MB resume state takes long enough for a second
    # Ctrl-C to arrive while it is being written.
    cfg = small_config(
        model={"builder": "mlp", "kwargs": {"hidden": [2048, 2048]}},
        data={"batch_size": 4},
        train={"epochs": 2, "steps_per_epoch": 40},
        resume={"every_steps": 40, "max_overhead": None},  # states at epoch ends only
    )
    config = write(tmp_path_factory.mktemp("sigint"), cfg)
    run_dir = config.parent / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 1, process)
    while (epoch_end_state := ResumeStore(run_dir).latest()) is None:
        time.sleep(0.05)  # epoch 1's state is written just after its history row
    process.send_signal(signal.SIGINT)
    notice = ""
    while "Ctrl-C again stops at once" not in notice:
        notice = process.stderr.readline()
        assert notice, "the process ended without announcing the stop"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "aborted" in stderr and "Traceback" not in stderr
    assert ResumeStore(run_dir).latest().manifest == epoch_end_state.manifest

    reference = write(tmp_path_factory.mktemp("sigint-ref"), cfg)
    assert run_cli("train", "--config", str(reference), cwd=reference.parent).returncode == 0
    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    assert "resuming at epoch 2" in done.stdout
    assert_same_run(run_dir, reference.parent / "runs" / "t")


def reference_and_copy(tmp_path_factory, cfg: dict, name: str) -> tuple[Path, Path]:
    """An uninterrupted run of ``cfg`` (its run dir), and the config of a copy to
    interrupt (nothing trained yet), for the kill -9 campaigns."""
    reference = write(tmp_path_factory.mktemp(f"{name}-ref"), cfg)
    done = run_cli("train", "--config", str(reference), cwd=reference.parent)
    assert done.returncode == 0, done.stderr
    return reference.parent / "runs" / "t", write(tmp_path_factory.mktemp(name), cfg)


def check_invariants(run_dir: Path) -> None:
    """What must hold after a kill at any instant."""
    import keepbest

    if (run_dir / "best.json").exists() or (run_dir / PENDING_FILE).exists():
        record = read_record(run_dir)
        verify_checksum(run_dir, record)
        with h5py.File(run_dir / record.checkpoint, "r"):
            pass
        keepbest.load_best(run_dir, compile=False)
    if (run_dir / RESUME_DIR).exists():
        ResumeStore(run_dir).latest()  # raises if no complete state verifies


def wait_for_write(run_dir: Path, process: subprocess.Popen, kind: str, timeout=30.0) -> bool:
    """Wait until a write of ``kind`` is under way: "best" (``commit_best``: its temporary
    weights file or its pending record exists) or "state" (a resume state's temporary
    file exists); False if the process ended or it did not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if kind == "best" and (
            (run_dir / PENDING_FILE).exists() or any(run_dir.glob(".tmp-*.best.weights.h5"))
        ):
            return True
        if kind == "state" and any((run_dir / RESUME_DIR).glob(".tmp-*")):
            return True
        time.sleep(0.001)
    return False


KILLS = 6  # two of each aim: random, inside commit_best, inside a state write


@pytest.mark.slow
def test_kill_9_at_random_instants_never_loses_the_best(tmp_path_factory):
    """Evaluation every 5 steps (12 steps per epoch: mostly mid-epoch) and resume states
    on the default cadence (at most 5% of the time): kill -9 at random instants, and on
    purpose inside commit_best and inside a state write. After every kill the best
    checkpoint matches its record and a complete state exists; every restart resumes
    from that state; the end is bit-identical to an uninterrupted run."""
    # 1.1M parameters: a 4.4 MB best file and a 13 MB resume state, written often enough
    # (the best improves at most points early on) for aimed kills to land inside them.
    cfg = small_config(
        model={"builder": "mlp", "kwargs": {"hidden": [1024, 1024]}},
        optimizer={"name": "adam", "learning_rate": 0.0005},
        train={"epochs": 36},  # enough for 6 kills on an idle machine too
        checkpoint={"monitor": "val_loss", "every_steps": 5},
    )
    reference, config = reference_and_copy(tmp_path_factory, cfg, "kill")
    run_dir = config.parent / "runs" / "t"
    rng = random.Random(20323)
    kills, landed = 0, {"best": 0, "state": 0}
    while kills < KILLS:
        rows = len(read_history(run_dir / "history.csv"))
        state = ResumeStore(run_dir).latest()
        process = start_training(config)
        # Once this process has judged a point of its own it is training and writing.
        wait_for_rows(run_dir, rows + 1, process)
        aim = ("random", "best", "state")[kills % 3]
        if aim == "random" or not wait_for_write(run_dir, process, aim):
            time.sleep(rng.uniform(0.0, 3.0))
        if process.poll() is not None:
            break  # finished before this kill: the run is complete
        process.kill()
        stdout, _ = process.communicate()
        kills += 1
        if state:  # every restart resumed where the last one stopped: it did not start over
            assert f"resuming at epoch {state.progress.epoch + 1}" in stdout, stdout
        temporaries = [p.name for p in run_dir.rglob(".tmp-*")]
        landed["best"] += (run_dir / PENDING_FILE).exists() or any(
            name.endswith(".best.weights.h5") for name in temporaries
        )
        landed["state"] += any(name.endswith(".npz") for name in temporaries)
        check_invariants(run_dir)
    assert kills == KILLS, f"the run finished after only {kills} kills; give it more epochs"
    assert landed["best"] >= 1 and landed["state"] >= 1, landed

    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    assert "resuming at epoch" in done.stdout
    assert_same_run(run_dir, reference)


def test_a_second_trainer_on_the_same_run_dir_is_refused(tmp_path):
    config = write(tmp_path, config_for("mid_epoch", epochs=50))
    run_dir = tmp_path / "runs" / "t"
    first = start_training(config)
    try:
        wait_for_rows(run_dir, 1, first)
        done = run_cli("train", "--config", str(config), cwd=tmp_path)
        assert done.returncode == EXIT_RUN_BUSY
        assert f"pid {first.pid} on" in done.stderr
        assert "in use by another training process" in done.stderr
        # Refused before TensorFlow is imported (the first run built its model first).
        probe = (
            "import sys, keepbest\n"
            "try:\n    keepbest.train(sys.argv[1])\n"
            "except keepbest.errors.RunBusyError:\n"
            "    print('busy; tensorflow imported:', 'tensorflow' in sys.modules)\n"
        )
        refused = subprocess.run(
            [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, check=True
        )
        assert refused.stdout.strip() == "busy; tensorflow imported: False", refused.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == EXIT_STOPPED


def test_finished_run_is_not_retrained_and_changed_config_is_refused(write_config, tmp_path):
    path = write_config(small_config())
    assert run_cli("train", "--config", str(path), cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "runs" / "t"
    weights_mtime = (run_dir / "best.weights.h5").stat().st_mtime_ns
    history = (run_dir / "history.csv").read_bytes()

    again = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "is complete (all 3 epochs are done); nothing to train" in again.stdout
    assert (run_dir / "best.weights.h5").stat().st_mtime_ns == weights_mtime
    assert (run_dir / "history.csv").read_bytes() == history

    changed = run_cli(
        "train", "--config", str(path), "--set", "optimizer.learning_rate=0.02", cwd=tmp_path
    )
    assert changed.returncode == EXIT_BAD_INPUT
    assert "optimizer.learning_rate: 0.01 -> 0.02" in changed.stderr
    assert "start over with --restart" in changed.stderr

    longer = run_cli("train", "--config", str(path), "--set", "train.epochs=5", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "resuming at epoch 4" in longer.stdout
    assert len(read_history(run_dir / "history.csv")) == 5


def test_restart_keeps_the_old_run_aside_unless_overwrite(write_config, tmp_path):
    path = write_config(small_config(train={"epochs": 1}))
    assert run_cli("train", "--config", str(path), cwd=tmp_path).returncode == 0
    old_sha = read_record(tmp_path / "runs" / "t").sha256

    done = run_cli("train", "--config", str(path), "--restart", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    aside = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("t.old-")]
    assert len(aside) == 1 and read_record(aside[0]).sha256 == old_sha
    assert f"moved the previous run to {aside[0]}" in done.stdout

    done = run_cli("train", "--config", str(path), "--restart", "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["t", aside[0].name]


def test_resume_state_write_failure_keeps_previous_state(write_config, tmp_path):
    """A full disk while writing the resume state: a clear error, the previous state and
    the best checkpoint stay loadable, and the run resumes once there is room."""
    # hidden 256: weights dominate both files; the state (weights and Adam's two
    # moments) is about three times the best checkpoint (weights only).
    cfg = small_config(model={"builder": "mlp", "kwargs": {"hidden": [256]}}, train={"epochs": 1})
    path = write_config(cfg)
    assert run_cli("train", "--config", str(path), cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "runs" / "t"
    state_size = max(p.stat().st_size for p in (run_dir / RESUME_DIR).glob("*.npz"))
    best_size = (run_dir / "best.weights.h5").stat().st_size
    assert best_size < state_size

    done = run_with_file_size_limit(path, (best_size + state_size) // 2, epochs=3)
    assert done.returncode == 6, done.stderr
    assert "could not write the resume state" in done.stderr
    assert "the best checkpoint and the previous resume state are intact" in done.stderr
    check_invariants(run_dir)
    assert ResumeStore(run_dir).latest().progress.epoch == 1

    resumed = run_cli("train", "--config", str(path), "--set", "train.epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_history(run_dir / "history.csv")) == 3


def test_corrupt_resume_state_falls_back_to_the_previous_one(write_config, tmp_path):
    # a state at each epoch end (12 steps) and nowhere else
    path = write_config(
        small_config(train={"epochs": 2}, resume={"every_steps": 12, "max_overhead": None})
    )
    run_dir = tmp_path / "runs" / "t"
    first = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    states = sorted((run_dir / RESUME_DIR).glob("state-*.npz"))
    assert len(states) == 2
    newest = states[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    done = run_cli("train", "--config", str(path), "--set", "train.epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{newest} does not match the checksum" in done.stderr
    assert "resuming from the previous state" in done.stderr
    assert "resuming at epoch 2" in done.stdout
    assert [r["epoch"] for r in read_history(run_dir / "history.csv")] == [1, 2, 3]

    for state in (run_dir / RESUME_DIR).glob("state-*.npz"):
        state.write_bytes(b"garbage")
    broken = run_cli("train", "--config", str(path), "--set", "train.epochs=4", cwd=tmp_path)
    assert broken.returncode == EXIT_CORRUPT
    assert "no older complete state is kept" in broken.stderr
