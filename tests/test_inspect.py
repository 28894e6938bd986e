"""Seeing a run: its status, `keepbest show`, `keepbest plot`, TensorBoard logs, and the
training progress printed on a terminal and in a batch log."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import keepbest
from conftest import run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.lock import RunLock
from keepbest.rundir.status import run_status
from test_resume import start_training

# One batch per epoch and a training-set monitor: Keras' running mean and the end-of-epoch
# value part ways (the case keepbest exists for, configs/seed_case.yaml in small).
SEED_CASE = small_config(
    data={"source": "digits", "validation": {"split": 0.2}, "batch_size": 2048},
    model={"builder": "mlp", "kwargs": {"hidden": [32]}},
    optimizer={"name": "sgd", "learning_rate": 2.0},
    train={"epochs": 5},
    checkpoint={"monitor": "loss"},
)


def write(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def seed_case_run(tmp_path_factory) -> Path:
    """A finished run with a training-set monitor and TensorBoard logs."""
    cfg = {**SEED_CASE, "logging": {"tensorboard": True}}
    return keepbest.train(write(tmp_path_factory.mktemp("seed"), cfg)).run_dir


def copy_run(run_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, target)
    return target


# --------------------------------------------------------------------------- status


def test_status_of_new_done_running_resumable_and_failed_run_dirs(seed_case_run, tmp_path):
    assert run_status(tmp_path / "nothing-here").state == "new"

    done = run_status(seed_case_run)
    assert done.state == "done"
    assert done.epochs_done == len(read_history(seed_case_run / "history.csv"))
    assert done.record == keepbest.read_record(seed_case_run)

    with RunLock(seed_case_run):
        running = run_status(seed_case_run)
    assert running.state == "running"
    assert f"pid {os.getpid()}" in running.detail

    longer = copy_run(seed_case_run, tmp_path / "longer")
    config = yaml.safe_load((longer / "config.yaml").read_text())
    config["train"]["epochs"] = 50
    config["checkpoint"]["patience"] = None
    (longer / "config.yaml").write_text(yaml.safe_dump(config))
    assert done.detail == "all 5 epochs are done"
    resumable = run_status(longer)
    assert resumable.state == "resumable"
    assert resumable.detail == "stopped after epoch 5 of 50; train again to resume"

    unverified = copy_run(seed_case_run, tmp_path / "unverified")
    record = json.loads((unverified / "best.json").read_text())
    record["verified_value"] = None
    (unverified / "best.json").write_text(json.dumps(record))
    assert run_status(unverified).state == "resumable"
    assert "train again to verify" in run_status(unverified).detail

    broken = copy_run(seed_case_run, tmp_path / "broken")
    (broken / "best.weights.h5").write_bytes(b"not hdf5")
    failed = run_status(broken)
    assert failed.state == "failed"
    assert "does not match the sha256" in failed.detail


def test_status_and_show_need_no_tensorflow(seed_case_run, tmp_path):
    code = (
        "import sys\n"
        "from keepbest.rundir.show import describe_run\n"
        "print(describe_run(sys.argv[1]).status.state)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(seed_case_run)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"


# --------------------------------------------------------------------------- show


def test_show_prints_status_best_config_and_files(seed_case_run):
    record = keepbest.read_record(seed_case_run)
    done = run_cli("show", str(seed_case_run))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line[:1] != " ")
    assert lines["status"].startswith("done: ")
    assert lines["best"].startswith(f"loss = {record.value:.8g} at epoch {record.epoch} (min)")
    assert lines["verified"].startswith(f"{record.value:.8g} after reload (exact)")
    assert lines["model"] == "mlp(hidden=[32])"
    assert lines["optimizer"] == "sgd(learning_rate=2.0)"
    assert "monitor loss (auto)" in lines["training"]
    assert "best.weights.h5" in done.stdout and "tensorboard/" in done.stdout

    as_json = json.loads(run_cli("show", str(seed_case_run), "--json").stdout)
    assert as_json["status"] == "done"
    assert as_json["best"]["epoch"] == record.epoch
    assert as_json["files"]["best.weights.h5"] == (seed_case_run / "best.weights.h5").stat().st_size
    assert ".lock" not in as_json["files"]


def test_show_sees_a_run_another_process_is_training(seed_case_run):
    with RunLock(seed_case_run):
        done = run_cli("show", str(seed_case_run))
    assert done.returncode == 0, done.stderr
    assert f"running: training now (pid {os.getpid()} on" in done.stdout


def test_show_on_a_live_run_says_the_best_is_verified_when_training_ends(tmp_path):
    """A real training process, stopped by SIGTERM once show has seen it: its best is not
    verified yet, and show says when it will be, not to train again."""
    cfg = {**SEED_CASE, "train": {"epochs": 100_000}}  # still training when show looks
    config = write(tmp_path, cfg)
    process = start_training(config)
    run = tmp_path / "runs" / "t"
    try:
        deadline = time.monotonic() + 120
        while not (run / "best.json").is_file():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no best checkpoint within 2 minutes"
            time.sleep(0.05)
        shown = run_cli("show", str(run))
        assert process.poll() is None  # it was training the whole time
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line[:1] != " ")
    assert lines["status"].startswith(f"running: training now (pid {process.pid} on")
    assert lines["verified"] == "not yet (verified when training ends)"
    # stopped now (exit 75 after saving): the same best, and the advice to train again
    assert process.returncode == 75
    after = run_cli("show", str(run))
    lines = dict(line.split(None, 1) for line in after.stdout.splitlines() if line[:1] != " ")
    assert lines["status"].startswith("resumable: ")
    assert lines["verified"] == "not yet (train again to verify)"


# --------------------------------------------------------------------------- plot


def test_plot_draws_running_mean_and_end_of_epoch_with_the_best_marked(seed_case_run, tmp_path):
    from keepbest.rundir.plot import curves_figure

    done = run_cli("plot", str(seed_case_run), "--out", str(tmp_path / "curves.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = read_history(seed_case_run / "history.csv")
    record = keepbest.read_record(seed_case_run)
    figure = curves_figure(rows, record, "seed")
    loss, accuracy = figure.axes
    assert (loss.get_title(), accuracy.get_title()) == ("loss", "accuracy")
    labels = [line.get_label() for line in loss.get_lines()]
    assert labels[:3] == [
        "training: Keras running mean",
        "training: end of epoch",
        "validation",
    ]
    assert f"keepbest's best: {record.value:.4g} at epoch {record.epoch}" in labels
    star = next(line for line in loss.get_lines() if line.get_marker() == "*")
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([record.epoch], [record.value])
    running = dict(zip(*loss.get_lines()[0].get_data(), strict=True))
    assert running == {row["epoch"]: row["loss"] for row in rows}


def test_a_log_scale_panel_has_enough_plain_number_labels_to_read_values_off(tmp_path):
    """A loss falling from about 1.7 to 0.07 (more than 20 times: a log scale): matplotlib's
    default labeled 0.1 and 1 only; the panel must label at least 4 ticks, each a plain
    number at its own height."""
    from keepbest.rundir.plot import curves_figure

    cfg = small_config(
        data={"batch_size": 64},
        model={"builder": "mlp", "kwargs": {"hidden": [32]}},
        train={"epochs": 12},
    )
    run_dir = keepbest.train(write(tmp_path, cfg)).run_dir
    rows = read_history(run_dir / "history.csv")
    figure = curves_figure(rows, keepbest.read_record(run_dir), "log")
    figure.canvas.draw()
    [loss] = [axes for axes in figure.axes if axes.get_title() == "loss (log scale)"]
    values = [row[key] for row in rows for key in ("loss", "val_loss") if key in row]
    assert max(values) / min(values) >= 20  # the case: a panel drawn on a log scale
    low, high = loss.get_ylim()
    labels = [
        (tick.get_position()[1], tick.get_text())
        for tick in loss.get_yticklabels()
        if tick.get_text() and low <= tick.get_position()[1] <= high
    ]
    assert len(labels) >= 4, labels
    for at, text in labels:  # "0.2", not "$\\mathdefault{10^{-1}}$", and where it says
        assert float(text) == pytest.approx(at), (at, text)
    assert [at for at, _ in labels] == sorted(at for at, _ in labels)


def test_plot_writes_into_the_run_dir_by_default_and_refuses_an_empty_history(
    seed_case_run, tmp_path
):
    run = copy_run(seed_case_run, tmp_path / "run")
    done = run_cli("plot", str(run))
    assert done.returncode == 0, done.stderr
    assert (run / "curves.png").is_file()
    (run / "history.csv").unlink()
    empty = run_cli("plot", str(run))
    assert empty.returncode == 1
    assert "has no finished epoch yet" in empty.stderr


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_logs_go_to_the_run_dir_with_end_of_epoch_values(seed_case_run):
    import tensorflow as tf

    tags = set()
    for events in (seed_case_run / "tensorboard" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {value.tag for value in event.summary.value}
    assert {"epoch_loss", "epoch_epoch_end_loss"} <= tags
    assert list((seed_case_run / "tensorboard" / "validation").glob("events.out.tfevents.*"))


def test_tensorboard_without_its_package_is_a_config_error_before_any_work(tmp_path):
    config = write(tmp_path, {**small_config(), "logging": {"tensorboard": True}})
    code = (
        "import sys\n"
        "sys.modules['tensorboard'] = None  # as if it were not installed\n"
        "sys.argv = ['keepbest', 'train', '--config', sys.argv[1]]\n"
        "from keepbest.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 2
    assert "logging.tensorboard: the tensorboard package is not installed" in done.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- progress


def test_a_batch_log_gets_one_line_per_epoch_with_the_best_so_far(tmp_path):
    done = run_cli("train", "--config", str(write(tmp_path, SEED_CASE)))
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    record = keepbest.read_record(tmp_path / "runs" / "t")
    assert len(epochs) == len(read_history(tmp_path / "runs" / "t" / "history.csv"))
    assert all(" best loss " in line for line in epochs)
    assert f"epoch_end_loss {record.value:.4g}" in epochs[record.epoch - 1]
    assert epochs[record.epoch - 1].endswith(f"@{record.epoch} (saved)")
    assert "\b" not in done.stdout and "━" not in done.stdout  # no progress bar in a log


def test_a_terminal_gets_keras_progress_bar_and_a_line_per_saved_best(tmp_path):
    config = write(tmp_path, {**SEED_CASE, "train": {"epochs": 3}})
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "keepbest", "train", "--config", str(config)],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    os.close(leader)
    text = output.decode("utf-8", "replace")
    assert "━" in text  # Keras' progress bar
    # Each line keepbest writes starts a line of its own, after the bar has finished.
    lines = text.replace("\r\n", "\n").split("\n")
    saved = [line for line in lines if "(saved)" in line]
    assert saved and all(line.startswith("epoch ") for line in saved)
