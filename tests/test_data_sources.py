"""Each data source, read from real small files, becomes the pipelines a model trains on.

Checks the spec a builder receives, one batch's shapes and dtypes, the errors for data
that cannot work as configured, and that the training order depends only on
(seed, epoch), which is what makes a resumed run see the batches it would have seen.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import run_cli
from keepbest.config import ExperimentConfig, load_config
from keepbest.data.pipelines import Pipelines, load_pipelines
from keepbest.errors import ConfigError, DataError, InputError
from keepbest.models import build_model


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch):
    """Factories make their config's folder importable; keep that to each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(folder: Path, data: dict, **sections) -> Path:
    """A config for ``data`` in ``folder``; monitors ``loss`` unless told otherwise."""
    raw = {"name": "t", "data": data, "checkpoint": {"monitor": "loss"}, **sections}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def pipelines(folder: Path, data: dict, **sections) -> Pipelines:
    return load_pipelines(load_config(write(folder, data, **sections)))


def first_batch(dataset) -> tuple[np.ndarray, np.ndarray]:
    x, y = next(iter(dataset))
    return x.numpy(), y.numpy()


def data_error(folder: Path, data: dict, **sections) -> str:
    path = write(folder, data, **sections)
    with pytest.raises(DataError) as caught:
        load_pipelines(load_config(path))
    (line,) = caught.value.problems
    assert line.startswith(f"{path}: ")
    return line.removeprefix(f"{path}: ")


# --------------------------------------------------------------------------- digits


DIGITS = Path(__file__).resolve().parents[1] / "src" / "keepbest" / "datasets" / "digits.npz"


def test_digits_are_read_raw_and_preprocessed_in_the_pipeline(tmp_path):
    """The spec records the file's raw format and the preprocessing; the pipeline's batches
    are the file's values / 16 with a channel axis, computed here independently."""
    data = {"source": "digits", "batch_size": 500, "shuffle": False}
    pipes = pipelines(tmp_path, data)
    spec = pipes.spec
    assert (spec.raw_shape, spec.raw_dtype, spec.raw_range) == ((8, 8), "uint8", (0.0, 16.0))
    assert (spec.input_shape, spec.num_classes, spec.class_names) == ((8, 8, 1), 10, None)
    assert spec.preprocessing.describe() == "x * 0.0625, then add a channel axis"
    x, y = first_batch(pipes.train_eval)
    with np.load(DIGITS) as npz:
        expected = npz["x"][:500].astype("float32")[..., None] / np.float32(16)
        assert y.tolist() == npz["y"][:500].tolist()
    assert x.dtype == np.float32 and x.shape == (500, 8, 8, 1)
    np.testing.assert_array_equal(x, expected)
    # data_spec.json round trip keeps all of it
    from keepbest.data.spec import DataSpec

    assert DataSpec.from_json(spec.to_json()) == spec


def test_a_spec_from_before_preprocessing_was_recorded_reads_as_before():
    from keepbest.data.spec import DataSpec

    old = DataSpec.from_json('{"input_shape": [8, 8, 1], "num_classes": 10, "target_shape": []}')
    assert (old.raw_shape, old.preprocessing, old.steps.is_identity) == ((8, 8, 1), None, True)
    images = DataSpec.from_json(
        '{"input_shape": [4, 6, 3], "num_classes": 2, "target_shape": [], '
        '"image_size": [4, 6], "color_mode": "rgb"}'
    )
    assert images.raw_shape == (None, None, 3)
    assert images.preprocessing.describe() == "resize to 4x6 (bilinear), then x * 0.00392157"


# --------------------------------------------------------------------------- npz


def save_npz(path: Path, n: int, features: int = 3, y=None) -> None:
    x = np.arange(n * features, dtype="float64").reshape(n, features)
    np.savez(path, x=x, y=np.arange(n) % 3 if y is None else y)


def test_npz_with_validation_file(tmp_path):
    save_npz(tmp_path / "train.npz", 10)
    save_npz(tmp_path / "val.npz", 4, y=np.array([[0], [1], [4], [1]]))  # an (n, 1) column
    pipes = pipelines(
        tmp_path,
        {"source": "npz", "path": "train.npz", "validation": {"path": "val.npz"}, "batch_size": 4},
    )
    spec = pipes.spec
    assert (spec.input_shape, spec.num_classes, spec.target_shape) == ((3,), 5, ())
    assert spec.class_names is None
    assert (spec.raw_shape, spec.raw_dtype, spec.raw_range) == ((3,), "float64", (0.0, 29.0))
    assert spec.preprocessing.is_identity
    assert (pipes.num_train, pipes.num_validation, pipes.steps_per_epoch) == (10, 4, 3)
    x, y = first_batch(pipes.train_stream(0))
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((4, 3), np.float32, (4,), np.int64)
    x, y = first_batch(pipes.validation)
    assert x[:, 0].tolist() == [0, 3, 6, 9]  # validation keeps its order
    assert y.tolist() == [0, 1, 4, 1]


