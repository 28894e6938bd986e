"""keepbest.KeepBest in the user's own script: a plain ``model.fit`` with the callback.

The scripts under tests/scripts/ are what a user writes (plain Keras, numpy arrays, one
callback); they run in real subprocesses, are killed with kill -9 and signalled for real.
Every number is checked against something keepbest did not compute: the loss the script
measures itself with ``model.evaluate`` at each epoch end, Keras' own EarlyStopping on the
same run, a model loaded in a fresh interpreter, an uninterrupted run's bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import keepbest
from conftest import run_cli
from keepbest.errors import ConfigError, NoBestError

SCRIPTS = Path(__file__).resolve().parent / "scripts"
sys.path.insert(0, str(SCRIPTS))  # recipes.py: the scripts' data and models, for in-process fits

EXIT_STOPPED = 75  # what plain_fit.py exits with on keepbest.StoppedForResume
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- helpers


def script_command(options: dict) -> list[str]:
    return [sys.executable, str(SCRIPTS / "plain_fit.py"), json.dumps(options)]


def start_script(options: dict) -> subprocess.Popen:
    return subprocess.Popen(
        script_command(options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> dict:
    """Wait for a script that must succeed; its JSON result (the last line of stdout)."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def run_script(options: dict) -> dict:
    return finish(start_script(options))


