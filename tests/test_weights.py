"""Class weights and sample weights (``train.class_weight``, ``data.weight_key``,
``data.weight_column``, a factory's ``(x, y, w)``) count in the training loss and in the
measured monitor exactly as Keras counts them.

Every number is checked against plain Keras on arrays built here with numpy: the
weights a sample gets (its sample weight times its class's weight, ``balanced`` as
sklearn computes it), the rows of the training split, and ``model.evaluate(...,
sample_weight=w)`` on the reloaded best. Bad values are refused by the real CLI with one
line before any work.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import signal
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import keepbest
from conftest import run_cli, small_config
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from test_resume import assert_same_run, config_for, start_training, wait_for_rows, write

CLASS_WEIGHT = {0: 0.5, 2: 3.0}  # class 1 keeps Keras' default weight, 1.0
BATCH = 32
SPLIT = 0.25
SEED = 0


def make_data(seed: int = 1, counts=(120, 60, 20), features: int = 6):
    """Imbalanced classes 0..len(counts)-1 in shuffled order, and sample weights."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(count, k) for k, count in enumerate(counts)])
    rng.shuffle(y)
    x = (rng.normal(size=(len(y), features)) + y[:, None] * 0.7).astype("float32")
    w = rng.uniform(0.5, 2.0, size=len(y)).astype("float32")
    return x, y, w


def training_rows(count: int, seed: int = SEED, split: float = SPLIT) -> np.ndarray:
    """The documented split: a permutation seeded with the config's seed, the first
    round(n * split) samples for validation, the rest for training, in file order."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[round(count * split) :])


def keras_class_weights(y: np.ndarray, class_weight: dict) -> np.ndarray:
    """Keras' fit(class_weight=...): each sample weighs its class's weight, 1.0 if absent."""
    return np.array([class_weight.get(int(label), 1.0) for label in y], dtype="float32")


def balanced(y: np.ndarray) -> dict:
    """sklearn's 'balanced': n_samples / (n_classes * count), over the classes present."""
    classes, counts = np.unique(y, return_counts=True)
    return {c: len(y) / (len(classes) * n) for c, n in zip(classes.tolist(), counts, strict=True)}


def npz_data(path: Path, **data) -> dict:
    settings = {"source": "npz", "path": str(path), "batch_size": BATCH}
    return {**settings, "validation": {"split": SPLIT}, **data}


def tiny(output_dir: Path, data: dict, epochs: int = 3, **sections) -> dict:
    return small_config(
        output_dir=str(output_dir),
        data=data,
        model={"builder": "mlp", "kwargs": {"hidden": [8]}},
        train={"epochs": epochs, **sections.pop("train", {})},
        **sections,
    )


def weighted_loss(model, x, y, w) -> float:
    """Plain Keras: the loss with sample weights ``w``, in keepbest's batches."""
    values = model.evaluate(x, y, sample_weight=w, batch_size=BATCH, verbose=0, return_dict=True)
    return values["loss"]


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    """One run with sample weights (data.weight_key) and class weights, monitoring the
    training loss (measured by the fixed-order pass over the training split)."""
    folder = tmp_path_factory.mktemp("weighted")
    x, y, w = make_data()
    np.savez(folder / "d.npz", x=x, y=y, w=w)
    cfg = tiny(
        folder / "runs",
        npz_data(folder / "d.npz", weight_key="w"),
        train={"class_weight": CLASS_WEIGHT},
        checkpoint={"monitor": "loss"},
    )
    return folder, keepbest.train(cfg), (x, y, w)


def test_class_and_sample_weights_count_in_the_training_monitor_as_keras_counts_them(
    weighted_run,
):
    _, result, (x, y, w) = weighted_run
    record = result.record
    rows = training_rows(len(y))
    expected = w[rows] * keras_class_weights(y[rows], CLASS_WEIGHT)
    model = keepbest.load_best(result.run_dir, raw_inputs=False)

    assert record.value == weighted_loss(model, x[rows], y[rows], expected)  # exact on CPU
    assert record.verified_value == record.value
    # the weights matter: without them, or with the sample weights alone, it differs
    assert record.value != weighted_loss(model, x[rows], y[rows], None)
    assert record.value != weighted_loss(model, x[rows], y[rows], w[rows])