def test_npz_split_is_disjoint_and_complete(tmp_path):
    save_npz(tmp_path / "all.npz", 20, features=1)
    data = {"source": "npz", "path": "all.npz", "validation": {"split": 0.25}, "batch_size": 64}
    pipes = pipelines(tmp_path, data)
    assert (pipes.num_train, pipes.num_validation) == (15, 5)
    train_ids = first_batch(pipes.train_eval)[0][:, 0].tolist()
    val_ids = first_batch(pipes.validation)[0][:, 0].tolist()
    assert sorted(train_ids + val_ids) == list(range(20))
    again = pipelines(tmp_path / "again", {**data, "path": str(tmp_path / "all.npz")})
    assert first_batch(again.validation)[0][:, 0].tolist() == val_ids  # seeded


def test_npz_text_labels_become_classes(tmp_path):
    save_npz(tmp_path / "d.npz", 6, y=np.array(["cat", "dog", "ant"] * 2))
    pipes = pipelines(tmp_path, {"source": "npz", "path": "d.npz", "shuffle": False})
    assert pipes.spec.class_names == ["ant", "cat", "dog"]
    assert pipes.spec.num_classes == 3
    assert first_batch(pipes.train_eval)[1].tolist() == [1, 2, 0, 1, 2, 0]


def test_npz_problems(tmp_path):
    with open(tmp_path / "single.npz", "wb") as handle:  # a .npy array under an .npz name
        np.save(handle, np.zeros(3))
    assert data_error(tmp_path, {"source": "npz", "path": "single.npz"}) == (
        "data.path: single.npz holds a single array, not an .npz archive of 'x' and 'y' "
        "(write it with numpy.savez(single.npz, x=..., y=...))"
    )
    np.savez(tmp_path / "keys.npz", features=np.zeros((2, 2)), y=np.zeros(2))
    assert data_error(tmp_path, {"source": "npz", "path": "keys.npz"}) == (
        "data.path: keys.npz has no array 'x'; it holds features, y (set data.x_key)"
    )
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 2)), y=np.array([0, -1]))
    assert data_error(tmp_path, {"source": "npz", "path": "neg.npz"}).startswith(
        "data.y_key: 'y': integer targets are class ids and must be 0 or more, found -1"
    )


# --------------------------------------------------------------------------- csv


def test_csv_numeric_target_gives_classes(tmp_path):
    # A spreadsheet export: byte-order mark, spaces after commas in the header, blank line.
    text = "\ufeffsize, weight,label\n1.5,2,0\n3,4,2\n\n5,6e-1,1\n7,8,2\n"
    (tmp_path / "t.csv").write_text(text, encoding="utf-8")
    pipes = pipelines(
        tmp_path,
        {"source": "csv", "path": "t.csv", "target": "label", "batch_size": 8, "shuffle": False},
    )
    spec = pipes.spec
    assert spec.feature_names == ["size", "weight"]
    assert (spec.input_shape, spec.num_classes, spec.class_names) == ((2,), 3, None)
    x, y = first_batch(pipes.train_stream(0))
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0], [5.0, 0.6000000238418579], [7.0, 8.0]]
    assert y.tolist() == [0, 2, 1, 2]


def test_csv_text_target_gives_class_names_shared_with_validation(tmp_path):
    (tmp_path / "train.csv").write_text("a;kind\n1;pear\n2;apple\n3;pear\n", encoding="utf-8")
    (tmp_path / "val.csv").write_text("kind;a\nplum;4\napple;5\n", encoding="utf-8")
    data = {
        "source": "csv",
        "path": "train.csv",
        "target": "kind",
        "delimiter": ";",
        "validation": {"path": "val.csv"},
    }
    pipes = pipelines(tmp_path, data)
    assert pipes.spec.class_names == ["apple", "pear", "plum"]
    assert pipes.spec.num_classes == 3
    assert first_batch(pipes.train_eval)[1].tolist() == [1, 0, 1]
    x, y = first_batch(pipes.validation)
    assert x.tolist() == [[4.0], [5.0]] and y.tolist() == [2, 0]


