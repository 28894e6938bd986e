"""The core promise: the best epoch is chosen on the value measured on exactly the weights
saved, and reloading those weights reproduces the recorded value, bit for bit on CPU."""

from __future__ import annotations

import itertools
import json
import math
import textwrap

import pytest

import keepbest
from conftest import REPO, remeasure_independently, run_cli, small_config
from keepbest.config import load_config
from keepbest.errors import MonitorError, NoBestError
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record, verify_checksum


def best_epoch_by_rule(rows, key, mode):
    """The first epoch with the best value of ``key`` (strict improvement, as keepbest)."""
    best_epoch, best = None, None
    for row in rows:
        value = row[key]
        if math.isfinite(value) and (
            best is None or (value < best if mode == "min" else value > best)
        ):
            best_epoch, best = row["epoch"], value
    return best_epoch, best


@pytest.mark.parametrize(
    ("monitor", "mode", "history_key"),
    [
        ("val_loss", "min", "val_loss"),
        ("val_accuracy", "max", "val_accuracy"),
        ("loss", "min", "epoch_end_loss"),
    ],
)
def test_best_is_chosen_on_saved_weights_and_reproduces_exactly(
    write_config, monitor, mode, history_key
):
    path = write_config(
        small_config(train={"epochs": 4}, checkpoint={"monitor": monitor, "mode": "auto"})
    )
    result = keepbest.train(path)
    record = read_record(result.run_dir)
    rows = read_history(result.run_dir / "history.csv")

    assert record.mode == mode
    assert (record.epoch, record.value) == best_epoch_by_rule(rows, history_key, mode)
    assert record.verified_value == record.value  # exact on CPU
    verify_checksum(result.run_dir, record)
    assert remeasure_independently(result.run_dir, monitor) == record.value
    saved = [row["epoch"] for row in rows if row["best_saved"] == 1.0]
    assert saved[-1] == record.epoch


def test_training_monitor_logs_both_running_mean_and_end_of_epoch_value(write_config):
    path = write_config(small_config(checkpoint={"monitor": "loss"}))
    result = keepbest.train(path)
    rows = read_history(result.run_dir / "history.csv")
    assert all({"loss", "epoch_end_loss", "accuracy", "epoch_end_accuracy"} <= set(r) for r in rows)
    # Keras' running mean mixes pre-update values: it never equals the end-of-epoch pass.
    assert all(r["loss"] != r["epoch_end_loss"] for r in rows)


def test_seed_case_stock_early_stopping_restores_the_wrong_weights(tmp_path):
    """keras#20323: with one batch per epoch, EarlyStopping(restore_best_weights) restores
    weights whose loss is the *next* epoch's logged loss; keepbest's best reproduces."""
    import keras

    from keepbest.data.pipelines import load_pipelines
    from keepbest.models import build_model, compile_args

    overrides = [f"output_dir={tmp_path}"]
    cfg = load_config(REPO / "configs" / "seed_case.yaml", overrides)
    pipes = load_pipelines(cfg)
    assert pipes.steps_per_epoch == 1

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, pipes.spec)
    compile_args(cfg).apply(model)
    stock = keras.callbacks.EarlyStopping(
        monitor="loss", patience=cfg.checkpoint.patience, restore_best_weights=True
    )
    logged = model.fit(
        pipes.train_stream(0),
        steps_per_epoch=1,
        epochs=cfg.train.epochs,
        callbacks=[stock],
        verbose=0,
        shuffle=False,
    ).history["loss"]
    best_index = min(range(len(logged)), key=logged.__getitem__)
    restored = model.evaluate(pipes.train_eval, verbose=0, return_dict=True)["loss"]
    assert restored != logged[best_index]
    assert restored == pytest.approx(logged[best_index + 1], rel=1e-5)  # the next epoch's

    result = keepbest.train(REPO / "configs" / "seed_case.yaml", overrides)
    record = result.record
    # keepbest picks the epoch whose measured (end-of-epoch) loss is lowest; stock Keras
    # picked the epoch whose running mean was lowest, and restored weights that score
    # the next epoch's number. They are not the same epoch.
    rows = result.history
    measured = [row["epoch_end_loss"] for row in rows]
    chosen = min(range(len(measured)), key=measured.__getitem__) + 1
    assert record.epoch == chosen
    assert record.value == measured[chosen - 1] == min(measured)
    assert record.epoch != best_index + 1  # stock Keras' epoch (1-based)
    assert record.verified_value == record.value
    assert remeasure_independently(result.run_dir, "loss", split=0, batch_size=2048) == (
        record.value
    )
    # keepbest's end-of-epoch value of epoch k is what Keras logs at epoch k+1.
    for row, following in itertools.pairwise(rows):
        assert row["epoch_end_loss"] == pytest.approx(following["loss"], rel=1e-5)


