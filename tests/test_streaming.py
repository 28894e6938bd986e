"""Data bigger than memory: ``npy`` and ``parquet`` sources read a batch at a time by row
index, random-access factory sources, and resume by index arithmetic (issue 21).

The data here is the bundled digits written as .npy shards and as Parquet files, so the
values keepbest records can be measured again by plain Keras on arrays read here with
numpy and pyarrow, independently of keepbest's readers.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import remeasure_independently, run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from keepbest.rundir.resume_store import ResumeStore
from test_resume import (
    assert_same_run,
    check_invariants,
    reference_and_copy,
    start_training,
    wait_for_rows,
)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as the in-memory source's model sees them (x / 16, a channel
    axis), computed as conftest's independent re-measure computes them."""
    with np.load(files("keepbest.datasets") / "digits.npz") as npz:
        return (npz["x"].astype("float32") / 16.0)[..., None], npz["y"].astype("int64")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """digits as two .npy shards of x plus y, and as Parquet (64 pixel columns and a
    text label) in row groups of 100 rows, train and validation files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("streamed")
    x, y = digits()
    np.save(folder / "x-000.npy", x[:1000])
    np.save(folder / "x-001.npy", x[1000:])
    np.save(folder / "y.npy", y)
    flat = x.reshape(len(x), -1)
    columns = {f"p{i}": flat[:, i] for i in range(flat.shape[1])}
    table = pa.table({**columns, "label": np.array(NAMES)[y]})
    (folder / "pq").mkdir()
    pq.write_table(table.slice(0, 1400), folder / "pq" / "train.parquet", row_group_size=100)
    pq.write_table(table.slice(1400), folder / "val.parquet", row_group_size=100)
    return folder


def npy_config(folder: Path, **sections) -> dict:
    data = {
        "source": "npy",
        "x": str(folder / "x-*.npy"),
        "y": str(folder / "y.npy"),
        "validation": {"split": 0.2},
        "batch_size": 32,
    }
    return small_config(data=data, **sections)


def parquet_config(folder: Path, **sections) -> dict:
    data = {
        "source": "parquet",
        "path": str(folder / "pq"),
        "target": "label",
        "validation": {"path": str(folder / "val.parquet")},
        "batch_size": 32,
    }
    return small_config(data=data, **sections)


def write(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# Plain Keras and pyarrow: the run's best weights measured on the validation file.
PARQUET_REMEASURE = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import pyarrow.parquet as pq
    run_dir, path, batch_size = sys.argv[1:4]
    table = pq.read_table(path)
    x = np.stack([table.column(f"p{i}").to_numpy() for i in range(64)], 1).astype("float32")
    names = sorted(set(table.column("label").to_pylist()))
    y = np.array([names.index(v) for v in table.column("label").to_pylist()])
    model = keras.models.model_from_json(open(f"{run_dir}/model.json").read())
    model.load_weights(f"{run_dir}/best.weights.h5")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(repr(model.evaluate(x, y, batch_size=int(batch_size), verbose=0)[0]))
    """
)