def history_rows(run_dir: Path) -> list[dict[str, str]]:
    """history.csv as written (strings), read with the csv module."""
    try:
        with open(run_dir / "history.csv", newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        return []


def without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """History rows without the wall-clock column, the one thing allowed to differ."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def best_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "best.json").read_text(encoding="utf-8"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_argmin(values: list[float]) -> int:
    return min(range(len(values)), key=values.__getitem__)


def wait_for_rows(run_dir: Path, rows: int, process: subprocess.Popen, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(history_rows(run_dir)) < rows:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(
                f"the script ended (exit {process.returncode}) before row {rows}:\n{stderr}"
            )
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.02)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical to the uninterrupted run: the best file's bytes, the record's
    epoch, step and value, every history row but its seconds."""
    assert (run_dir / "best.weights.h5").read_bytes() == (
        reference / "best.weights.h5"
    ).read_bytes()
    mine, theirs = best_json(run_dir), best_json(reference)
    for key in ("epoch", "step", "value", "sha256", "verified_value"):
        assert mine[key] == theirs[key], key
    assert mine["verified_value"] == mine["value"]
    assert without_seconds(history_rows(run_dir)) == without_seconds(history_rows(reference))


# --------------------------------------------------------------------------- 1. seed case


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> dict:
    """keras#20323 in a plain script, 12 epochs of one update each: once with KeepBest
    monitoring ``loss`` (train_data given), once with stock EarlyStopping, side by side."""
    root = tmp_path_factory.mktemp("seed")
    common = {"recipe": "seed", "epochs": 12}
    run_dir = root / "run"
    keep = start_script(
        {
            **common,
            "run_dir": str(run_dir),
            "callback": "keepbest",
            "train_data": True,
            "keepbest": {"monitor": "loss"},
        }
    )
    stock = start_script(
        {**common, "callback": "stock", "stock": {"monitor": "loss", "patience": 12}}
    )
    return {"run_dir": run_dir, "keepbest": finish(keep), "stock": finish(stock)}


def test_seed_case_best_is_the_epoch_whose_weights_measure_lowest(seed_runs):
    run_dir, result = seed_runs["run_dir"], seed_runs["keepbest"]
    measured = result["epoch_end"]  # the script's own evaluate at each epoch end
    assert len(measured) == 12
    chosen = first_argmin(measured) + 1
    mine = result["keepbest"]
    assert mine["best_epoch"] == chosen
    assert mine["best_step"] == chosen  # one step an epoch
    assert mine["best_value"] == measured[chosen - 1]  # exactly
    assert mine["verified_value"] == mine["best_value"]
    assert mine["stop_reason"] is None  # patience=None: all 12 epochs
    record = best_json(run_dir)
    assert (record["epoch"], record["value"]) == (chosen, measured[chosen - 1])
    assert record["sha256"] == sha256_of(run_dir / "best.weights.h5")
    assert keepbest.read_record(run_dir).epoch == chosen
    # after fit the model holds the best weights: the script's evaluate reproduces them
    assert result["final_loss"] == record["value"]

    rows = history_rows(run_dir)
    assert [int(row["epoch"]) for row in rows] == list(range(1, 13))
    assert [float(row["epoch_end_loss"]) for row in rows] == measured
    assert [float(row["loss"]) for row in rows] == result["logged"]["loss"]  # Keras' own
    saved = [int(row["epoch"]) for row in rows if float(row["best_saved"]) == 1.0]
    assert saved[-1] == chosen


def test_seed_case_stock_early_stopping_restores_another_epoch(seed_runs):
    keep, stock = seed_runs["keepbest"], seed_runs["stock"]
    # KeepBest did not change the training: Keras logged the same losses in both runs
    assert keep["logged"]["loss"] == stock["logged"]["loss"]
    logged = stock["logged"]["loss"]
    picked = stock["stock"]["best_epoch"]  # 0-based
    assert picked == first_argmin(logged)
    restored = stock["final_loss"]  # the weights EarlyStopping restored, measured
    assert restored != logged[picked]
    # with one update an epoch, they are the weights whose loss Keras logs one epoch later
    assert restored == pytest.approx(logged[picked + 1], rel=1e-5)
    assert restored > min(keep["epoch_end"])
    assert picked + 1 != keep["keepbest"]["best_epoch"]


def test_cli_shows_and_evaluates_a_script_run(seed_runs, tmp_path):
    import numpy as np
    import recipes

    run_dir = seed_runs["run_dir"]
    record = best_json(run_dir)
    shown = run_cli("show", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"at epoch {record['epoch']}" in shown.stdout

    (x, y), _ = recipes.data("seed")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    done = run_cli("evaluate", str(run_dir), "--data", str(tmp_path / "train.npz"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["epoch"] == record["epoch"]
    [measured] = report["results"].values()  # one --data file
    assert measured["samples"] == 64
    assert measured["metrics"]["loss"] == record["value"]  # the training set, as recorded


# --------------------------------------------------------------------------- 2. decisions


@pytest.mark.parametrize(
    ("patience", "min_delta", "baseline", "start_from_epoch"),
    [
        (2, 0.0, None, 0),  # the first plateau stops it
        (3, 0.0, None, 0),  # waits out the plateau: the second dip becomes best
        (3, 0.003, None, 0),  # only the first of the two dips is large enough
        (2, 0.0, None, 13),  # warm-up: an epoch after it is best though it never improves
        (2, 0.0, 0.9, 0),  # a baseline the second epoch beats
    ],
)
def test_decisions_equal_keras_early_stopping(
    tmp_path, patience, min_delta, baseline, start_from_epoch
):
    """The same fit with Keras' EarlyStopping, then with KeepBest: the same epochs run,
    the same best epoch (Keras' best_epoch and stopped_epoch are 0-based)."""
    import keras
    import recipes

    args = {
        "patience": patience,
        "min_delta": min_delta,
        "baseline": baseline,
        "start_from_epoch": start_from_epoch,
    }
    (x, y), validation = recipes.data("decisions")
    fit = {
        "batch_size": recipes.BATCH_SIZE["decisions"],
        "epochs": 30,
        "validation_data": validation,
        "shuffle": False,
        "verbose": 0,
    }

    stock = keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=False, **args)
    theirs = recipes.build("decisions").fit(x, y, callbacks=[stock], **fit).history
    assert stock.stopped_epoch > 0, "Keras did not stop early: the case tests nothing"
    assert len(theirs["val_loss"]) == stock.stopped_epoch + 1

    callback = keepbest.KeepBest(tmp_path / "run", monitor="val_loss", **args)
    mine = recipes.build("decisions").fit(x, y, callbacks=[callback], **fit).history
    n = min(len(mine["val_loss"]), len(theirs["val_loss"]))
    assert mine["val_loss"][:n] == theirs["val_loss"][:n]  # the same training
    assert len(mine["val_loss"]) == stock.stopped_epoch + 1
    assert callback.best_epoch == stock.best_epoch + 1
    assert callback.best_value == theirs["val_loss"][stock.best_epoch]
    assert f"patience {patience}" in callback.stop_reason


def test_a_baseline_nothing_beats_within_patience_stops_with_no_best(tmp_path):
    """The one documented difference from Keras' EarlyStopping: ``baseline`` is a value
    the best must beat (Keras' docstring: with no epoch beating it, training runs for
    ``patience`` epochs). Keras' code instead tracks its own best from the first epoch
    and runs on while val_loss falls above the baseline; keepbest saves nothing that
    does not beat the baseline, so it stops after ``patience`` epochs with no best."""
    import recipes

    (x, y), validation = recipes.data("decisions")
    callback = keepbest.KeepBest(tmp_path / "run", monitor="val_loss", patience=2, baseline=0.21)
    with pytest.raises(keepbest.KeepbestError, match="no epoch qualified as best val_loss"):
        recipes.build("decisions").fit(
            x,
            y,
            batch_size=recipes.BATCH_SIZE["decisions"],
            epochs=30,
            validation_data=validation,
            shuffle=False,
            verbose=0,
            callbacks=[callback],
        )
    assert len(callback.history) == 2  # patience epochs, then the stop
    assert all(row["val_loss"] > 0.21 for row in callback.history)
    assert not (tmp_path / "run" / "best.weights.h5").exists()


# --------------------------------------------------------------------------- 3. custom layer

LOAD_IN_A_FRESH_PROCESS = """
import json, sys
sys.path.insert(0, sys.argv[2])
import keepbest
try:
    keepbest.load_best(sys.argv[1])
    unimported = "loaded"
except keepbest.KeepbestError as exc:
    unimported = str(exc)
import custom_layers  # registers Scale
import recipes
model = keepbest.load_best(sys.argv[1])
model.compile(loss="sparse_categorical_crossentropy")
_, (x, y) = recipes.data("custom")
loss = model.evaluate(x, y, batch_size=recipes.BATCH_SIZE["custom"], verbose=0,
                      return_dict=True)["loss"]
layers = [type(layer).__name__ for layer in model.layers]
print(json.dumps({"unimported": unimported, "loss": loss, "layers": layers}))
"""


def test_custom_registered_layer_loads_in_another_process(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        {"recipe": "custom", "epochs": 6, "run_dir": str(run_dir), "callback": "keepbest"}
    )
    record = best_json(run_dir)
    assert record["epoch"] == result["keepbest"]["best_epoch"]
    # val_loss is fit's own validation pass, which Keras logged
    assert record["value"] == result["logged"]["val_loss"][record["epoch"] - 1]
    assert result["final_val_loss"] == record["value"]

    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(run_dir), str(SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Scale" in loaded["unimported"], loaded["unimported"]
    assert "Scale" in loaded["layers"]
    assert loaded["loss"] == record["value"]


# --------------------------------------------------------------------------- 4-5. interruptions

# 12 epochs of 12 steps; the interrupted runs sleep 20 ms after each step (about a third of
# a second an epoch), which changes no number
INTERRUPTED = {"recipe": "dropout", "epochs": 12, "callback": "keepbest"}
STEP_SLEEP = 0.02


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted run of the interrupted script, in a run dir of its own."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_script({**INTERRUPTED, "run_dir": str(run_dir)})
    assert len(history_rows(run_dir)) == 12
    return run_dir, result


def check_best_on_disk(run_dir: Path) -> None:
    """After a kill at any instant: the record's checkpoint has the recorded bytes."""
    try:
        record = keepbest.read_record(run_dir)
    except NoBestError:
        return  # killed before the first best was saved
    assert sha256_of(run_dir / record.checkpoint) == record.sha256


KILLS = 4


@pytest.mark.slow
def test_kill_9_at_random_instants_then_rerun_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    options = {**INTERRUPTED, "run_dir": str(run_dir), "step_sleep": STEP_SLEEP}
    rng = random.Random(20323)
    kills = 0
    while kills < KILLS:
        rows = len(history_rows(run_dir))
        process = start_script(options)
        wait_for_rows(run_dir, rows + 1, process)  # past where the last one got: training
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is not None:
            break
        process.kill()
        process.communicate()
        kills += 1
        check_best_on_disk(run_dir)
    assert kills == KILLS, f"the run finished after {kills} kills; give it more epochs"
    assert len(history_rows(run_dir)) < 12

    result = run_script(options)
    assert len(result["epoch_end"]) < 12  # this last process resumed: it ran fewer epochs
    reference_dir, reference_result = reference
    assert_same_run(run_dir, reference_dir)
    assert result["keepbest"] == reference_result["keepbest"]
    assert result["final_val_loss"] == reference_result["final_val_loss"]


def test_sigterm_stops_with_a_state_and_the_rerun_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    options = {**INTERRUPTED, "run_dir": str(run_dir), "step_sleep": STEP_SLEEP}
    process = start_script(options)
    wait_for_rows(run_dir, 2, process)
    time.sleep(0.1)  # into the next epoch
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED, stderr[-3000:]
    assert "Traceback" not in stderr
    message = json.loads(stdout.strip().splitlines()[-1])["stopped"]
    assert "SIGTERM" in message and "resume state saved" in message, message
    before = history_rows(run_dir)
    assert 2 <= len(before) < 12

    result = run_script(options)
    after = history_rows(run_dir)
    # resumed, not started over: the rows written before the stop are kept as they were,
    # their wall-clock seconds included, and this process ran the remaining epochs only
    assert after[: len(before)] == before
    assert len(result["epoch_end"]) == 12 - len(before)
    reference_dir, reference_result = reference
    assert_same_run(run_dir, reference_dir)
    assert result["keepbest"] == reference_result["keepbest"]
    assert result["final_val_loss"] == reference_result["final_val_loss"]


# --------------------------------------------------------------------------- 6. bad arguments


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"monitor": "loss"}, "train_data"),
        ({"monitor": "accuracy", "mode": "max"}, "train_data"),
        ({"monitor": "val_loss", "every_steps": 5}, "validation_data"),
        ({"patience": 0}, "patience"),
        ({"patience": -2}, "patience"),
        ({"mode": "sideways"}, "mode"),
    ],
)
def test_bad_arguments_fail_at_construction_before_any_write(tmp_path, kwargs, named):
    run_dir = tmp_path / "run"
    with pytest.raises(keepbest.KeepbestError) as caught:
        keepbest.KeepBest(run_dir, **kwargs)
    assert isinstance(caught.value, ConfigError)
    message = str(caught.value)
    assert named in message
    assert len(message.splitlines()) == 1, message
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_that_is_a_file_fails_before_fit_trains(tmp_path):
    import recipes

    path = tmp_path / "run"
    path.write_bytes(b"not a run dir\n")
    (x, y), validation = recipes.data("dropout")
    model = recipes.build("dropout")
    before = [weight.copy() for weight in model.get_weights()]
    with pytest.raises(keepbest.KeepbestError) as caught:
        callback = keepbest.KeepBest(path, monitor="val_loss")
        model.fit(x, y, validation_data=validation, epochs=2, callbacks=[callback], verbose=0)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == b"not a run dir\n"
    assert list(tmp_path.iterdir()) == [path]
    assert int(model.optimizer.iterations.numpy()) == 0  # not one step trained
    for mine, theirs in zip(model.get_weights(), before, strict=True):
        assert (mine == theirs).all()


