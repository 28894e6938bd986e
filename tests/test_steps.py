"""Long epochs: with checkpoint.every_steps the run is judged, saved and resumable every N
optimizer steps, mid-epoch included, with the same promises as at epoch ends."""

from __future__ import annotations

import math
import signal
import textwrap
from pathlib import Path

import pytest
import yaml

import keepbest
from conftest import remeasure_independently, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from keepbest.rundir.resume_store import ResumeStore
from test_resume import start_training, wait_for_rows

# Batches of 32: 1438 training samples make 45 steps per epoch, so points every 20 steps
# fall at 20, 40 (epoch 1), 60, 80 (epoch 2), ... mostly mid-epoch.
STEPS_PER_EPOCH = 45

BATCHNORM_MODELS = textwrap.dedent(
    """
    import keras

    def build(input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(32)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Dropout(0.3)(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    """
)


def step_config(**sections) -> dict:
    cfg = small_config(data={"batch_size": 32}, train={"epochs": 2})
    cfg["checkpoint"] = {"monitor": "val_loss", "every_steps": 20}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def best_by_rule(rows, key, mode):
    best = None
    for row in rows:
        if math.isfinite(row[key]) and (
            best is None or (row[key] < best[1] if mode == "min" else row[key] > best[1])
        ):
            best = (row["step"], row[key])
    return best


@pytest.mark.parametrize(
    ("monitor", "mode", "key", "builder"),
    [
        ("val_loss", "min", "val_loss", None),
        ("val_accuracy", "max", "val_accuracy", None),
        ("loss", "min", "epoch_end_loss", "bnmodels:build"),  # BatchNorm and Dropout
    ],
)
def test_points_every_n_steps_pick_and_reload_the_best_exactly(
    write_config, tmp_path, monitor, mode, key, builder
):
    cfg = step_config(checkpoint={"monitor": monitor})
    if builder:
        (tmp_path / "bnmodels.py").write_text(BATCHNORM_MODELS)
        cfg["model"] = {"builder": builder}
    result = keepbest.train(write_config(cfg))
    rows = read_history(result.run_dir / "history.csv")
    assert [row["step"] for row in rows] == [20, 40, 60, 80]  # the 90th step is no point
    assert [row["epoch"] for row in rows] == [1, 1, 2, 2]
    record = read_record(result.run_dir)
    assert record.mode == mode
    assert (record.step, record.value) == best_by_rule(rows, key, mode)
    assert record.epoch == math.ceil(record.step / STEPS_PER_EPOCH)
    assert record.verified_value == record.value
    assert remeasure_independently(result.run_dir, monitor, batch_size=32) == record.value
    if monitor == "loss":  # Keras' running mean is logged beside the measured value
        assert all(row["loss"] != row["epoch_end_loss"] for row in rows)


def test_patience_counts_evaluations_and_stops_right_after_the_point(write_config):
    # A learning rate this high makes val_loss climb after a few evaluations.
    cfg = step_config(
        optimizer={"name": "sgd", "learning_rate": 3.0},
        train={"epochs": 20},
        checkpoint={"every_steps": 7, "patience": 2},
    )
    result = keepbest.train(write_config(cfg))
    rows = result.history
    record = result.record
    assert rows[-1]["step"] == record.step + 2 * 7  # two evaluations without improvement
    assert result.stop_reason == "no improvement of val_loss for 2 evaluations (patience 2)"
    assert rows[-1]["step"] < 20 * STEPS_PER_EPOCH
    # The run stopped where it decided to: the last state is at that step, and says so.
    state = ResumeStore(result.run_dir).latest()
    assert state.manifest.global_step == rows[-1]["step"]
    assert state.manifest.stop_kind == "patience"
    again = keepbest.train(write_config(cfg))
    assert again.complete_before == result.stop_reason