def test_npy_and_parquet_runs_keep_a_best_that_plain_keras_measures_again(data, tmp_path):
    """Promise 1 and 2 on streamed data: the recorded value is what plain Keras measures
    on the validation rows read with numpy/pyarrow; evaluate and predict take the same
    formats; show names the files."""
    npy = write(tmp_path / "npy", npy_config(data))
    done = run_cli("train", "--config", str(npy), cwd=npy.parent)
    assert done.returncode == 0, done.stderr
    run = npy.parent / "runs" / "t"
    record = read_record(run)
    assert record.verified_value == record.value
    assert remeasure_independently(run, "val_loss", batch_size=32) == record.value
    # evaluate --data: a folder holding x.npy and y.npy (here: all the digits)
    x, y = digits()
    (tmp_path / "eval").mkdir()
    np.save(tmp_path / "eval" / "x.npy", x)
    np.save(tmp_path / "eval" / "y.npy", y)
    evaluated = run_cli("evaluate", str(run), "--data", str(tmp_path / "eval"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    import json

    (result,) = json.loads(evaluated.stdout)["results"].values()
    assert result["samples"] == 1797

    parquet = write(tmp_path / "pq", parquet_config(data))
    done = run_cli("train", "--config", str(parquet), cwd=parquet.parent)
    assert done.returncode == 0, done.stderr
    run = parquet.parent / "runs" / "t"
    record = read_record(run)
    again = subprocess.run(
        [sys.executable, "-c", PARQUET_REMEASURE, str(run), str(data / "val.parquet"), "32"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(again.stdout.strip().splitlines()[-1]) == record.value
    shown = run_cli("show", str(run)).stdout
    assert "parquet train.parquet, validation val.parquet" in shown
    assert "eight, five, four, nine, one" in shown  # class names in sorted order

    evaluated = run_cli("evaluate", str(run), "--data", str(data / "val.parquet"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert (
        f'"loss": {record.value!r}' in evaluated.stdout.replace("\n", " ")
        or str(record.value) in evaluated.stdout
    )
    out = tmp_path / "p.csv"
    predicted = run_cli(
        "predict", str(run), "--input", str(data / "val.parquet"), "--output", str(out)
    )
    assert predicted.returncode == 0, predicted.stderr
    assert len(out.read_text().splitlines()) == 1 + 397


def test_a_late_step_is_found_by_arithmetic_and_skipped_batches_are_not_read(data):
    """``train_stream(start, skip)``: epoch and offset by divmod (a start far beyond one
    epoch), the order of that epoch is Philox(seed, epoch)'s permutation (drawn here with
    numpy directly), the skipped batches are placeholders and no row of them is read."""
    import tensorflow as tf

    from keepbest.config import load_config
    from keepbest.data.pipelines import load_pipelines
    from keepbest.data.rows import NpyRows

    cfg = load_config(npy_config(data, seed=7), base_dir=data)
    pipes = load_pipelines(cfg)
    train = pipes.num_train
    per_epoch = -(-train // 32)
    x, y = digits()
    split = np.random.default_rng(7).permutation(len(y))
    rows = np.sort(split[round(len(y) * 0.2) :])  # the training rows, in file order

    read_rows: list[int] = []
    original = NpyRows._read

    def counted(self, index):  # the real reader, counting the rows it reads
        read_rows.extend(int(i) for i in index)
        return original(self, index)

    NpyRows._read = counted
    try:
        start, skip = 1_000_003 * per_epoch + 5, 3
        stream = pipes.train_stream(start, skip)
        batches = list(stream.take(skip + 1).as_numpy_iterator())
    finally:
        NpyRows._read = original
    epoch, offset = divmod(start, per_epoch)
    order = np.random.Generator(np.random.Philox(key=[7, epoch])).permutation(train)
    want = rows[order[(offset + skip) * 32 : (offset + skip + 1) * 32]]
    assert all(not b[0].any() for b in batches[:skip])  # placeholders
    np.testing.assert_array_equal(batches[skip][0], x[want])
    np.testing.assert_array_equal(batches[skip][1], y[want])
    skipped = rows[order[offset * 32 : (offset + skip) * 32]]
    assert set(want.tolist()) <= set(read_rows)  # read (with the batches prefetched after it)
    assert not set(skipped.tolist()) & set(read_rows)  # the skipped batches' rows never were
    assert isinstance(stream, tf.data.Dataset)


def _kill_campaign(tmp_path_factory, cfg: dict, name: str, kills: int) -> None:
    """kill -9 at random instants while the run trains; after each kill the invariants
    hold, each restart resumes where the last state left it; the end equals an
    uninterrupted run bit for bit."""
    reference, config = reference_and_copy(tmp_path_factory, cfg, name)
    run_dir = config.parent / "runs" / "t"
    rng = random.Random(21)
    done_kills = 0
    while done_kills < kills:
        rows = len(read_history(run_dir / "history.csv"))
        state = ResumeStore(run_dir).latest()
        process = start_training(config)
        wait_for_rows(run_dir, rows + 1, process)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            break
        process.kill()
        stdout, _ = process.communicate()
        done_kills += 1
        if state:
            assert f"resuming at epoch {state.progress.epoch + 1}" in stdout, stdout
        check_invariants(run_dir)
    assert done_kills == kills, f"the run finished after {done_kills} kills; give it more epochs"
    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    assert_same_run(run_dir, reference)


CAMPAIGN = {
    "model": {"builder": "mlp", "kwargs": {"hidden": [64], "dropout": 0.2}},
    "train": {"epochs": 14},
    "checkpoint": {"monitor": "val_loss", "every_steps": 7},
}


@pytest.mark.slow
@pytest.mark.parametrize("source", ["npy", "parquet"])
def test_kill_9_campaign_on_streamed_data_ends_bit_identical(data, tmp_path_factory, source):
    make = npy_config if source == "npy" else parquet_config
    _kill_campaign(tmp_path_factory, make(data, **CAMPAIGN), f"kill-{source}", kills=3)


FACTORIES = textwrap.dedent(
    '''
    import numpy as np
    from importlib.resources import files


    def _digits():
        with np.load(files("keepbest.datasets") / "digits.npz") as npz:
            return (npz["x"].astype("float32") / 16.0)[..., None], npz["y"].astype("int64")


    class Samples:
        """A random-access source of one's own: len() and [i]."""

        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], self.y[i]


    def own():
        x, y = _digits()
        return Samples(x[:1400], y[:1400]), Samples(x[1400:], y[1400:])


    def with_grain():
        import grain

        x, y = _digits()
        train = grain.MapDataset.source(list(range(1400))).map(lambda i: (x[i], y[i]))
        validation = grain.MapDataset.source(list(range(1400, len(y)))).map(lambda i: (x[i], y[i]))
        return train, validation


    def tf_data():
        import tensorflow as tf

        x, y = _digits()
        train = tf.data.Dataset.from_tensor_slices((x[:1400], y[:1400])).batch(32)
        validation = tf.data.Dataset.from_tensor_slices((x[1400:], y[1400:])).batch(32)
        return train, validation
    '''
)


def factory_config(folder: Path, factory: str, **sections) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "streamed_factories.py").write_text(FACTORIES)
    data = {"source": "python", "factory": f"streamed_factories:{factory}", "batch_size": 32}
    cfg = small_config(**sections)
    cfg["data"] = data  # the factory's own validation data, no split
    return write(folder, cfg)


def test_random_access_factories_resume_by_index_and_tf_data_says_what_it_replays(tmp_path):
    """A Grain MapDataset and a class of one's own holding the same samples train the
    same run bit for bit (keepbest indexes both); a SIGTERM mid-epoch on the Grain run
    resumes to the same end; a tf.data factory's run says in show how many batches a
    resume reads again."""
    sections = {
        "train": {"epochs": 4},
        "checkpoint": {"monitor": "val_loss", "every_steps": 7},
        "model": {"builder": "mlp", "kwargs": {"hidden": [64], "dropout": 0.2}},
    }
    own = factory_config(tmp_path / "own", "own", **sections)
    assert run_cli("train", "--config", str(own), cwd=own.parent).returncode == 0
    reference = own.parent / "runs" / "t"

    grain = factory_config(tmp_path / "grain", "with_grain", **sections)
    run_dir = grain.parent / "runs" / "t"
    process = start_training(grain)
    wait_for_rows(run_dir, 2, process)
    process.send_signal(__import__("signal").SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 75, "the SIGTERM landed after the run ended; train longer"
    state = ResumeStore(run_dir).latest()
    assert state is not None and state.progress.batch > 0  # stopped mid-epoch
    done = run_cli("train", "--config", str(grain), cwd=grain.parent)
    assert done.returncode == 0, done.stderr
    assert_same_run(run_dir, reference)
    assert "replay" not in run_cli("show", str(run_dir)).stdout

    replayed = factory_config(tmp_path / "tf", "tf_data", train={"epochs": 2})
    assert run_cli("train", "--config", str(replayed), cwd=replayed.parent).returncode == 0
    shown = run_cli("show", str(replayed.parent / "runs" / "t")).stdout
    assert "a resume reads 88 batches of the factory's tf.data.Dataset again" in shown


def test_a_shard_that_shrinks_while_training_is_named_and_the_run_resumes(data, tmp_path):
    """A file cut short mid-run: one line naming it (exit 2), no traceback; once the file
    is whole again the same command resumes from the last state and finishes."""
    import shutil

    folder = tmp_path / "shrink"
    folder.mkdir()
    for name in ("x-000.npy", "x-001.npy", "y.npy"):
        shutil.copy(data / name, folder / name)
    cfg = npy_config(folder, train={"epochs": 40})
    config = write(folder, cfg)
    run_dir = folder / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 2, process)
    whole = (folder / "x-001.npy").read_bytes()
    with open(folder / "x-001.npy", "r+b") as handle:
        handle.truncate(len(whole) // 2)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "x-001.npy ended early while being read" in errors[0], errors[0]
    assert "run the same command to resume" in errors[0]
    (folder / "x-001.npy").write_bytes(whole)
    done = run_cli("train", "--config", str(config), cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "resuming at epoch" in done.stdout


def test_two_workers_stream_npy_to_the_same_bytes_as_mirrored(data, tmp_path):
    """Multi-worker training on an npy source: each worker builds the same stream of
    batch numbers and tf.distribute shards it; the chief's best equals, byte for byte,
    the same run mirrored over two logical CPUs of one process."""

    from test_distribute import start_workers, train_in

    sections = {
        "model": {"builder": "mlp", "kwargs": {"hidden": [32]}},
        "train": {"epochs": 2},
        "checkpoint": {"monitor": "val_loss", "every_steps": 20},
    }
    mirrored = npy_config(data, distribute={"strategy": "mirrored", "logical_cpus": 2}, **sections)
    done, mirrored_dir = train_in(tmp_path / "mirrored", mirrored)
    assert done.returncode == 0, done.stderr

    cfg = npy_config(
        data, distribute={"strategy": "multi_worker", "connect_timeout": 60}, **sections
    )
    config = write(tmp_path / "workers", cfg)
    workers = start_workers(config, 2)
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    record = read_record(config.parent / "runs" / "t")
    assert record.verified_value == record.value
    assert record.sha256 == read_record(mirrored_dir).sha256