def test_csv_spec_builds_an_mlp_but_not_a_cnn(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,4,2\n", encoding="utf-8")
    path = write(tmp_path, {"source": "csv", "path": "t.csv", "target": "label"})
    cfg = load_config(path, ["model.kwargs.hidden=[3]"])
    spec = load_pipelines(cfg).spec
    assert build_model(cfg, spec).output_shape == (None, 3)
    cnn = load_config(path, ["model.builder=cnn"])
    with pytest.raises(ConfigError) as caught:
        build_model(cnn, spec)
    assert str(caught.value).startswith(
        "--set model.builder: cnn failed: ValueError: cnn takes images (height, width"
        "[, channels]); this data's samples have shape (2,): use builder mlp (at models.py:"
    )


def test_csv_float_target_is_regression(tmp_path):
    (tmp_path / "t.csv").write_text("a,price\n1,2.5\n2,3.25\n", encoding="utf-8")
    pipes = pipelines(tmp_path, {"source": "csv", "path": "t.csv", "target": "price"})
    assert (pipes.spec.num_classes, pipes.spec.target_shape) == (None, ())
    assert first_batch(pipes.train_eval)[1].dtype == np.float32


def test_csv_problems(tmp_path):
    (tmp_path / "t.csv").write_text(
        "height,color,label\n1,2,a\n3,red,b\n4,nan,a\n", encoding="utf-8"
    )
    data = {"source": "csv", "path": "t.csv", "target": "label"}
    assert data_error(tmp_path, data) == (
        "data.path: t.csv line 3, column 'color': 'red' is not a number "
        "(list numeric columns in data.features)"
    )
    assert data_error(tmp_path, {**data, "features": ["height", "colour"]}) == (
        "data.features: column 'colour' is not in t.csv; its columns are height, color, "
        "label; did you mean 'color'?"
    )
    assert data_error(tmp_path, {**data, "target": "lable"}) == (
        "data.target: column 'lable' is not in t.csv; its columns are height, color, label; "
        "did you mean 'label'?"
    )
    (tmp_path / "t.csv").write_text("height,color,label\n1,2,a\n3,4\n", encoding="utf-8")
    assert data_error(tmp_path, data) == ("data.path: t.csv line 3 has 2 fields, the header has 3")


# --------------------------------------------------------------------------- image_dir


def write_images(folder: Path, counts: dict[str, int]) -> None:
    """Tiny PNGs of different sizes, gray level 10 * (index + 1), one folder per class."""
    for name, count in counts.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((5 + i, 7, 3), 10 * (i + 1), dtype=np.uint8)
            (folder / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def test_image_dir_decodes_through_the_pipeline(tmp_path):
    write_images(tmp_path / "images", {"cat": 2, "dog": 3})
    (tmp_path / "images" / ".ipynb_checkpoints").mkdir()  # not a class
    (tmp_path / "images" / "dog" / "notes.txt").write_text("not an image")
    data = {
        "source": "image_dir",
        "path": "images",
        "image_size": [4, 6],
        "batch_size": 8,
        "shuffle": False,
    }
    pipes = pipelines(tmp_path, data)
    spec = pipes.spec
    assert (spec.input_shape, spec.num_classes, spec.class_names) == ((4, 6, 3), 2, ["cat", "dog"])
    assert (spec.image_size, spec.color_mode) == ((4, 6), "rgb")
    assert (spec.raw_shape, spec.raw_dtype, spec.raw_range) == ((None, None, 3), "uint8", (0, 255))
    x, y = first_batch(pipes.train_stream(0))
    assert (x.shape, x.dtype, y.dtype) == ((5, 4, 6, 3), np.float32, np.int64)
    assert y.tolist() == [0, 0, 1, 1, 1]
    # uniform images: resizing keeps the level, scaling is x * float32(1 / 255)
    levels = [10, 20, 10, 20, 30]
    expected = np.float32(levels) * np.float32(1 / 255)
    np.testing.assert_array_equal(x.reshape(5, -1), np.repeat(expected[:, None], 72, axis=1))

    gray = pipelines(
        tmp_path / "gray", {**data, "path": str(tmp_path / "images"), "color_mode": "grayscale"}
    )
    assert gray.spec.input_shape == (4, 6, 1)
    assert first_batch(gray.train_eval)[0].shape == (5, 4, 6, 1)


def test_image_dir_validation_folder_must_not_add_classes(tmp_path):
    write_images(tmp_path / "train", {"cat": 1, "dog": 1})
    write_images(tmp_path / "val", {"cat": 1, "emu": 1})
    data = {
        "source": "image_dir",
        "path": "train",
        "image_size": [4, 4],
        "validation": {"path": "val"},
    }
    assert data_error(tmp_path, data) == (
        f"data.validation.path: {tmp_path / 'val'} has class folders the training data "
        "lacks: emu (training classes: cat, dog)"
    )
    write_images(tmp_path / "train2", {"cat": 1, "dog": 0})
    assert data_error(tmp_path, {**data, "path": "train2", "validation": None}) == (
        "data.path: class folder 'dog' has no images (.png, .jpg, .jpeg, .bmp, .gif)"
    )


# --------------------------------------------------------------------------- python


FACTORIES = """
import numpy as np
import tensorflow as tf


def arrays(n, labels=("no", "yes")):
    x = np.arange(n * 2, dtype="float64").reshape(n, 2)
    y = np.array([labels[i % 2] for i in range(n)])
    return (x[2:], y[2:]), (x[:2].tolist(), y[:2].tolist())


def datasets():
    x = np.ones((10, 4, 3), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.arange(10) % 4)).batch(3)
    val = tf.data.Dataset.from_tensor_slices((x[:2], np.array([0, 6]))).batch(3)
    return train, val


def train_only():
    return (np.zeros((4, 2)), np.zeros(4, "int64")), None


def wrong_type():
    return {"train": None}


def unbatched():
    return tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), np.zeros(4))), None


def broken():
    return {}["missing"]


def named(n=6, info=None):
    x = np.arange(n * 2, dtype="float32").reshape(n, 2)
    return (x, np.arange(n) % 3), None, info


def named_datasets(names):
    x = np.ones((6, 2), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.arange(6) % 3)).batch(3)
    return train, None, {"class_names": names}


def texts_in_declared_order():
    x = np.zeros((4, 1), "float32")
    return (x, np.array(["b", "a", "c", "a"])), None, {"class_names": ["c", "b", "a"]}
"""


def factory_config(tmp_path: Path, function: str, module: str, **data) -> Path:
    """A config in tmp_path/exp next to ``module``.py; the working directory is elsewhere."""
    folder = tmp_path / "exp"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(FACTORIES, encoding="utf-8")
    return write(folder, {"source": "python", "factory": f"{module}:{function}", **data})


def test_factory_returning_arrays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the module is found next to the config, not here
    path = factory_config(tmp_path, "arrays", "factory_arrays", kwargs={"n": 7}, batch_size=2)
    pipes = load_pipelines(load_config(path))
    spec = pipes.spec
    assert (spec.input_shape, spec.num_classes, spec.class_names) == ((2,), 2, ["no", "yes"])
    assert (pipes.num_train, pipes.num_validation, pipes.steps_per_epoch) == (5, 2, 3)
    x, y = first_batch(pipes.train_stream(0))
    assert (x.shape, x.dtype, y.dtype) == ((2, 2), np.float32, np.int64)
    assert first_batch(pipes.validation)[1].tolist() == [0, 1]


def test_factory_returning_datasets(tmp_path):
    path = factory_config(tmp_path, "datasets", "factory_datasets")
    pipes = load_pipelines(load_config(path))
    spec = pipes.spec
    # Labels 0..3 in training and 6 in validation: class ids are counted in both.
    assert (spec.input_shape, spec.num_classes, spec.target_shape) == ((4, 3), 7, ())
    assert pipes.steps_per_epoch == 4
    x, y = first_batch(pipes.train_stream(0))
    assert (x.shape, x.dtype, y.shape) == ((3, 4, 3), np.float32, (3,))
    batches = list(pipes.train_stream(3).take(2))  # the last batch, then epoch 2 again
    assert [len(b[1]) for b in batches] == [1, 3]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            "wrong_type",
            "data.factory: factory_bad:wrong_type must return (train, validation), each an "
            "(x, y) tuple of arrays (or (x, y, w), w the sample weights), a random-access "
            "source of samples (len() and [i], e.g. a Grain MapDataset) or a batched "
            "tf.data.Dataset (validation may be None), optionally followed by a dict of "
            "class_names and feature_names; got dict",
        ),
        (
            "unbatched",
            "data.factory: factory_bad:unbatched's train data: the dataset yields single "
            "samples (x (2,), y ()); batch it, e.g. dataset.batch(32)",
        ),
        (
            "broken",
            "data.factory: factory_bad:broken failed: KeyError: 'missing' (at factory_bad.py:32)",
        ),
        (
            "arrays",
            "data.kwargs: arrays() needs argument 'n'; set data.kwargs.n",
        ),
    ],
)
def test_factory_problems(tmp_path, function, message):
    path = factory_config(tmp_path, function, "factory_bad")
    with pytest.raises(InputError) as caught:
        load_pipelines(load_config(path))
    assert str(caught.value) == f"{path}: {message}"