def test_patience_counts_epochs_since_the_best_on_disk(write_config):
    # A learning rate this high makes val_loss climb after a few epochs.
    path = write_config(
        small_config(
            optimizer={"name": "sgd", "learning_rate": 3.0},
            train={"epochs": 30},
            checkpoint={"monitor": "val_loss", "patience": 2},
        )
    )
    result = keepbest.train(path)
    rows = result.history
    assert len(rows) < 30, "expected early stopping"
    assert len(rows) == result.record.epoch + 2
    assert "patience 2" in result.stop_reason
    assert result.record.value == min(r["val_loss"] for r in rows if math.isfinite(r["val_loss"]))


NAN_MODELS = textwrap.dedent(
    """
    import keras
    from keepbest.models import mlp


    class NaNAfter(keras.layers.Layer):
        \"\"\"Identity until its counter of training calls passes `after`, then NaN.\"\"\"

        def __init__(self, after, **kwargs):
            super().__init__(**kwargs)
            self.after = after

        def build(self, input_shape):
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x, training=False):
            if training:
                self.calls.assign_add(1.0)
            poison = keras.ops.where(self.calls > self.after, float("nan"), 0.0)
            return x + poison


    def build(input_shape, num_classes, after):
        base = mlp(input_shape=input_shape, num_classes=num_classes, hidden=[16])
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, NaNAfter(after)(base(inputs)))
    """
)


def test_nan_never_becomes_best_and_stops_training(write_config, tmp_path):
    (tmp_path / "nanmodels.py").write_text(NAN_MODELS)
    # 12 steps per epoch: the output turns NaN during epoch 3.
    path = write_config(
        small_config(
            model={"builder": "nanmodels:build", "kwargs": {"after": 30}},
            train={"epochs": 8},
        )
    )
    result = keepbest.train(path)
    rows = result.history
    assert math.isnan(rows[-1]["val_loss"])
    assert len(rows) == 3, "stop_on_nonfinite ends the run at the first NaN epoch"
    assert result.record.epoch == 2
    assert math.isfinite(result.record.value)
    assert result.record.verified_value == result.record.value
    assert "nan" in result.stop_reason


def test_all_nan_run_fails_clearly_and_saves_nothing(write_config, tmp_path):
    (tmp_path / "nanmodels.py").write_text(NAN_MODELS)
    path = write_config(small_config(model={"builder": "nanmodels:build", "kwargs": {"after": -1}}))
    done = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    assert "no epoch qualified as best val_loss" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "t" / "best.weights.h5").exists()


def test_monitor_missing_at_run_time_is_reported_before_any_write(tmp_path):
    """A monitor that only the run can refute (here: no such metric) fails at the first
    evaluation point, listing what is logged, before the checkpoint is written."""
    import keras
    import numpy as np

    from keepbest.callbacks.best import BestCheckpoint
    from keepbest.measure import MeasureData
    from keepbest.monitor import Monitor, Schedule

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.rand(32, 4).astype("float32"), np.random.randint(0, 2, 32)
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0).history
    logs = {key: values[-1] for key, values in history.items()}  # what the epoch end logged
    best = BestCheckpoint(tmp_path, Monitor("val_auc", "max"), MeasureData(None, None), Schedule())
    with pytest.raises(MonitorError, match="it logs accuracy, loss, val_accuracy, val_loss"):
        best.judge(model, epoch=1, step=1, logs=logs)
    assert list(tmp_path.iterdir()) == []