def test_evaluate_measures_with_the_run_s_weights_and_a_file_s_own(weighted_run):
    from keepbest.inference.evaluate import evaluate_run

    folder, result, (x, y, w) = weighted_run
    again = evaluate_run(result.run_dir)
    assert again.reproduces and again.measured == result.record.value

    model = keepbest.load_best(result.run_dir, raw_inputs=False)
    part = slice(0, 70)
    np.savez(folder / "with_w.npz", x=x[part], y=y[part], w=w[part])
    np.savez(folder / "without_w.npz", x=x[part], y=y[part])
    weighted = evaluate_run(result.run_dir, folder / "with_w.npz")
    plain = evaluate_run(result.run_dir, folder / "without_w.npz")
    # a file is measured with its own sample weights (class weights are training's only)
    (only,) = weighted.results.values()
    assert only.metrics["loss"] == weighted_loss(model, x[part], y[part], w[part])
    (only,) = plain.results.values()
    assert only.metrics["loss"] == weighted_loss(model, x[part], y[part], None)


def test_weights_reach_fit_s_loss_all_zero_weights_train_nothing(tmp_path, weighted_run):
    """Zero sample weights on classes 0 and 1 and a zero class weight for class 2: every
    gradient is zero, so Adam never moves a weight and validation never changes. Had
    either kind of weight not reached fit's loss, the model would train (as the same
    model does on the same data in ``weighted_run``)."""
    x, y, _ = make_data()
    np.savez(tmp_path / "d.npz", x=x, y=y, w=np.where(y == 2, 1.0, 0.0))
    cfg = tiny(
        tmp_path / "runs",
        npz_data(tmp_path / "d.npz", weight_key="w", validation=None),
        epochs=3,
        train={"class_weight": {2: 0.0}},
        checkpoint={"monitor": "loss"},
    )
    rows = read_history(keepbest.train(cfg).run_dir / "history.csv")
    assert [row["loss"] for row in rows] == [0.0] * 3
    assert [row["epoch_end_loss"] for row in rows] == [0.0] * 3
    trained = read_history(weighted_run[1].run_dir / "history.csv")
    assert len({row["epoch_end_loss"] for row in trained}) == 3  # the control did learn


def write_csv(path: Path, x: np.ndarray, labels: list[str], w: np.ndarray) -> None:
    header = [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*header[:3], "weight", *header[3:], "label"])]
    for features, label, weight in zip(x, labels, w, strict=True):
        cells = [repr(float(v)) for v in features]
        lines.append(",".join([*cells[:3], repr(float(weight)), *cells[3:], label]))
    path.write_text("\n".join(lines) + "\n")


NAMES = ["ant", "bee", "cat"]


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    """A training CSV (text labels ant/bee/cat) and a validation CSV that also has a
    class the training data lacks (dog), both with a weight column in the middle."""
    folder = tmp_path_factory.mktemp("csv")
    x, y, w = make_data(seed=2)
    xv, yv, wv = make_data(seed=3, counts=(20, 15, 10, 5))
    write_csv(folder / "t.csv", x, [NAMES[k] for k in y], w)
    write_csv(folder / "v.csv", xv, [[*NAMES, "dog"][k] for k in yv], wv)
    return folder, (x, y, w), (xv, yv, wv)


def csv_data(folder: Path) -> dict:
    return {
        "source": "csv",
        "path": str(folder / "t.csv"),
        "target": "label",
        "weight_column": "weight",
        "validation": {"path": str(folder / "v.csv")},
        "batch_size": BATCH,
    }


def test_balanced_class_weights_are_sklearn_s_times_the_sample_weights(csv_files):
    """The weights every training batch carries: the CSV's weight column times
    n_samples / (n_classes * count); 'dog' has no training samples and is no class of
    the computation. Validation batches carry their own weights alone."""
    from keepbest.config import load_config
    from keepbest.data.pipelines import load_pipelines

    folder, (_, y, w), (_, _, wv) = csv_files
    cfg = load_config(tiny(folder / "runs", csv_data(folder), train={"class_weight": "balanced"}))
    pipes = load_pipelines(cfg)
    factor = balanced(y)
    assert len(factor) == 3 and pipes.spec.class_names == [*NAMES, "dog"]
    expected = w * np.array([factor[k] for k in y], dtype="float32")
    carried = np.concatenate([batch[2].numpy() for batch in pipes.train_eval])
    assert carried.dtype == np.float32 and np.array_equal(carried, expected)
    first = next(iter(pipes.train_stream(0)))
    assert len(first) == 3  # fit trains on (x, y, w)
    carried = np.concatenate([batch[2].numpy() for batch in pipes.validation])
    assert np.array_equal(carried, wv)
    assert pipes.spec.feature_names == [f"f{i}" for i in range(6)]  # weight: no feature


def test_csv_weight_column_and_class_weight_by_name_count_in_val_loss(csv_files):
    folder, _, (xv, yv, wv) = csv_files
    cfg = tiny(folder / "runs", csv_data(folder), train={"class_weight": {"cat": 4.0}})
    result = keepbest.train(cfg)
    model = keepbest.load_best(result.run_dir, raw_inputs=False)
    # val_loss: the validation file's own weights, no class weights (Keras' fit)
    assert result.record.value == weighted_loss(model, xv, yv, wv)
    assert result.record.verified_value == result.record.value
    assert result.record.value != weighted_loss(model, xv, yv, None)


