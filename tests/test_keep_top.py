"""More than one best: ``checkpoint.keep_top`` keeps the k best points' files, ranked in
``best.json``; ``checkpoint.average`` averages k of them after training, measures the
average like every point and keeps it only if it beats the best.

Checked independently of keepbest's code: the ranking against history.csv, every file
against its sha256, the average against a numpy average of the kept files measured by
plain Keras in another interpreter, and, under kill -9 at random instants, that no
record ever names a missing file and that the end equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import keepbest
from conftest import remeasure_independently, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from test_resume import reference_and_copy, start_training, wait_for_rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def numpy_average(files: list[Path], out: Path) -> None:
    """The documented average, computed here: float variables summed in float64 in the
    order given, divided by k, rounded to their dtype; the rest from the first file."""
    shutil.copyfile(files[0], out)
    sources = [h5py.File(path, "r") for path in files]
    with h5py.File(out, "r+") as target:
        names: list[str] = []
        target.visititems(
            lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
        )
        for name in names:
            if target[name].dtype.kind == "f":
                total = np.zeros(target[name].shape, dtype=np.float64)
                for source in sources:
                    total = total + source[name][()]
                target[name][...] = (total / len(files)).astype(target[name].dtype)
    for source in sources:
        source.close()


def assert_kept_files_match(run_dir: Path) -> None:
    """The record names only files that are there, each with its sha256; the best file
    is the first ranked; nothing else is in checkpoints/."""
    record = read_record(run_dir)
    for kept in [*record.top, *record.last]:
        assert sha256(run_dir / kept.checkpoint) == kept.sha256, kept
    assert sha256(run_dir / "best.weights.h5") == record.sha256 == record.top[0].sha256
    named = {kept.checkpoint for kept in [*record.top, *record.last]}
    on_disk = {f"checkpoints/{p.name}" for p in (run_dir / "checkpoints").iterdir()}
    assert on_disk == named


@pytest.fixture(scope="module")
def top_run(tmp_path_factory) -> Path:
    """Eight epochs, the 3 best kept and averaged."""
    folder = tmp_path_factory.mktemp("top")
    cfg = small_config(
        output_dir=str(folder / "runs"),
        train={"epochs": 8},
        checkpoint={"keep_top": 3, "average": {"of": "top_k", "k": 3}},
    )
    keepbest.train(cfg)
    return folder / "runs" / "t"


def test_the_k_best_points_are_kept_ranked_with_their_checksums(top_run):
    record = read_record(top_run)
    rows = read_history(top_run / "history.csv")
    lowest = sorted(rows, key=lambda row: (row["val_loss"], row["step"]))[:3]
    assert [(k.step, k.value) for k in record.top] == [
        (int(row["step"]), row["val_loss"]) for row in lowest
    ]
    assert (record.top[0].step, record.top[0].value) == (record.step, record.value)
    assert_kept_files_match(top_run)
    assert (top_run / "best.weights.h5").stat().st_ino == (
        top_run / record.top[0].checkpoint
    ).stat().st_ino  # a hard link: the best costs no second copy


def test_the_average_is_the_numpy_average_of_the_kept_files_measured_by_plain_keras(
    top_run, tmp_path
):
    record = read_record(top_run)
    average = record.average
    assert average is not None and average.steps == [k.step for k in record.top]
    independent = tmp_path / "avg"
    independent.mkdir()
    shutil.copy(top_run / "model.json", independent / "model.json")
    numpy_average([top_run / k.checkpoint for k in record.top], independent / "best.weights.h5")
    assert remeasure_independently(independent, "val_loss") == average.value
    assert average.better == (average.value < record.value)
    assert (top_run / "average.weights.h5").exists() == average.better
    if average.better:
        assert sha256(top_run / "average.weights.h5") == sha256(independent / "best.weights.h5")


def test_an_average_that_beats_the_best_is_kept_reloaded_and_said(tmp_path):
    """SGD with a large step bounces around the minimum: the mean of the last 4 points
    beats every one of them (measured, not assumed: the test fails if it does not)."""
    cfg = small_config(
        output_dir=str(tmp_path / "runs"),
        optimizer={"name": "sgd", "learning_rate": 0.5, "momentum": 0.9},
        train={"epochs": 10},
        checkpoint={"average": {"of": "last_k", "k": 4}},
    )
    result = keepbest.train(cfg)
    run_dir = tmp_path / "runs" / "t"
    record = read_record(run_dir)
    average = record.average
    assert average.better and average.value < record.value, (average, record.value)
    assert average.verified_value == average.value
    assert average.steps == [int(row["step"]) for row in read_history(run_dir / "history.csv")][-4:]
    assert_kept_files_match(run_dir)
    assert "the average is used (average.weights.h5)" in result.summary()
    independent = tmp_path / "avg"
    independent.mkdir()
    shutil.copy(run_dir / "model.json", independent / "model.json")
    numpy_average([run_dir / k.checkpoint for k in record.last], independent / "best.weights.h5")
    assert sha256(run_dir / "average.weights.h5") == sha256(independent / "best.weights.h5")

    evaluated = run_cli("evaluate", str(run_dir), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"model": "average"' in evaluated.stdout and 'reproduces": true' in evaluated.stdout
    shown = run_cli("show", str(run_dir))
    assert "the average is used (average.weights.h5)" in shown.stdout
    exported = run_cli(
        "export", str(run_dir), "--format", "keras", "--out", str(tmp_path / "a.keras")
    )
    assert exported.returncode == 0, exported.stderr
    assert f"exported the averaged model (val_loss {average.value:.6g}" in exported.stdout
    best = keepbest.load_best(run_dir, which="best", raw_inputs=False)
    averaged = keepbest.load_best(run_dir, raw_inputs=False)  # which="better"
    import keras

    plain = keras.models.model_from_json((run_dir / "model.json").read_text())
    plain.load_weights(run_dir / "average.weights.h5")
    expected = [np.asarray(v) for v in plain.weights]
    same = lambda model: all(  # noqa: E731
        np.array_equal(np.asarray(v), e) for v, e in zip(model.weights, expected, strict=True)
    )
    assert same(averaged) and not same(best)


def test_bad_keep_and_average_values_are_refused_before_any_work(tmp_path, write_config):
    cases = {
        "keep_top: 0": ({"keep_top": 0}, "checkpoint.keep_top: Input should be greater than 0"),
        "k 1": (
            {"keep_top": 2, "average": {"k": 1}},
            "checkpoint.average.k: Input should be greater than or equal to 2",
        ),
        "fewer kept": (
            {"keep_top": 2, "average": {"of": "top_k", "k": 3}},
            "checkpoint.keep_top: 2 keeps fewer points than checkpoint.average averages",
        ),
        "of": (
            {"average": {"of": "best_k", "k": 3}},
            "checkpoint.average.of: must be one of top_k, last_k",
        ),
    }
    for name, (checkpoint, says) in cases.items():
        path = write_config(small_config(checkpoint=checkpoint), name=f"{name}.yaml")
        done = run_cli("train", "--config", str(path), cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], (name, lines)
        assert not (tmp_path / "runs").exists()


def test_kill_9_at_random_instants_keeps_every_kept_file_and_ends_like_an_uninterrupted_run(
    tmp_path_factory,
):
    cfg = small_config(
        model={"builder": "mlp", "kwargs": {"hidden": [256, 256]}},
        optimizer={"name": "adam", "learning_rate": 0.003},
        train={"epochs": 16},
        checkpoint={"every_steps": 3, "keep_top": 4, "average": {"of": "top_k", "k": 3}},
    )
    reference, config = reference_and_copy(tmp_path_factory, cfg, "top-kill")
    run_dir = config.parent / "runs" / "t"
    rng = random.Random(23)
    for _ in range(5):
        rows = len(read_history(run_dir / "history.csv"))
        process = start_training(config)
        wait_for_rows(run_dir, rows + 1, process)
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < deadline and process.poll() is None:
            if rng.random() < 0.3 and any((run_dir / "checkpoints").glob(".tmp-*")):
                break  # inside a kept file's write
            time.sleep(0.002)
        if process.poll() is not None:
            break
        process.kill()
        process.communicate()
        record = read_record(run_dir)
        for kept in [*record.top, *record.last]:  # never a record naming a missing file
            assert sha256(run_dir / kept.checkpoint) == kept.sha256
        assert sha256(run_dir / "best.weights.h5") == record.sha256
    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    mine, theirs = read_record(run_dir), read_record(reference)
    assert [(k.step, k.value, k.sha256) for k in mine.top] == [
        (k.step, k.value, k.sha256) for k in theirs.top
    ]
    assert mine.average.value == theirs.average.value
    assert_kept_files_match(run_dir)


def test_keepbest_in_a_script_keeps_and_averages_too(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x @ rng.normal(size=6) > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.3, momentum=0.9), loss)
    best = keepbest.KeepBest(tmp_path / "run", keep_top=3, average={"of": "top_k", "k": 2})
    model.fit(
        x[:200],
        y[:200],
        validation_data=(x[200:], y[200:]),
        epochs=6,
        callbacks=[best],
        verbose=0,
        shuffle=False,
    )
    record = best.record
    assert len(record.top) == 3 and record.average.steps == [k.step for k in record.top[:2]]
    assert_kept_files_match(tmp_path / "run")
    with pytest.raises(keepbest.errors.ConfigError, match="KeepBest: keep_top=0"):
        keepbest.KeepBest(tmp_path / "other", keep_top=0)