def test_the_monitor_is_checked_on_one_batch_before_the_run_dir_is_touched(tmp_path):
    """train() evaluates one batch to learn what the model logs, so a monitor it does not
    log is refused before the run dir, its config or its lock exist."""
    import keras

    from keepbest.data.pipelines import load_pipelines
    from keepbest.measure import MeasureData
    from keepbest.training import _check_monitor_is_logged

    cfg = load_config(
        small_config(output_dir=str(tmp_path), checkpoint={"monitor": "val_accuracy"})
    )
    pipelines = load_pipelines(cfg)
    data = MeasureData.from_pipelines(pipelines)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile("adam", "sparse_categorical_crossentropy")  # no accuracy metric
    with pytest.raises(
        MonitorError, match="'val_accuracy' is not logged by this run; it logs val_loss"
    ):
        _check_monitor_is_logged(cfg, model, data, pipelines)
    assert list(tmp_path.iterdir()) == []


def test_baseline_that_nothing_beats_gives_no_best(write_config, tmp_path):
    path = write_config(small_config(checkpoint={"monitor": "val_loss", "baseline": 1e-9}))
    with pytest.raises(NoBestError, match="nothing was saved"):
        keepbest.train(path)
    assert not (tmp_path / "runs" / "t" / "best.json").exists()


def test_cli_train_prints_summary_and_writes_the_run_dir(write_config, tmp_path):
    path = write_config(small_config(train={"epochs": 2}))
    done = run_cli("train", "--config", str(path), "--set", "train.epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "runs" / "t"
    record = json.loads((run_dir / "best.json").read_text())
    assert "verified after reload" in done.stdout and "(exact)" in done.stdout
    assert len(read_history(run_dir / "history.csv")) == 3
    expected = {"config.yaml", "data_spec.json", "model.json", "best.weights.h5", "best.json"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    for key in ("epoch", "monitor", "mode", "value", "checkpoint", "sha256", "verified_value"):
        assert key in record
    assert set(record["versions"]) == {"keepbest", "keras", "tensorflow"}
    assert not any(p.name.startswith(".tmp-") for p in run_dir.rglob("*"))


def test_best_file_loads_with_plain_keras(write_config):
    import keras

    from keepbest.data.pipelines import load_pipelines
    from keepbest.models import build_model

    path = write_config(small_config())
    result = keepbest.train(path)
    cfg = load_config(path)
    model = build_model(cfg, load_pipelines(cfg).spec)
    model.load_weights(result.run_dir / "best.weights.h5")  # plain Keras, no keepbest
    model.compile(loss="sparse_categorical_crossentropy")
    reference = keepbest.load_best(result.run_dir)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert (mine == theirs).all()
    assert isinstance(model, keras.Model)


def test_observers_see_every_evaluation_point_and_can_end_training(write_config):
    """A tuner's view: each point's measured value and decision, and an exception raised
    by an observer (a pruned trial) leaves train()."""
    path = write_config(small_config(train={"epochs": 4}))
    seen = []
    result = keepbest.train(path, observers=[seen.append])
    rows = read_history(result.run_dir / "history.csv")
    assert [p.epoch for p in seen] == [1, 2, 3, 4]
    assert [p.value for p in seen] == [row["val_loss"] for row in rows]
    assert [p.saved for p in seen] == [row["best_saved"] == 1.0 for row in rows]
    steps = [p.step for p in seen]
    assert steps == [12 * epoch for epoch in (1, 2, 3, 4)]  # 1437 samples / 128 per batch

    class Pruned(Exception):
        pass

    def prune_at_two(point):
        if point.epoch == 2:
            raise Pruned(point.value)

    other = write_config(small_config(name="pruned", train={"epochs": 4}), name="pruned.yaml")
    with pytest.raises(Pruned):
        keepbest.train(other, observers=[prune_at_two])
    assert len(read_history(other.parent / "runs" / "pruned" / "history.csv")) == 2