def test_warm_up_points_are_neither_saved_nor_counted(write_config):
    cfg = step_config(checkpoint={"every_steps": 10, "start_from_step": 40, "patience": 1})
    result = keepbest.train(write_config(cfg, name="warm.yaml"))
    saved = [row["step"] for row in result.history if row["best_saved"] == 1.0]
    assert saved and saved[0] == 50  # steps 10..40 are warm-up
    assert result.record.step >= 50


FACTORY = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    from importlib.resources import files

    def load(seeded):
        with np.load(files("keepbest.datasets") / "digits.npz") as npz:
            x, y = npz["x"].astype("float32").reshape(-1, 64) / 16.0, npz["y"].astype("int64")
        train = tf.data.Dataset.from_tensor_slices((x[:1400], y[:1400]))
        if seeded:
            train = train.shuffle(1400, seed=7, reshuffle_each_iteration=False)
        else:  # a new order in every process: a resume cannot see the same batches
            train = train.shuffle(1400)
        val = tf.data.Dataset.from_tensor_slices((x[1400:], y[1400:])).batch(64)
        return train.batch(8), val
    """
)


@pytest.mark.parametrize("seeded", [True, False])
def test_a_factory_dataset_that_does_not_repeat_its_order_is_flagged_on_resume(tmp_path, seeded):
    (tmp_path / "factory.py").write_text(FACTORY)
    cfg = small_config(
        data={"source": "python", "factory": "factory:load", "kwargs": {"seeded": seeded}},
        train={"epochs": 3},  # 175 steps per epoch
        checkpoint={"monitor": "val_loss", "every_steps": 50},
    )
    cfg["data"].pop("validation")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = tmp_path / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    assert ResumeStore(run_dir).latest().manifest.next_batch

    done = run_cli("train", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    flagged = [line for line in done.stderr.splitlines() if "not bit-exact" in line]
    if seeded:
        assert not flagged, done.stderr
        assert read_record(run_dir).notes == []
    else:
        assert len(flagged) == 1, done.stderr
        assert "factory:load" in flagged[0] and "fixed shuffle seed" in flagged[0]
        state = ResumeStore(run_dir).latest()
        assert any("not bit-exact" in note for note in state.manifest.notes)


@pytest.fixture(scope="module")
def step_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("step-run")
    config = folder / "exp.yaml"
    config.write_text(yaml.safe_dump(step_config(), sort_keys=False))
    return keepbest.train(config).run_dir


def test_show_plot_summary_and_evaluate_speak_in_steps(step_run):
    from keepbest.inference.evaluate import evaluate_run
    from keepbest.rundir.plot import plot_run
    from keepbest.rundir.show import describe_run
    from keepbest.rundir.table import summarize

    record = read_record(step_run)
    text = describe_run(step_run).text()
    assert f"at step {record.step} (epoch {record.epoch})" in text
    resume = next(line for line in text.splitlines() if line.startswith("resume"))
    assert "newest state at step 90 (after epoch 2), written " in resume and " ago)" in resume
    assert "evaluated every 20 steps" in text

    [row] = summarize(step_run.parent)
    assert (row.best_step, row.best_epoch) == (record.step, record.epoch)

    evaluation = evaluate_run(step_run)
    assert (
        evaluation.table()
        .splitlines()[0]
        .endswith(
            f"best step {record.step} (epoch {record.epoch}), val_loss recorded {record.value:.8g}"
        )
    )
    assert evaluation.reproduces

    import matplotlib.image

    out = plot_run(step_run, step_run.parent / "curves.png")
    assert matplotlib.image.imread(out).shape[0] > 100
    from keepbest.rundir.plot import curves_figure

    rows = read_history(step_run / "history.csv")
    loss = curves_figure(rows, record, "steps", by_steps=True).axes[0]
    assert loss.get_xlabel() == "step"
    star = next(line for line in loss.get_lines() if line.get_marker() == "*")
    assert list(star.get_xdata()) == [record.step] and list(star.get_ydata()) == [record.value]
    validation = next(line for line in loss.get_lines() if line.get_label() == "validation")
    assert list(validation.get_xdata()) == [20, 40, 60, 80]