# --------------------------------------------------------------------------- 7. objects


def test_train_takes_a_builder_and_arrays_as_objects(tmp_path):
    """``keepbest.train(config, model=..., data=...)``: the run is verified like a YAML
    run, its config records ``script``, and evaluate without --data says it needs one."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    xv = rng.normal(size=(64, 8)).astype("float32")
    yv = (xv.sum(axis=1) > 0).astype("int64")

    def build(input_shape, num_classes):
        return keras.Sequential(
            [keras.Input(input_shape), keras.layers.Dense(num_classes, activation="softmax")]
        )

    config = {"name": "objects", "output_dir": str(tmp_path), "train": {"epochs": 3}}
    result = keepbest.train(config, model=build, data=((x, y), (xv, yv)))
    record = keepbest.read_record(result.run_dir)
    assert record.verified_value == record.value
    model = keepbest.load_best(result.run_dir)
    assert model.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == record.value
    saved = (result.run_dir / "config.yaml").read_text()
    assert "source: script" in saved and "builder: script" in saved
    with pytest.raises(keepbest.KeepbestError, match="given twice"):
        keepbest.train({**config, "data": {"source": "digits"}}, data=((x, y), (xv, yv)))
    from keepbest.inference.evaluate import evaluate_run

    with pytest.raises(keepbest.KeepbestError, match=r"--data FILE\.npz"):
        evaluate_run(result.run_dir)


def test_the_readme_seed_case_script_runs_and_keeps_the_measured_best(tmp_path):
    """examples/seed_case_script.py, as the README shows it: stock EarlyStopping restores
    weights whose loss is not the one it chose by; KeepBest's model holds its value."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "seed_case_script.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stock, mine = result["stock"], result["keepbest"]
    assert stock["restored_loss"] != stock["chosen_by"]
    assert mine["restored_loss"] == mine["chosen_by"] == mine["verified"]
    assert mine["epoch"] != stock["epoch"]


def test_another_model_or_optimizer_against_the_run_dir_is_refused_with_the_differences(
    tmp_path,
):
    import keras
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")

    def fit(units: int, learning_rate: float):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
        callback = keepbest.KeepBest(tmp_path / "run", monitor="val_loss")
        model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[callback])
        return callback

    first = fit(8, 0.01)
    before = (tmp_path / "run" / "best.weights.h5").read_bytes()
    with pytest.raises(keepbest.KeepbestError) as wider:
        fit(16, 0.01)
    assert "model.json" in str(wider.value) and "units" in str(wider.value)
    with pytest.raises(keepbest.KeepbestError) as faster:
        fit(8, 0.1)
    assert "optimizer.config.learning_rate" in str(faster.value)
    assert (tmp_path / "run" / "best.weights.h5").read_bytes() == before
    again = fit(8, 0.01)  # the same script: the finished run is verified, not redone
    assert again.complete_before is not None
    assert again.best_value == first.best_value
