"""Using the best model: load_best (from anywhere, moved, corrupted), read_spec, evaluate,
predict and export, through the real CLI in subprocesses and on real files. The model a
user gets back takes the raw values of the training files (the preprocessing travels with
it), and a factory run is found from any working directory."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import keepbest
from conftest import REPO, run_cli, small_config
from keepbest.errors import CorruptFileError, DataError, KeepbestError, NoBestCheckpointError

DIGITS = REPO / "src" / "keepbest" / "datasets" / "digits.npz"


def digits(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as the file holds them: (n, 8, 8) uint8 pixels 0..16."""
    with np.load(DIGITS) as npz:
        return npz["x"][:count], npz["y"][:count].astype("int64")


def validation_split(count: int, fraction: float, seed: int) -> np.ndarray:
    """The indices a validation split takes, computed here as the README describes it: a
    permutation seeded with the run's seed, the first round(n * fraction), sorted."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[: round(count * fraction)])


def train_config(folder: Path, cfg: dict) -> Path:
    """Write ``cfg`` into ``folder``, train it, and return the run dir."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return keepbest.train(path).run_dir


def run_python(code: str, *args: str, cwd: Path, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def errors(done: subprocess.CompletedProcess) -> list[str]:
    """The ``error: ...`` lines; anything else on stderr but TF's noise is a failure."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in done.stderr, done.stderr
    return lines


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A verified run on the bundled digits, monitored on val_loss."""
    return train_config(tmp_path_factory.mktemp("digits"), small_config(train={"epochs": 2}))


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A run on a CSV of named pixel columns with text labels ("d0" ... "d9")."""
    folder = tmp_path_factory.mktemp("csv")
    x, y = digits()
    with open(folder / "digits.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"px{i}" for i in range(64)), "label"])
        writer.writerows(
            [*row.ravel().tolist(), f"d{label}"] for row, label in zip(x, y, strict=True)
        )
    data = {"source": "csv", "path": "digits.csv", "target": "label"}
    return train_config(folder, small_config(data=data, train={"epochs": 2}))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A run on a folder of 8x8 grayscale PNGs, one subfolder per class."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    x, y = digits(300)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        if label < 3:
            (folder / "images" / f"c{label}").mkdir(parents=True, exist_ok=True)
            pixels = (image.astype("uint16") * 255 // 16).astype("uint8")
            Image.fromarray(pixels).save(folder / "images" / f"c{label}" / f"{i}.png")
    data = {
        "source": "image_dir",
        "path": "images",
        "image_size": [8, 8],
        "color_mode": "grayscale",
        "batch_size": 32,
    }
    return train_config(folder, small_config(data=data, train={"epochs": 2}))


def copy_run(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target)
    return target


# --------------------------------------------------------------------------- load_best


def test_read_record_does_not_import_tensorflow(digits_run, tmp_path):
    done = run_python(
        """
        import sys
        import keepbest
        record = keepbest.read_record(sys.argv[1])
        print(record.epoch, record.monitor)
        heavy = [name for name in ("tensorflow", "keras") if name in sys.modules]
        assert not heavy, heavy
        """,
        str(digits_run),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "val_loss"


def test_a_moved_run_dir_loads_and_reproduces_from_another_directory(digits_run, tmp_path):
    """No absolute path in the records: move a copy away, hide the original, load it from an
    unrelated working directory in a fresh process, and measure the best again."""
    moved = copy_run(digits_run, tmp_path / "elsewhere" / "renamed-run")
    for name in ("best.json", "model.json", "data_spec.json"):
        assert str(digits_run.parent) not in (moved / name).read_text()
    x, _ = digits(20)
    np.save(tmp_path / "x.npy", x)
    expected = keepbest.load_best(digits_run, compile=False).predict(x, verbose=0)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    hidden = digits_run.with_name("hidden-while-testing")
    digits_run.rename(hidden)
    try:
        done = run_python(
            """
            import sys
            import numpy as np
            import keepbest
            from keepbest.inference.evaluate import evaluate_run
            model = keepbest.load_best(sys.argv[1])
            np.save(sys.argv[2], model.predict(np.load(sys.argv[3]), verbose=0))
            print(evaluate_run(sys.argv[1]).reproduces)
            """,
            "../elsewhere/renamed-run",
            str(tmp_path / "predicted.npy"),
            str(tmp_path / "x.npy"),
            cwd=elsewhere,
        )
    finally:
        hidden.rename(digits_run)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "True"
    np.testing.assert_array_equal(np.load(tmp_path / "predicted.npy"), expected)


def test_load_best_compile_false_gives_the_same_uncompiled_model(digits_run):
    x, _ = digits(10)
    compiled = keepbest.load_best(digits_run)
    plain = keepbest.load_best(digits_run, compile=False)
    assert compiled.compiled and not plain.compiled
    np.testing.assert_array_equal(plain.predict(x, verbose=0), compiled.predict(x, verbose=0))


def _remove_best(run: Path) -> None:
    (run / "best.json").unlink()
    (run / "best.weights.h5").unlink()


def _flip_a_byte(run: Path) -> None:
    path = run / "best.weights.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(run: Path) -> None:
    path = run / "best.weights.h5"
    path.write_bytes(path.read_bytes()[:1000])


def _garble_record(run: Path) -> None:
    (run / "best.json").write_text('{"epoch": 2, "monitor": ')


def _widen_hidden_layer(run: Path) -> None:
    """The architecture changes after training: model.json no longer fits the weights."""
    from keepbest.models import mlp

    wider = mlp(input_shape=(8, 8, 1), num_classes=10, hidden=[17])
    (run / "model.json").write_text(wider.to_json())


def _garble_architecture(run: Path) -> None:
    (run / "model.json").write_text('{"class_name": "Functional", "config": ')


def _lambda_architecture(run: Path) -> None:
    """A model.json holding Python bytecode: safe_mode must refuse it."""
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    (run / "model.json").write_text(keras.Model(inputs, outputs).to_json())


@pytest.mark.parametrize(
    ("damage", "error", "words"),
    [
        (_remove_best, NoBestCheckpointError, ["no best checkpoint yet", "train the run first"]),
        (_flip_a_byte, CorruptFileError, ["does not match the sha256", "corrupt"]),
        (_truncate, CorruptFileError, ["does not match the sha256", "corrupt"]),
        (_garble_record, CorruptFileError, ["best.json is not a valid keepbest record"]),
        (_widen_hidden_layer, CorruptFileError, ["(64, 17) in the model", "(64, 16) in the file"]),
        (_garble_architecture, KeepbestError, ["model.json cannot be deserialized"]),
        (_lambda_architecture, KeepbestError, ["Lambda", "safe_mode"]),
    ],
)
def test_load_best_refuses_damaged_run_dirs_with_one_clear_line(
    digits_run, tmp_path, damage, error, words
):
    run = copy_run(digits_run, tmp_path / "run")
    damage(run)
    with pytest.raises(error) as caught:
        keepbest.load_best(run)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_nothing_in_keepbest_unpickles_or_leaves_safe_mode():
    unsafe = ("import pickle", "allow_pickle=True", "safe_mode=False", "enable_unsafe")
    for path in (REPO / "src" / "keepbest").rglob("*.py"):
        text = path.read_text()
        assert not [word for word in unsafe if word in text], path


def test_the_cli_reports_a_corrupted_checkpoint_with_exit_7(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    _flip_a_byte(run)
    done = run_cli("evaluate", str(run))
    assert done.returncode == 7
    [line] = errors(done)
    assert "best.weights.h5 does not match the sha256 in best.json" in line


CUSTOM_LAYERS = textwrap.dedent(
    """
    import keras


    @keras.saving.register_keras_serializable(package="kb_custom_layers")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=0.5, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}


    def build(input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(Scale()(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    """
)


def test_a_custom_layer_s_builder_is_found_where_training_found_it(tmp_path):
    """model.json needs a custom class: load_best calls the run's builder from the folder
    training imported it from (code.json), from any working directory; with the module
    gone, the error names the class, the module, where it looked and the fix."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "kb_custom_layers.py").write_text(CUSTOM_LAYERS)
    cfg = small_config(model={"builder": "kb_custom_layers:build", "kwargs": {}})
    run = train_config(project, {**cfg, "train": {"epochs": 1}})
    code = """
        import sys
        import keepbest
        try:
            print(type(keepbest.load_best(sys.argv[1], raw_inputs=False).layers[1]).__name__)
        except keepbest.KeepbestError as exc:
            print(exc)
        sys.path.insert(0, sys.argv[2])
        import kb_custom_layers  # the fix the message names
        print(type(keepbest.load_best(sys.argv[1], raw_inputs=False).layers[1]).__name__)
        """
    found = run_python(code, str(run), str(project), cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split()[-2:] == ["Scale", "Scale"]

    aside = tmp_path / "aside"
    aside.mkdir()
    (project / "kb_custom_layers.py").rename(aside / "kb_custom_layers.py")
    gone = run_python(code, str(run), str(aside), cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    message, loaded = gone.stdout.strip().splitlines()[-2:]
    assert "custom class 'Scale' from module 'kb_custom_layers'" in message
    assert "import kb_custom_layers" in message
    assert "no module named 'kb_custom_layers' where training imported it from" in message
    assert f"(looked in {project}" in message and "add its folder to PYTHONPATH" in message
    assert loaded == "Scale"


# --------------------------------------------------------------------------- raw inputs


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """configs/quickstart.yaml as the README runs it, for 2 epochs, into a temporary folder."""
    out = tmp_path_factory.mktemp("quickstart")
    overrides = [f"output_dir={out}", "train.epochs=2"]
    return keepbest.train(REPO / "configs" / "quickstart.yaml", overrides=overrides).run_dir


def test_load_best_on_the_raw_digits_file_reproduces_training_s_value_to_the_bit(
    quickstart_run,
):
    """The bundled file as it is, (n, 8, 8) pixels 0..16, into the model load_best returns:
    the validation loss is the recorded best, bit for bit (CPU)."""
    import tensorflow as tf

    assert not tf.config.list_physical_devices("GPU")
    record, spec = keepbest.read_record(quickstart_run), keepbest.read_spec(quickstart_run)
    assert (spec.raw_shape, spec.raw_dtype, spec.raw_range) == ((8, 8), "uint8", (0.0, 16.0))
    x, y = digits()
    val = validation_split(len(x), 0.2, seed=0)
    model = keepbest.load_best(quickstart_run)
    measured = model.evaluate(x[val], y[val], batch_size=64, verbose=0, return_dict=True)
    assert measured["loss"] == record.value == record.verified_value
    # the trained model alone (what best.weights.h5 holds) needs the preprocessed values
    trained = keepbest.load_best(quickstart_run, raw_inputs=False)
    assert trained.input_shape == (None, 8, 8, 1)
    scaled = x[val].astype("float32")[..., None] / np.float32(16)
    np.testing.assert_array_equal(
        trained.predict(scaled, batch_size=64, verbose=0),
        model.predict(x[val], batch_size=64, verbose=0),
    )
    assert len(model.weights) == len(trained.weights)  # the preprocessing has no weights


def test_evaluate_takes_the_bundled_digits_file_itself(digits_run, tmp_path):
    done = run_cli("evaluate", str(digits_run), "--data", str(DIGITS), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["results"][str(DIGITS)]
    x, y = digits()
    expected = keepbest.load_best(digits_run).evaluate(
        x, y, batch_size=128, verbose=0, return_dict=True
    )
    assert result["samples"] == len(x)
    assert result["metrics"]["loss"] == expected["loss"]


def test_evaluate_refuses_a_preprocessed_file_before_loading_the_model(digits_run, tmp_path):
    from keepbest.inference.evaluate import evaluate_run

    x, y = digits(50)
    np.savez(tmp_path / "scaled.npz", x=x[..., None] / 16.0, y=y)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "scaled.npz").read_bytes()[:300])
    for name, words in (
        ("scaled.npz", "the model expects input of shape (N, 8, 8), the file has (50, 8, 8, 1)"),
        ("cut.npz", "cut.npz is damaged or truncated"),
    ):
        with pytest.raises(DataError) as caught:
            evaluate_run(digits_run, tmp_path / name)
        [line] = caught.value.problems
        assert words in line, line


def test_predict_warns_about_inputs_outside_the_training_range(digits_run, tmp_path):
    from keepbest.inference.predict import range_problem

    x, _ = digits(20)
    np.savez(tmp_path / "bytes.npz", x=x.astype("float32") * 16)  # 0..256, not 0..16
    done = run_cli(
        "predict", str(digits_run), "--input", "bytes.npz", "--output", "p.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "bytes.npz" in line]
    assert line == (
        "warning: --input: bytes.npz: values range 0..256, far outside the training inputs' "
        "0..16; the predictions may be wrong: give values as the training files hold them "
        "(the model preprocesses them itself: x * 0.0625, then add a channel axis)"
    )
    assert "Traceback" not in done.stderr and (tmp_path / "p.csv").is_file()

    spec = keepbest.read_spec(digits_run)
    assert range_problem(x, spec) is None
    assert range_problem(x[:0], spec) is None
    scaled = range_problem(x.astype("float32") / 16, spec)
    assert scaled.startswith("values range 0..1, but the training inputs spanned 0..16: they")
    broken = x.astype("float32")
    broken[0, 0, 0] = np.nan
    assert range_problem(broken, spec).startswith("1 values are NaN or infinite")


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> Path:
    """A run on an .npz of raw digits with text labels ("zero" ... "nine")."""
    folder = tmp_path_factory.mktemp("npz")
    x, y = digits()
    np.savez(folder / "digits.npz", x=x, y=np.array([WORDS[i] for i in y]))
    data = {"source": "npz", "path": "digits.npz", "validation": {"split": 0.2}}
    return train_config(folder, small_config(data=data, train={"epochs": 1}))


def test_read_spec_gives_class_names_and_inputs_without_tensorflow(
    npz_run, csv_run, image_run, tmp_path
):
    done = run_python(
        """
        import json, sys
        import keepbest
        specs = {path: keepbest.read_spec(path) for path in sys.argv[1:]}
        print(json.dumps({path: spec.to_dict() for path, spec in specs.items()}))
        heavy = [name for name in ("tensorflow", "keras") if name in sys.modules]
        assert not heavy, heavy
        """,
        str(npz_run),
        str(csv_run),
        str(image_run),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    specs = json.loads(done.stdout)
    npz, csv_spec, images = specs[str(npz_run)], specs[str(csv_run)], specs[str(image_run)]
    assert npz["class_names"] == sorted(WORDS)
    assert (npz["raw_shape"], npz["raw_dtype"], npz["raw_range"]) == ([8, 8], "uint8", [0, 16])
    assert csv_spec["class_names"] == [f"d{i}" for i in range(10)]
    assert csv_spec["feature_names"] == [f"px{i}" for i in range(64)]
    assert images["class_names"] == ["c0", "c1", "c2"]
    assert (images["raw_shape"], images["raw_dtype"]) == ([None, None, 1], "uint8")
    assert images["preprocessing"] == {"resize": [8, 8], "scale": 1 / 255, "add_channel": False}


def _no_spec(run: Path) -> None:
    (run / "data_spec.json").unlink()


def _truncated_spec(run: Path) -> None:
    (run / "data_spec.json").write_text("{")


def _foreign_spec(run: Path) -> None:
    (run / "data_spec.json").write_text('{"shape": 1}')


@pytest.mark.parametrize(
    ("damage", "error", "words"),
    [
        (_no_spec, NoBestCheckpointError, "not a keepbest run dir (data_spec.json is missing)"),
        (_truncated_spec, CorruptFileError, "data_spec.json is not a valid data spec"),
        (_foreign_spec, CorruptFileError, "data_spec.json is not a valid data spec"),
    ],
)
def test_read_spec_refuses_a_missing_or_damaged_spec_with_one_line(
    digits_run, tmp_path, damage, error, words
):
    run = copy_run(digits_run, tmp_path / "run")
    damage(run)
    with pytest.raises(error) as caught:
        keepbest.read_spec(run)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(error):
        keepbest.load_best(run)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_reproduces_the_recorded_value_and_prints_every_metric(digits_run):
    record = keepbest.read_record(digits_run)
    table = run_cli("evaluate", str(digits_run))
    assert table.returncode == 0, table.stderr
    assert f"val_loss measured again: {record.value:.8g} (exact)" in table.stdout
    header, *rows = table.stdout.split("\n\n")[1].splitlines()
    assert header.split() == ["metric", "validation", "(359)"]
    assert [row.split()[0] for row in rows] == ["loss", "accuracy"]

    as_json = run_cli("evaluate", str(digits_run), "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["monitor"] == {
        "name": "val_loss",
        "recorded": record.value,
        "measured": record.value,
        "reproduces": True,
        "tolerance": 0.0,
    }
    assert result["results"]["validation"]["metrics"]["loss"] == record.value
    assert 0.0 <= result["results"]["validation"]["metrics"]["accuracy"] <= 1.0


def test_evaluate_measures_a_training_monitor_on_the_batches_training_measured(tmp_path):
    from keepbest.inference.evaluate import TRAINING_END_OF_EPOCH, evaluate_run

    cfg = small_config(checkpoint={"monitor": "loss", "train_eval_steps": 3})
    run = train_config(tmp_path, {**cfg, "train": {"epochs": 2}})
    result = evaluate_run(run)
    assert result.reproduces and result.measured == keepbest.read_record(run).value
    assert result.results[TRAINING_END_OF_EPOCH].samples == 3 * 128
    assert result.results[TRAINING_END_OF_EPOCH].metrics["loss"] == result.measured
    assert set(result.results) == {TRAINING_END_OF_EPOCH, "validation"}


def test_evaluate_a_file_in_the_runs_format_maps_text_labels_by_name(csv_run, tmp_path):
    """A CSV with only two of the ten classes, columns shuffled, an extra column: its labels
    are the run's class ids by name, not by the file's own sorted order."""
    x, y = digits(200)
    keep = (y == 3) | (y == 7)
    columns = [f"px{i}" for i in range(64)]
    order = [*reversed(columns), "label", "note"]
    path = tmp_path / "two-classes.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(order)
        for row, label in zip(x[keep], y[keep], strict=True):
            writer.writerow([*row.ravel().tolist()[::-1], f"d{label}", "x"])
    done = run_cli("evaluate", str(csv_run), "--data", str(path), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["results"][str(path)]["metrics"]

    model = keepbest.load_best(csv_run)
    expected = model.evaluate(x[keep].reshape(-1, 64), y[keep], verbose=0, return_dict=True)
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert json.loads(done.stdout)["results"][str(path)]["samples"] == int(keep.sum())


def test_evaluate_exits_3_when_the_best_does_not_reproduce(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    record = json.loads((run / "best.json").read_text())
    record["value"] += 0.125
    (run / "best.json").write_text(json.dumps(record))
    done = run_cli("evaluate", str(run))
    assert done.returncode == 3
    assert "measured again" in done.stdout
    [line] = errors(done)
    assert "val_loss measured again is" in line and "records" in line


def test_evaluate_says_what_to_do_when_the_runs_data_is_gone(csv_run, tmp_path):
    run = copy_run(csv_run, tmp_path / "run")
    data = csv_run.parent.parent / "digits.csv"
    aside = data.with_name("aside.csv")
    data.rename(aside)
    try:
        with pytest.raises(DataError) as caught:
            from keepbest.inference.evaluate import evaluate_run

            evaluate_run(run)
    finally:
        aside.rename(data)
    assert "file not found" in str(caught.value)
    assert "--data FILE" in caught.value.problems[-1]


# --------------------------------------------------------------------------- predict


def test_predict_npz_to_npz_matches_the_best_model(digits_run, tmp_path):
    x, _ = digits(300)
    np.savez(tmp_path / "in.npz", x=x)
    done = run_cli(
        "predict", str(digits_run), "--input", "in.npz", "--output", "out.npz", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 300 predictions to out.npz" in done.stdout
    assert "warning" not in done.stderr  # the raw file's values are in the training range
    assert "300/300" in done.stdout  # Keras' progress bar, one line when not a terminal
    expected = keepbest.load_best(digits_run, compile=False).predict(x, verbose=0)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as out:
        assert sorted(out.files) == ["labels", "predictions"]
        np.testing.assert_allclose(out["predictions"], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(out["labels"], expected.argmax(axis=1))


def test_predict_csv_by_column_name_writes_class_names(csv_run, tmp_path):
    x, _ = digits(40)
    columns = [f"px{i}" for i in range(64)]
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *reversed(columns)])  # no target column, another order
        writer.writerows([i, *reversed(row.ravel().tolist())] for i, row in enumerate(x))
    done = run_cli(
        "predict", str(csv_run), "--input", "in.csv", "--output", "out.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = keepbest.load_best(csv_run, compile=False).predict(x.reshape(40, 64), verbose=0)
    # the id, which the model does not take, comes first: rows match by more than order
    assert list(rows[0]) == ["id", "label", *(f"p_d{i}" for i in range(10))]
    assert [row["id"] for row in rows] == [str(i) for i in range(40)]
    assert [row["label"] for row in rows] == [f"d{i}" for i in expected.argmax(axis=1)]
    assert float(rows[0]["p_d0"]) == pytest.approx(float(expected[0, 0]), rel=1e-5)


def significant_digits(text: str) -> int:
    mantissa = text.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return len(mantissa)


def test_predict_keeps_the_columns_asked_for_and_writes_the_digits_asked_for(csv_run, tmp_path):
    """--keep (repeated, or by commas) copies those columns in front of the predictions,
    the target's too if asked; by default every column the model does not take but the
    target; --precision sets the significant digits (6 by default, not repr's 17)."""
    x, y = digits(30)
    columns = [f"px{i}" for i in range(64)]
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", *columns, "note"])
        writer.writerows(
            [f"s{i}", f"d{y[i]}", *row.ravel().tolist(), f"n,{i}"] for i, row in enumerate(x)
        )
    probabilities = [f"p_d{i}" for i in range(10)]

    def predict(*options: str) -> list[dict]:
        out = tmp_path / "out.csv"
        done = run_cli(
            "predict",
            str(csv_run),
            "--input",
            "in.csv",
            "--output",
            out.name,
            "--overwrite",
            *options,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        with open(out, newline="") as handle:
            return list(csv.DictReader(handle))

    default = predict()  # id and note: not features, not the target (label)
    assert list(default[0]) == ["id", "note", "label", *probabilities]
    assert [(row["id"], row["note"]) for row in default] == [(f"s{i}", f"n,{i}") for i in range(30)]
    assert max(significant_digits(row[p]) for row in default for p in probabilities) == 6
    expected = keepbest.load_best(csv_run, compile=False).predict(x.reshape(30, 64), verbose=0)
    got = np.array([[float(row[p]) for p in probabilities] for row in default])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)

    asked = predict("--keep", "note,label", "--keep", "px3", "--precision", "3")
    # the target, if asked, beside the predicted label: under another name
    assert list(asked[0]) == ["note", "input_label", "px3", "label", *probabilities]
    assert [row["input_label"] for row in asked] == [f"d{i}" for i in y[:30]]
    assert [row["label"] for row in asked] == [f"d{i}" for i in expected.argmax(axis=1)]
    assert [row["px3"] for row in asked] == [str(v) for v in x.reshape(30, 64)[:, 3].tolist()]
    assert max(significant_digits(row[p]) for row in asked for p in probabilities) == 3

    assert list(predict("--keep", "")[0]) == ["label", *probabilities]  # none kept
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "out.npz"
    done = run_cli("predict", str(csv_run), "--input", "in.csv", "--output", out.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with np.load(out) as arrays:  # an .npz keeps full floats (float32), no kept columns
        assert sorted(arrays.files) == ["class_names", "labels", "predictions"]
        np.testing.assert_array_equal(arrays["predictions"], expected.astype(np.float32))


@pytest.mark.parametrize(
    ("options", "output", "says"),
    [
        (
            ["--keep", "id", "--keep", "nmae"],
            "out.csv",
            "error: --keep: in.csv has no column 'nmae'; its columns are id, name, px0, px1, "
            "px2, px3, px4, px5, px6, px7, px8, px9, px10, px11, px12, px13, px14, px15, px16, "
            "px17 and 46 more; did you mean 'name'?",
        ),
        (
            ["--precision", "3"],
            "out.npz",
            "error: --precision: sets the digits of a .csv --output; out.npz keeps full floats",
        ),
        (
            ["--keep", "id"],
            "out.npz",
            "error: --keep: copies columns into a .csv --output, not out.npz",
        ),
    ],
    ids=["unknown-column", "precision-of-npz", "keep-into-npz"],
)
def test_predict_refuses_keep_and_precision_that_cannot_apply_before_any_work(
    csv_run, tmp_path, options, output, says
):
    columns = [f"px{i}" for i in range(64)]
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", *columns])
        writer.writerow([1, "a", *range(64)])
    done = run_cli(
        "predict", str(csv_run), "--input", "in.csv", "--output", output, *options, cwd=tmp_path
    )
    assert done.returncode == 2
    assert errors(done) == [says]
    assert done.stderr.strip() == says  # one line, nothing else
    assert not (tmp_path / output).exists()


def test_predict_a_folder_of_images(image_run, tmp_path):
    images = image_run.parent.parent / "images"
    inputs = tmp_path / "unlabelled"
    inputs.mkdir()
    files = sorted(images.rglob("*.png"))[::20]
    for path in files:
        shutil.copy(path, inputs / f"{path.parent.name}-{path.name}")
    done = run_cli(
        "predict", str(image_run), "--input", str(inputs), "--output", "out.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "label", "p_c0", "p_c1", "p_c2"]
    assert [row["file"] for row in rows] == sorted(p.name for p in inputs.iterdir())
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(inputs / row["file"])) for row in rows])
    expected = keepbest.load_best(image_run, compile=False).predict(pixels[..., None], verbose=0)
    assert [row["label"] for row in rows] == [f"c{i}" for i in expected.argmax(axis=1)]


def _write_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return path.name


def _write_csv(path: Path, header: list[str], rows: list[list]) -> str:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path.name


@pytest.mark.parametrize(
    ("which", "make_input", "words"),
    [
        (
            "digits",
            lambda d: _write_npz(d / "flat.npz", x=np.zeros((5, 64), "float32")),
            ["expects input of shape (N, 8, 8), got (5, 64)", "reshape it to (N, 8, 8)"],
        ),
        (
            "digits",
            lambda d: _write_npz(d / "scaled.npz", x=np.zeros((5, 8, 8, 1), "float32")),
            [
                "expects input of shape (N, 8, 8), got (5, 8, 8, 1)",
                "it looks preprocessed already: give the raw values, as in the training files "
                "(the model preprocesses them itself: x * 0.0625, then add a channel axis)",
            ],
        ),
        (
            "digits",
            lambda d: _write_npz(d / "text.npz", x=np.array([["a"] * 8] * 8)),
            ["the model takes numbers (N, 8, 8); got dtype <U1"],
        ),
        (
            "digits",
            lambda d: _write_npz(d / "named.npz", a=np.zeros(3), b=np.zeros(3)),
            ["has no array 'x' (the inputs); it holds a, b"],
        ),
        (
            "csv",
            lambda d: _write_csv(d / "cols.csv", ["px0", "px1", "label"], [[0, 1, "d1"]]),
            ["lacks the column(s) px2, px3", "the model takes px0, px1, px2", "(the file has"],
        ),
        (
            "csv",
            lambda d: _write_csv(d / "nan.csv", [f"px{i}" for i in range(64)], [["?"] * 64]),
            ["line 2, column 'px0': '?' is not a number"],
        ),
        (
            "digits",
            lambda d: (d / "folder").mkdir() or "folder",
            ["is a folder of images, but the model takes arrays of shape (N, 8, 8)"],
        ),
    ],
)
def test_predict_refuses_input_that_does_not_fit_before_predicting(
    request, tmp_path, which, make_input, words
):
    run = request.getfixturevalue(f"{which}_run")
    name = make_input(tmp_path)
    done = run_cli("predict", str(run), "--input", name, "--output", "out.npz", cwd=tmp_path)
    assert done.returncode == 2
    [line] = errors(done)
    for word in words:
        assert word in line
    assert not (tmp_path / "out.npz").exists()


# --------------------------------------------------------------------------- export

LOAD_WITHOUT_KEEPBEST = """
    import sys
    import numpy as np
    import keras
    import tensorflow as tf
    x = np.load(sys.argv[3])
    from_keras = keras.saving.load_model(sys.argv[1]).predict(x, verbose=0)
    loaded = tf.saved_model.load(sys.argv[2])
    from_savedmodel = loaded.serve(tf.constant(x, tf.float32)).numpy()  # raw 0..16
    np.savez(sys.argv[4], keras=from_keras, savedmodel=from_savedmodel)
    assert "keepbest" not in sys.modules, "the export needs keepbest"
    """


def test_export_keras_and_savedmodel_load_without_keepbest(digits_run, tmp_path):
    for fmt, out in (("keras", "model.keras"), ("savedmodel", "saved")):
        done = run_cli("export", str(digits_run), "--format", fmt, "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "reloaded, it predicts the same" in done.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    x, _ = digits(64)
    np.save(tmp_path / "x.npy", x)
    outside = tmp_path / "no-keepbest-here"
    outside.mkdir()
    done = run_python(
        LOAD_WITHOUT_KEEPBEST,
        str(tmp_path / "model.keras"),
        str(tmp_path / "saved"),
        str(tmp_path / "x.npy"),
        str(tmp_path / "served.npz"),
        cwd=outside,
    )
    assert done.returncode == 0, done.stderr
    expected = keepbest.load_best(digits_run, compile=False).predict(x, verbose=0)
    with np.load(tmp_path / "served.npz") as served:
        np.testing.assert_array_equal(served["keras"], expected)
        np.testing.assert_allclose(served["savedmodel"], expected, rtol=1e-5, atol=1e-6)


SERVE_RAW_IMAGES = """
    import sys
    sys.modules["keepbest"] = None  # not importable: the export must not need it
    from pathlib import Path
    import numpy as np
    from PIL import Image
    import keras
    import tensorflow as tf
    files = sorted(Path(sys.argv[3]).rglob("*.png"))
    small = np.stack([np.asarray(Image.open(f)) for f in files])[..., None]  # uint8, 8x8
    large = np.stack([np.asarray(Image.open(f).resize((16, 12))) for f in files])[..., None]
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    served = tf.saved_model.load(sys.argv[2])
    np.savez(
        sys.argv[4],
        files=np.array([f.parent.name for f in files]),
        small=model.predict(small, verbose=0),
        large=model.predict(large, verbose=0),
        served=served.serve(tf.constant(small, "float32")).numpy(),
    )
    """


def test_an_image_run_s_export_classifies_raw_decoded_images_without_keepbest(image_run, tmp_path):
    """Decoded PNGs (uint8, as PIL gives them, at the training size or another) into the
    exported .keras and SavedModel, in an isolated Python where keepbest cannot be
    imported: the same outputs as the trained model on the pipeline's inputs."""
    for fmt, out in (("keras", "images.keras"), ("savedmodel", "images-saved")):
        done = run_cli("export", str(image_run), "--format", fmt, "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    images = image_run.parent.parent / "images"
    done = subprocess.run(
        [
            sys.executable, "-I", "-c", textwrap.dedent(SERVE_RAW_IMAGES),
            str(tmp_path / "images.keras"), str(tmp_path / "images-saved"), str(images),
            str(tmp_path / "served.npz"),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    from PIL import Image

    files = sorted(images.rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])[..., None]
    trained = keepbest.load_best(image_run, compile=False, raw_inputs=False)
    scaled = pixels.astype("float32") * np.float32(1 / 255)  # what the pipeline computes
    expected = trained.predict(scaled, verbose=0)
    with np.load(tmp_path / "served.npz") as served:
        np.testing.assert_array_equal(served["small"], expected)
        np.testing.assert_allclose(served["served"], expected, rtol=1e-5, atol=1e-6)
        labels = [f"c{i}" for i in served["small"].argmax(axis=1)]
        assert labels == [f"c{i}" for i in expected.argmax(axis=1)]
        truth = served["files"].tolist()
        accuracy = np.mean([a == b for a, b in zip(labels, truth, strict=True)])
        assert accuracy > 0.6, accuracy  # 3 classes: it really classifies
        # another size: resized in the graph as the pipeline resizes (bilinear)
        large = np.stack([np.asarray(Image.open(f).resize((16, 12))) for f in files])[..., None]
        import tensorflow as tf

        resized = tf.image.resize(large.astype("float32"), (8, 8)).numpy()
        by_hand = trained.predict(resized * np.float32(1 / 255), verbose=0)
        np.testing.assert_allclose(served["large"], by_hand, rtol=1e-5, atol=1e-6)


def test_export_does_not_overwrite_by_accident(digits_run, tmp_path):
    (tmp_path / "model.keras").write_text("precious")
    done = run_cli("export", str(digits_run), "--out", "model.keras", cwd=tmp_path)
    assert done.returncode == 2
    [line] = errors(done)
    assert "model.keras exists; choose another path, or pass --overwrite" in line
    assert (tmp_path / "model.keras").read_text() == "precious"
    wrong = run_cli("export", str(digits_run), "--out", "model.h5", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "must end in .keras" in errors(wrong)[0]