FACTORY = textwrap.dedent(
    """
    import numpy as np


    def load(path):
        with np.load(path) as npz:
            x, y, w = npz["x"], npz["y"], npz["w"]
        return (x[:150], y[:150], w[:150]), (x[150:], y[150:], w[150:])
    """
)


def test_a_factory_s_x_y_w_triples_train_and_verify(tmp_path):
    x, y, w = make_data(seed=4)
    np.savez(tmp_path / "d.npz", x=x, y=y, w=w)
    (tmp_path / "weighted_factory.py").write_text(FACTORY)
    data = {"source": "python", "factory": "weighted_factory:load", "validation": None}
    data.update(batch_size=BATCH, kwargs={"path": str(tmp_path / "d.npz")})
    cfg = tiny("runs", data, epochs=2)
    cfg["train"]["class_weight"] = {1: 2.0}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = keepbest.train(config)
    model = keepbest.load_best(result.run_dir, raw_inputs=False)
    assert result.record.value == weighted_loss(model, x[150:], y[150:], w[150:])
    assert result.record.verified_value == result.record.value


def test_keep_best_in_a_script_measures_train_data_with_its_weights(tmp_path):
    import keras

    x, y, w = make_data(seed=5)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(3, "softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = keepbest.KeepBest(tmp_path / "run", monitor="loss", train_data=(x, y, w))
    model.fit(x, y, sample_weight=w, epochs=2, batch_size=BATCH, callbacks=[callback], verbose=0)
    best = keepbest.load_best(tmp_path / "run")
    record = read_record(tmp_path / "run")
    assert record.value == weighted_loss(best, x, y, w)  # KeepBest batches as Keras does
    assert record.verified_value == record.value


def test_sigterm_mid_epoch_resumes_bit_identically_with_class_weights(tmp_path):
    """The digits run of test_resume's mid-epoch case, with balanced class weights and a
    training-set monitor (its pass weighted too): stopped mid-epoch and resumed, it
    equals an uninterrupted run bit for bit."""
    from keepbest.errors import EXIT_STOPPED
    from keepbest.rundir.resume_store import ResumeStore

    cfg = config_for("mid_epoch")
    cfg["train"]["class_weight"] = "balanced"
    cfg["checkpoint"] = {"monitor": "loss", "train_eval_steps": 50}
    reference = start_training(write(tmp_path / "reference", cfg))
    config = write(tmp_path / "stopped", cfg)
    run_dir = config.parent / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 1, process)
    while ResumeStore(run_dir).latest() is None:  # epoch 1's state follows its history row
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED, stderr
    assert ResumeStore(run_dir).latest().progress.batch > 0, stderr  # mid-epoch

    done = run_cli("train", "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    _, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr
    assert_same_run(run_dir, tmp_path / "reference" / "runs" / "t")


# --------------------------------------------------------------------------- bad values


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


X, Y, W = make_data(seed=6, counts=(30, 20, 10))
GOOD = {"x": X, "y": Y, "w": W}
TEXT_CSV = "a,b,wt,label\n" + "".join(
    f"{i},{i % 3},{1 + i % 2},{'dog' if i % 2 else 'cat'}\n" for i in range(12)
)
DATASET_FACTORY = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf


    def load():
        x, y = np.zeros((20, 3), "float32"), np.arange(20) % 2
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4), None
    """
)
NEGATIVE_FACTORY = textwrap.dedent(
    """
    import numpy as np


    def load():
        x, y, w = np.zeros((20, 3), "float32"), np.arange(20) % 2, np.ones(20)
        w[4] = -1.0
        return (x, y, w), None
    """
)


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    says: tuple[str, ...]
    data: dict
    train: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)


def npz_case(id: str, says, arrays=None, train=None, **data) -> Bad:
    settings = {"source": "npz", "path": "d.npz", "validation": {"split": 0.2}, **data}
    return Bad(id, says, settings, train or {}, {"d.npz": npz_bytes(**(arrays or GOOD))})


def csv_case(id: str, says, train=None, text=TEXT_CSV, **data) -> Bad:
    settings = {"source": "csv", "path": "t.csv", "target": "label", **data}
    return Bad(id, says, settings, train or {}, {"t.csv": text})


def factory_case(id: str, says, code: str, train=None) -> Bad:
    settings = {"source": "python", "factory": "bad_factory:load", "validation": None}
    return Bad(id, says, settings, train or {}, {"bad_factory.py": code})


BAD = [
    npz_case(
        "class-id-not-a-class",
        ("train.class_weight: class 7 is not a class of data.y_key: 'y'", "0 to 2"),
        train={"class_weight": {0: 1.0, 7: 2.0}},
    ),
    npz_case(
        "name-with-class-ids",
        ("train.class_weight: 'cat' is not a class", "holds class ids 0 to 2"),
        train={"class_weight": {"cat": 2.0}},
    ),
    csv_case(
        "class-name-misspelt",
        ("train.class_weight: 'dgo' is not a class of data.target: 'label'", "mean 'dog'?"),
        train={"class_weight": {"dgo": 2.0}},
    ),
    csv_case(
        "class-given-twice",
        ("train.class_weight: 'cat' and 0 are the same class; give it once",),
        train={"class_weight": {"cat": 2.0, 0: 3.0}},
    ),
    npz_case(
        "class-weight-regression",
        ("train.class_weight: data.y_key: 'y' holds floats (regression targets)", "weight_key"),
        arrays={"x": X, "y": Y.astype("float32") + 0.5},
        train={"class_weight": "balanced"},
        loss="mean_squared_error",
    ),
    npz_case(
        "class-weight-negative",
        ("train.class_weight: class 2: its weight must be a finite number 0 or more",),
        train={"class_weight": {2: -1.0}},
    ),
    npz_case(
        "class-weight-nan",
        ("train.class_weight: class 0: its weight must be a finite number 0 or more",),
        train={"class_weight": {0: float("nan")}},
    ),
    npz_case(
        "class-weight-misspelt",
        ("train.class_weight: must be a mapping of class to weight", "mean 'balanced'?"),
        train={"class_weight": "balance"},
    ),
    npz_case(
        "weight-key-missing",
        ("data.path: d.npz has no array 'wt'; it holds x, y, w (set data.weight_key)",),
        weight_key="wt",
    ),
    npz_case(
        "weights-too-few",
        ("data.weight_key: 'w' of d.npz: sample weights must be one number per sample",),
        arrays={**GOOD, "w": W[:-1]},
        weight_key="w",
    ),
    npz_case(
        "weights-negative",
        ("data.weight_key: 'w' of d.npz: 1 sample weights are negative, NaN or infinite",),
        arrays={**GOOD, "w": np.where(np.arange(60) == 9, -2.0, W)},
        weight_key="w",
    ),
    npz_case(
        "weights-infinite",
        ("the first is sample 3: inf",),
        arrays={**GOOD, "w": np.where(np.arange(60) == 3, np.inf, W)},
        weight_key="w",
    ),
    Bad(
        "validation-file-lacks-weights",
        ("data.validation.path: v.npz has no array 'w'",),
        {"source": "npz", "path": "d.npz", "weight_key": "w", "validation": {"path": "v.npz"}},
        files={"d.npz": npz_bytes(**GOOD), "v.npz": npz_bytes(x=X, y=Y)},
    ),
    csv_case(
        "weight-column-missing",
        ("data.weight_column: column 'weight' is not in t.csv; its columns are a, b, wt",),
        weight_column="weight",
    ),
    csv_case(
        "weight-column-not-numbers",
        ("column 'wt': 'heavy' is not a number",),
        text=TEXT_CSV.replace("0,0,1,cat", "0,0,heavy,cat"),
        weight_column="wt",
    ),
    csv_case(
        "weight-column-is-target",
        ("data.weight_column: it is the target",),
        weight_column="label",
    ),
    factory_case(
        "class-weight-factory-dataset",
        ("train.class_weight:", "is a tf.data.Dataset", "(x, y, w)"),
        DATASET_FACTORY,
        train={"class_weight": {0: 2.0}},
    ),
    factory_case(
        "factory-negative-weights",
        ("data.factory: bad_factory:load's train data's w: 1 sample weights are negative",),
        NEGATIVE_FACTORY,
    ),
]


def _refuse(case: Bad, root: Path):
    folder = root / case.id
    folder.mkdir()
    for name, content in case.files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    data = {"batch_size": 8, **case.data}
    loss = data.pop("loss", None)
    cfg = small_config(name="bad", data=data, train={"epochs": 1, **case.train})
    if loss:
        cfg.update(loss=loss, metrics=[], checkpoint={"monitor": "val_loss"})
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run_cli("train", "--config", "exp.yaml", cwd=folder), folder


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict:
    """Every bad case through the real CLI, all at once."""
    root = tmp_path_factory.mktemp("bad")
    ordered = sorted(BAD, key=lambda case: "factory" not in case.id)  # TensorFlow's first
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case.id: pool.submit(_refuse, case, root) for case in ordered}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_a_bad_weight_is_refused_in_one_line_before_any_work(case: Bad, refusals):
    result, folder = refusals[case.id]
    shown = f"exit {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for fragment in case.says:
        assert fragment in lines[0], shown
    assert not (folder / "runs" / "bad").exists()