def test_a_factory_names_its_classes_and_features(tmp_path):
    info = {"class_names": ["red", "green", "blue"], "feature_names": ["h", "w"]}
    path = factory_config(tmp_path, "named", "factory_named", kwargs={"info": info})
    spec = load_pipelines(load_config(path)).spec
    assert (spec.class_names, spec.feature_names, spec.num_classes) == (
        ["red", "green", "blue"],
        ["h", "w"],
        3,
    )
    path = factory_config(tmp_path, "named_datasets", "factory_named", kwargs={"names": "abc"})
    with pytest.raises(DataError):  # a string is not a list of names
        load_pipelines(load_config(path))
    names = ["a", "b", "c", "d"]
    path = factory_config(tmp_path, "named_datasets", "factory_named", kwargs={"names": names})
    spec = load_pipelines(load_config(path)).spec
    assert (spec.class_names, spec.num_classes) == (names, 4)
    path = factory_config(tmp_path, "texts_in_declared_order", "factory_named")
    pipes = load_pipelines(load_config(path))
    assert pipes.spec.class_names == ["c", "b", "a"]
    assert first_batch(pipes.train_eval)[1].tolist() == [1, 2, 0, 2]


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ("red green", "third element must be a dict with class_names and/or feature_names"),
        ({"classes": ["a"]}, "has an unknown key 'classes'; did you mean 'class_names'?"),
        ({"class_names": ["a", "a", "b"]}, "class_names must be distinct texts"),
        ({"class_names": ["a", "b"]}, "its labels go up to 2, but it names 2 classes (a, b)"),
        ({"feature_names": ["h"]}, "it names 1 features, but its samples have shape (2,)"),
    ],
)
def test_a_factory_s_names_must_fit_its_data(tmp_path, info, message):
    path = factory_config(tmp_path, "named", "factory_named", kwargs={"info": info})
    with pytest.raises(DataError) as caught:
        load_pipelines(load_config(path))
    [line] = caught.value.problems
    assert line.startswith(f"{path}: data.factory: ")
    assert message in line


CONFIG_DIR_FACTORY = textwrap.dedent(
    """
    from pathlib import Path

    import numpy as np


    def load(path, config_dir):
        with np.load(Path(config_dir) / path) as npz:
            return (npz["x"], npz["y"]), None
    """
)


def test_a_factory_opens_relative_paths_from_the_config_folder_wherever_it_runs(
    tmp_path, monkeypatch
):
    """The one rule: relative paths start at the config's folder; a factory asks for that
    folder as ``config_dir``. Run from an unrelated working directory."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    np.savez(folder / "data" / "t.npz", x=np.ones((5, 3)), y=np.arange(5) % 2)
    (folder / "cd_factory.py").write_text(CONFIG_DIR_FACTORY, encoding="utf-8")
    data = {"source": "python", "factory": "cd_factory:load", "kwargs": {"path": "data/t.npz"}}
    path = write(folder, data)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)  # a decoy the working directory would find
    np.savez(elsewhere / "data" / "t.npz", x=np.ones((9, 3)), y=np.arange(9) % 2)
    monkeypatch.chdir(elsewhere)
    assert load_pipelines(load_config(path)).num_train == 5


def test_factory_without_validation_cannot_feed_a_val_monitor(tmp_path):
    path = factory_config(tmp_path, "train_only", "factory_train_only")
    cfg = load_config(path, ["checkpoint.monitor=val_loss"])
    with pytest.raises(DataError) as caught:
        load_pipelines(cfg)
    assert str(caught.value) == (
        "--set checkpoint.monitor: 'val_loss' needs validation data, but "
        "factory_train_only:train_only returned None for it; return (train, validation) "
        "or monitor 'loss'"
    )


def test_same_module_name_next_to_two_configs(tmp_path):
    """Each config gets the module beside it, even after the other's was imported."""
    sizes = []
    for n in (4, 6):
        folder = tmp_path / f"exp{n}"
        folder.mkdir()
        labels = [0, 1] * (n // 2)
        source = (
            f"import numpy as np\ndef load():\n    return (np.zeros(({n}, 1)), {labels}), None\n"
        )
        (folder / "shared_name.py").write_text(source, encoding="utf-8")
        path = write(folder, {"source": "python", "factory": "shared_name:load"})
        sizes.append(load_pipelines(load_config(path)).num_train)
    assert sizes == [4, 6]


# --------------------------------------------------------------------------- order


def stream_config(tmp_path: Path, shuffle: bool, seed: int = 3) -> ExperimentConfig:
    """10 samples whose single feature is their index, in batches of 4 (3 per epoch)."""
    np.savez(tmp_path / "ids.npz", x=np.arange(10.0), y=np.arange(10) % 2)
    data = {"source": "npz", "path": "ids.npz", "batch_size": 4, "shuffle": shuffle}
    return load_config(write(tmp_path, data, seed=seed))


def batches(pipes: Pipelines, start: int, count: int) -> list[list[int]]:
    return [x.numpy()[:, 0].astype(int).tolist() for x, _ in pipes.train_stream(start).take(count)]


def epochs_of(stream: list[list[int]]) -> list[list[int]]:
    flat = [i for batch in stream for i in batch]
    return [flat[i : i + 10] for i in range(0, len(flat), 10)]


def test_shuffled_order_depends_only_on_seed_and_epoch(tmp_path):
    pipes = load_pipelines(stream_config(tmp_path, shuffle=True))
    full = batches(pipes, 0, 9)  # three epochs
    assert [len(b) for b in full] == [4, 4, 2] * 3
    for start in (1, 2, 3, 4, 7):  # mid-epoch, just before and at the boundary, later
        assert batches(pipes, start, 9 - start) == full[start:]
    orders = epochs_of(full)
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert orders[0] != orders[1] != orders[2]
    again = load_pipelines(stream_config(tmp_path, shuffle=True))  # a fresh process's view
    assert batches(again, 0, 9) == full
    other_seed = load_pipelines(stream_config(tmp_path, shuffle=True, seed=4))
    assert batches(other_seed, 0, 3) != full[:3]


def test_unshuffled_order_is_the_file_order(tmp_path):
    pipes = load_pipelines(stream_config(tmp_path, shuffle=False))
    full = batches(pipes, 0, 6)
    assert epochs_of(full) == [list(range(10))] * 2
    assert batches(pipes, 4, 2) == [[4, 5, 6, 7], [8, 9]]


# --------------------------------------------------------------------------- training


END_TO_END_FACTORY = textwrap.dedent(
    """
    import numpy as np


    def load(n=48):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 3)).astype("float32")
        y = (x[:, 0] > 0).astype("int64")
        return (x[:40], y[:40]), (x[40:], y[40:])
    """
)


@pytest.mark.parametrize("source", ["csv", "python"])
def test_end_to_end_training(tmp_path, source):
    folder = tmp_path / "exp"
    folder.mkdir()
    if source == "csv":
        rng = np.random.default_rng(0)
        rows = [
            f"{a:.3f},{b:.3f},{'big' if a + b > 0 else 'small'}"
            for a, b in rng.normal(size=(40, 2))
        ]
        (folder / "table.csv").write_text("a,b,size\n" + "\n".join(rows) + "\n", encoding="utf-8")
        data = {
            "source": "csv",
            "path": "table.csv",
            "target": "size",
            "validation": {"split": 0.25},
        }
    else:
        (folder / "e2e_factory.py").write_text(END_TO_END_FACTORY, encoding="utf-8")
        data = {"source": "python", "factory": "e2e_factory:load", "kwargs": {"n": 48}}
    raw = {
        "name": "t",
        "output_dir": "runs",
        "data": {**data, "batch_size": 8},
        "model": {"builder": "mlp", "kwargs": {"hidden": [4]}},
        "metrics": ["accuracy"],
        "train": {"epochs": 2},
        "checkpoint": {"monitor": "val_accuracy"},
    }
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    result = run_cli("train", "--config", str(path), cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    run = folder / "runs" / "t"
    record = json.loads((run / "best.json").read_text(encoding="utf-8"))
    assert record["monitor"] == "val_accuracy"
    spec = json.loads((run / "data_spec.json").read_text(encoding="utf-8"))
    assert spec["num_classes"] == 2
    if source == "csv":
        assert spec["class_names"] == ["big", "small"]
