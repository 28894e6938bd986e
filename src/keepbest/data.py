"""Data sources become tf.data pipelines whose order depends only on (seed, epoch).

Every source is first read into arrays (images stay file paths, decoded per batch), then
served by ``Pipelines``:

- ``train_stream(start_batch)``: the training batches from global batch ``start_batch``
  on, epoch after epoch. Epoch ``e`` is shuffled with the stateless seed ``(seed, e)``, so
  the order never depends on how many iterators a process made before, which is what
  makes resuming bit-exact.
- ``validation`` and ``train_eval``: fixed-order passes for the end-of-epoch evaluation.

A ``python`` factory may return tf.data.Datasets instead of arrays; those are used as
given (already batched), and their order is the factory's business. Integer labels are
class ids everywhere, text labels (csv, npz, factory arrays) become class ids in sorted
order, and every problem is a ``DataError`` that names the config key to fix.

Example:

    >>> from keepbest.config import load_config
    >>> from keepbest.data import load_pipelines
    >>> pipes = load_pipelines(load_config("configs/quickstart.yaml"))   # doctest: +SKIP
    >>> pipes.spec.input_shape, pipes.spec.num_classes                   # doctest: +SKIP
    ((8, 8, 1), 10)
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keepbest.config import (
    BundledData,
    CsvData,
    ExperimentConfig,
    ImageDirData,
    NpzData,
    PythonData,
    reported_against,
)
from keepbest.errors import ConfigError, DataError
from keepbest.references import (
    call_with_supported_kwargs,
    describe_exception,
    did_you_mean,
    resolve_reference,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_EPOCH_LIMIT = 2**62  # "forever": the stream is cut into epochs by steps_per_epoch


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model builder, ``load_best`` and ``predict`` need to know about the data."""

    input_shape: tuple[int, ...]
    num_classes: int | None
    target_shape: tuple[int, ...]
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    image_size: tuple[int, int] | None = None
    color_mode: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        raw = json.loads(text)
        for key in ("input_shape", "target_shape", "image_size"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return cls(**raw)


@dataclasses.dataclass
class Arrays:
    """Features (or image file paths) and targets held in memory."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Arrays:
        return Arrays(self.x[index], self.y[index])


@dataclasses.dataclass
class Pipelines:
    spec: DataSpec
    steps_per_epoch: int
    train_stream: Callable[[int], Any]
    train_eval: Any
    validation: Any | None
    num_train: int | None
    num_validation: int | None


# --------------------------------------------------------------------------- reading


def _split(arrays: Arrays, fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    order = np.random.default_rng(seed).permutation(len(arrays))
    count = max(1, round(len(arrays) * fraction))
    if count >= len(arrays):
        raise DataError(
            f"data.validation.split: {fraction} leaves no training data out of "
            f"{len(arrays)} samples; use a smaller fraction"
        )
    return arrays.take(np.sort(order[count:])), arrays.take(np.sort(order[:count]))


def _read_digits() -> Arrays:
    resource = importlib.resources.files("keepbest.datasets") / "digits.npz"
    with resource.open("rb") as handle, np.load(handle) as npz:
        x = (npz["x"].astype("float32") / 16.0)[..., None]
        return Arrays(x, npz["y"].astype("int64"))


def _read_npz(path: Path, x_key: str, y_key: str, where: str) -> Arrays:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where}: cannot read {path} as .npz ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where}: {path.name} holds a single array, not an .npz archive of {x_key!r} and "
            f"{y_key!r} (write it with numpy.savez({path.stem}.npz, {x_key}=..., {y_key}=...))"
        )
    with loaded as npz:
        for key, setting in ((x_key, "data.x_key"), (y_key, "data.y_key")):
            if key not in npz.files:
                raise DataError(
                    f"{where}: {path.name} has no array {key!r}; it holds "
                    f"{', '.join(npz.files)} (set {setting}){did_you_mean(key, npz.files)}"
                )
        try:
            x, y = npz[x_key], npz[y_key]
        except ValueError as exc:  # object arrays would need pickle, which is unsafe
            raise DataError(f"{where}: cannot read {path.name} ({exc})") from None
    if len(x) != len(y):
        raise DataError(f"{where}: {x_key} has {len(x)} rows but {y_key} has {len(y)}")
    return Arrays(_as_features(x, where), y)


def _as_features(x: np.ndarray, where: str) -> np.ndarray:
    """Numeric features as float32, one row per sample (a 1-D array is one feature)."""
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: features must be numbers, got an array of dtype {x.dtype}")
    if len(x) == 0:
        raise DataError(f"{where}: there are no samples")
    x = x[:, None] if x.ndim == 1 else x
    return x.astype("float32") if x.dtype != np.float32 else x


def _csv_rows(path: Path, delimiter: str, where: str) -> tuple[list[str], list[tuple]]:
    """The header and the (line number, fields) of each non-empty data row."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{where}: cannot read {path} ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
    return [name.strip() for name in rows[0][1]], rows[1:]


def _read_csv(cfg: CsvData, path: Path, where: str) -> tuple[Arrays, list[str]]:
    """Numeric feature columns plus the target column as text (typed later, jointly with
    the validation file's)."""
    header, body = _csv_rows(path, cfg.delimiter, where)
    if cfg.target not in header:
        raise DataError(
            f"data.target: column {cfg.target!r} is not in {path.name}; its columns are "
            f"{', '.join(header)}{did_you_mean(cfg.target, header)}"
        )
    features = cfg.features or [c for c in header if c != cfg.target]
    for name in features:
        if name == cfg.target:
            raise DataError(f"data.features: {name!r} is the target; it cannot be a feature")
        if name not in header:
            raise DataError(
                f"data.features: column {name!r} is not in {path.name}; its columns are "
                f"{', '.join(header)}{did_you_mean(name, header)}"
            )
    columns = [header.index(c) for c in features]
    target_col = header.index(cfg.target)
    x = np.empty((len(body), len(columns)), dtype="float32")
    targets = []
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{where}: {path.name} line {line} has {len(row)} fields, "
                f"the header has {len(header)}"
            )
        for j, col in enumerate(columns):
            try:
                x[i, j] = float(row[col])
            except ValueError:
                raise DataError(
                    f"{where}: {path.name} line {line}, column {features[j]!r}: "
                    f"{row[col]!r} is not a number (list numeric columns in data.features)"
                ) from None
            if not np.isfinite(x[i, j]):
                raise DataError(
                    f"{where}: {path.name} line {line}, column {features[j]!r}: "
                    f"{row[col]!r} is not a finite number (fill in missing values)"
                )
        if not row[target_col].strip():
            raise DataError(f"{where}: {path.name} line {line}: the target {cfg.target!r} is empty")
        targets.append(row[target_col].strip())
    return Arrays(x, np.array(targets)), features


def _csv_targets(*columns: np.ndarray) -> list[np.ndarray]:
    """Numbers become numbers (integral ones int64 class ids); else all stay text."""
    try:
        numeric = [col.astype("float64") for col in columns]
    except ValueError:
        return list(columns)
    if all(np.all(col == np.round(col)) for col in numeric):
        return [col.astype("int64") for col in numeric]
    return [col.astype("float32") for col in numeric]


def _finish_targets(train: Arrays, val: Arrays | None, where: str) -> list[str] | None:
    """Make targets trainable in place; return the class names if labels were text.

    Text labels become class ids in sorted order (jointly for training and validation);
    integer labels are class ids (an ``(n, 1)`` column is squeezed) and must be >= 0.
    """
    parts = [a for a in (train, val) if a is not None]
    if train.y.dtype.kind in "USO":
        names = sorted({str(v) for a in parts for v in a.y.ravel().tolist()})
        lookup = {name: i for i, name in enumerate(names)}
        for a in parts:
            if a.y.ndim != 1:
                raise DataError(f"{where}: text labels must be one per sample, got {a.y.shape}")
            a.y = np.array([lookup[str(v)] for v in a.y.tolist()], dtype="int64")
        return names
    for a in parts:
        if a.y.dtype.kind not in "fiub":
            raise DataError(f"{where}: targets must be numbers or text, got dtype {a.y.dtype}")
        if a.y.dtype.kind in "iub":
            a.y = a.y.reshape(-1) if a.y.shape[1:] == (1,) else a.y
            a.y = a.y.astype("int64")
            if a.y.size and a.y.min() < 0:
                raise DataError(
                    f"{where}: integer targets are class ids and must be 0 or more, found "
                    f"{a.y.min()} (use text labels, or float targets for regression)"
                )
        else:
            a.y = a.y.astype("float32")
    return None


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image_dir(folder: Path, where: str, class_names: list[str] | None = None):
    """Image paths and labels from one subfolder per class (``class_names`` from training:
    a validation folder may lack a class, but not add one)."""
    found = _class_folders(folder)
    if class_names is not None:
        extra = [name for name in found if name not in class_names]
        if extra:
            raise DataError(
                f"{where}: {folder} has class folders the training data lacks: "
                f"{', '.join(extra)} (training classes: {', '.join(class_names)})"
            )
    classes = class_names or found
    if not classes:
        raise DataError(f"{where}: {folder} has no class subfolders (expected one per class)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        sub = folder / name
        files = sorted(
            p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not files and class_names is None:
            raise DataError(
                f"{where}: class folder {name!r} has no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return Arrays(np.array(paths), np.array(labels, dtype="int64")), classes


_FACTORY_RETURNS = (
    "(train, validation), each an (x, y) tuple of arrays or a batched tf.data.Dataset "
    "(validation may be None)"
)


def _from_factory(cfg: PythonData, search_dir: Path) -> tuple[Any, Any]:
    factory = resolve_reference(cfg.factory, "data.factory", search_dir)
    try:
        result = call_with_supported_kwargs(factory, cfg.kwargs, {}, "data.kwargs")
    except ConfigError:
        raise
    except Exception as exc:
        raise DataError(f"data.factory: {cfg.factory} failed: {describe_exception(exc)}") from None
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        got = type(result).__name__
        if isinstance(result, (tuple, list)):
            got += f" of {len(result)}"
        raise DataError(f"data.factory: {cfg.factory} must return {_FACTORY_RETURNS}; got {got}")
    return _factory_part(result[0], 0, cfg), _factory_part(result[1], 1, cfg)


def _factory_part(part: Any, index: int, cfg: PythonData) -> Any:
    which = ("train", "validation")[index]
    where = f"data.factory: {cfg.factory}'s {which} data"
    if part is None and index == 1:
        return None
    if isinstance(part, (tuple, list)) and len(part) == 2:
        try:
            x, y = np.asarray(part[0]), np.asarray(part[1])
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"{where}: cannot be made into arrays ({exc})") from None
        if x.ndim == 0 or y.ndim == 0:
            raise DataError(f"{where}: x and y must be arrays with one row per sample")
        if len(x) != len(y):
            raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)}")
        return Arrays(_as_features(x, where), y)
    import tensorflow as tf

    if isinstance(part, tf.data.Dataset):
        _check_dataset(part, where)
        return part
    raise DataError(
        f"data.factory: {cfg.factory} must return {_FACTORY_RETURNS}; its {which} "
        f"is a {type(part).__name__}"
    )


def _check_dataset(dataset, where: str) -> None:
    """A factory's dataset must yield batches of (x, y) tensors (optionally weights)."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not (
        isinstance(spec, tuple)
        and len(spec) in (2, 3)
        and all(isinstance(s, tf.TensorSpec) for s in spec)
    ):
        raise DataError(f"{where}: the dataset must yield (x, y) tensors; it yields {spec}")
    x_spec, y_spec = spec[:2]
    if x_spec.shape.rank == 0 or y_spec.shape.rank == 0:
        raise DataError(
            f"{where}: the dataset yields single samples (x {x_spec.shape}, y {y_spec.shape}); "
            "batch it, e.g. dataset.batch(32)"
        )


def read_sources(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """Read the configured data into (train, validation, spec), raising ``DataError``."""
    with reported_against(cfg):
        return _read_sources(cfg)


def _read_sources(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    data = cfg.data
    validation = data.validation
    val_path = validation.path if validation else None
    val_where = "data.validation.path"
    class_names = feature_names = None
    image_size = color_mode = None
    if isinstance(data, BundledData):
        train, val = _read_digits(), None
    elif isinstance(data, NpzData):
        train = _read_npz(data.path, data.x_key, data.y_key, "data.path")
        val = _read_npz(val_path, data.x_key, data.y_key, val_where) if val_path else None
        class_names = _finish_targets(train, val, f"data.y_key: {data.y_key!r}")
    elif isinstance(data, CsvData):
        train, feature_names = _read_csv(data, data.path, "data.path")
        val = _read_csv(data, val_path, val_where)[0] if val_path else None
        typed = _csv_targets(train.y, *([] if val is None else [val.y]))
        train.y = typed[0]
        if val is not None:
            val.y = typed[1]
        class_names = _finish_targets(train, val, f"data.target: {data.target!r}")
    elif isinstance(data, ImageDirData):
        train, class_names = _read_image_dir(data.path, "data.path")
        val = _read_image_dir(val_path, val_where, class_names)[0] if val_path else None
        image_size, color_mode = tuple(data.image_size), data.color_mode
    else:
        train, val = _from_factory(data, cfg.base_dir)
        arrays = [p for p in (train, val) if isinstance(p, Arrays)]
        if arrays:
            class_names = _finish_targets(
                arrays[0], arrays[1] if len(arrays) > 1 else None, "data.factory"
            )
        val_where = f"data.factory: {data.factory}'s validation data"
    if validation is not None and validation.split is not None:
        train, val = _split(train, validation.split, cfg.seed)
    same_kind = isinstance(train, Arrays) and isinstance(val, Arrays) and image_size is None
    if same_kind and train.x.shape[1:] != val.x.shape[1:]:
        raise DataError(
            f"{val_where}: samples have shape {val.x.shape[1:]}, but the training data's "
            f"have {train.x.shape[1:]}"
        )
    spec = _spec(train, val, class_names, feature_names, image_size, color_mode, cfg)
    return train, val, spec


def _spec(train, val, class_names, feature_names, image_size, color_mode, cfg) -> DataSpec:
    if isinstance(train, Arrays):
        if image_size is not None:
            channels = 3 if color_mode == "rgb" else 1
            input_shape = (*image_size, channels)
        else:
            input_shape = tuple(int(d) for d in train.x.shape[1:])
        target_shape = tuple(int(d) for d in train.y.shape[1:])
        num_classes = None
        if train.y.dtype.kind in "iub" and not target_shape:
            ys = [train.y] + ([val.y] if isinstance(val, Arrays) else [])
            num_classes = max(int(y.max()) for y in ys if y.size) + 1
            if class_names:
                num_classes = max(num_classes, len(class_names))
    else:
        x_spec, y_spec = train.element_spec[:2]
        input_shape = _dims(x_spec.shape[1:])
        target_shape = _dims(y_spec.shape[1:])
        num_classes = None
        if y_spec.dtype.is_integer and target_shape in ((), (1,)):
            num_classes = _dataset_classes(train, val, cfg)
            target_shape = () if num_classes else target_shape
    return DataSpec(
        input_shape=input_shape,
        num_classes=num_classes,
        target_shape=target_shape,
        class_names=class_names,
        feature_names=feature_names,
        image_size=image_size,
        color_mode=color_mode,
    )


def _dims(shape) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def _dataset_classes(train, val, cfg: ExperimentConfig) -> int | None:
    """Integer labels in a factory's datasets are class ids: count them in one pass.

    A dataset of unknown or infinite length is read for ``train.steps_per_epoch``
    batches, or not at all (a builder then gets ``num_classes=None``; set
    ``model.kwargs.num_classes``).
    """
    label_batches: list[np.ndarray] = []
    for dataset in (train, val):
        if isinstance(dataset, Arrays):
            label_batches.append(dataset.y)
            continue
        if dataset is None:
            continue
        if int(dataset.cardinality()) < 0:  # infinite or unknown
            if dataset is val or not cfg.train.steps_per_epoch:
                continue
            dataset = dataset.take(cfg.train.steps_per_epoch)
        label_batches += dataset.map(lambda *parts: parts[1]).as_numpy_iterator()
    labels = [batch for batch in label_batches if batch.size]
    if not labels:
        return None
    lowest = min(int(batch.min()) for batch in labels)
    if lowest < 0:
        raise DataError(
            f"data.factory: integer labels are class ids and must be 0 or more, found {lowest}"
        )
    return max(int(batch.max()) for batch in labels) + 1


# --------------------------------------------------------------------------- files given later


def read_like_run(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Arrays:
    """Features and targets from ``path``, read as the run's own data (``evaluate --data``).

    The run's source reads the file (an .npz with its keys, a CSV with its feature and
    target columns, a folder of class subfolders; for the bundled dataset, an .npz with
    ``x`` and ``y``), and text or folder labels become the run's class ids, by name.
    """
    data, path = cfg.data, Path(path).resolve()
    if isinstance(data, PythonData):
        raise DataError(
            f"--data: this run's data comes from {data.factory}, which has no file format; "
            "omit --data to evaluate on the factory's validation data"
        )
    if not path.exists():
        raise DataError(f"--data: {path} does not exist")
    if isinstance(data, BundledData):
        source = NpzData(source="npz", path=path, batch_size=data.batch_size)
    else:
        update: dict[str, Any] = {"path": path, "validation": None}
        if isinstance(data, CsvData):
            update["features"] = spec.feature_names
        source = data.model_copy(update=update)
    arrays, _, found = read_sources(cfg.model_copy(update={"data": source}))
    where = f"--data: {path.name}"
    if found.input_shape != spec.input_shape:
        raise DataError(
            f"{where}: the model expects input of shape {shape_text(spec.input_shape)}, "
            f"the file has {shape_text(found.input_shape, len(arrays))}"
        )
    arrays.y = _as_run_labels(arrays.y, found.class_names, spec, where)
    return arrays


def _as_run_labels(y: np.ndarray, names: list[str] | None, spec: DataSpec, where: str):
    """Targets re-coded to the run's class ids (a file's ids follow its own label names)."""
    if (names is None) != (spec.class_names is None):
        kind = "text or folder labels" if spec.class_names else "numeric targets"
        raise DataError(f"{where}: the run was trained on {kind}; the file's labels differ")
    if names is not None:
        unknown = [name for name in names if name not in spec.class_names]
        if unknown:
            raise DataError(
                f"{where}: labels {', '.join(unknown)} are not among the run's classes "
                f"({', '.join(spec.class_names)})"
            )
        y = np.array([spec.class_names.index(name) for name in names], dtype="int64")[y]
    if spec.num_classes is not None and y.size and int(y.max()) >= spec.num_classes:
        raise DataError(
            f"{where}: class id {int(y.max())} is out of range; the model has "
            f"{spec.num_classes} classes (0 to {spec.num_classes - 1})"
        )
    if spec.num_classes is None and tuple(y.shape[1:]) != tuple(spec.target_shape):
        raise DataError(
            f"{where}: the model predicts targets of shape {shape_text(spec.target_shape)}, "
            f"the file has {shape_text(y.shape[1:], len(y))}"
        )
    return y


@dataclasses.dataclass
class Features:
    """Model inputs to predict on: numbers, or image file paths (decoded per batch)."""

    x: np.ndarray
    names: list[str] | None = None  # image files, relative to the input folder


def read_features(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Features:
    """Inputs from an .npz, a CSV or a folder of images, checked against the model's input
    (shape, dtype, columns) before anything is predicted (``keepbest predict``)."""
    path = Path(path)
    if path.is_dir():
        return _image_features(spec, path)
    if path.suffix.lower() == ".npz":
        x = _npz_features(path, cfg.data.x_key if isinstance(cfg.data, NpzData) else "x")
    elif path.suffix.lower() == ".csv":
        delimiter = cfg.data.delimiter if isinstance(cfg.data, CsvData) else ","
        x = _csv_features(path, spec.feature_names, delimiter)
    else:
        raise DataError(f"--input: {path.name} is not an .npz, a .csv or a folder of images")
    return Features(check_features(x, spec, f"--input: {path.name}"))


def shape_text(shape: tuple[int, ...], samples: int | None = None) -> str:
    """A batch's shape as people write it: ``(N, 8, 8, 1)``, or ``(500, 64)``."""
    return "(" + ", ".join(["N" if samples is None else str(samples), *map(str, shape)]) + ")"


def check_features(x: np.ndarray, spec: DataSpec, where: str) -> np.ndarray:
    """``x`` as float32 if it holds numbers in the model's input shape, else a DataError
    naming the expected and the given shape."""
    expected = shape_text(spec.input_shape)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: the model takes numbers {expected}; got dtype {x.dtype}")
    if x.ndim == 0 or tuple(x.shape[1:]) != tuple(spec.input_shape):
        given = shape_text(tuple(x.shape[1:]), len(x)) if x.ndim else "a single number"
        same_size = x.ndim and math.prod(x.shape[1:]) == math.prod(spec.input_shape)
        hint = f"; reshape it to {expected}" if same_size else ""
        raise DataError(f"{where}: the model expects input of shape {expected}, got {given}{hint}")
    return x.astype("float32", copy=False)


def _npz_features(path: Path, key: str) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"--input: cannot read {path} as .npz ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded  # a single array saved with numpy.save
    with loaded as npz:
        if key not in npz.files and len(npz.files) != 1:
            raise DataError(
                f"--input: {path.name} has no array {key!r} (the inputs); it holds "
                f"{', '.join(npz.files)}"
            )
        try:
            return npz[key if key in npz.files else npz.files[0]]
        except ValueError as exc:  # object arrays would need pickle, which is unsafe
            raise DataError(f"--input: cannot read {path.name} ({exc})") from None


def _csv_features(path: Path, feature_names: list[str] | None, delimiter: str) -> np.ndarray:
    """The named columns (all columns if the run has no names) of a CSV, as numbers."""
    header, body = _csv_rows(path, delimiter, "--input")
    names = feature_names or header
    missing = [name for name in names if name not in header]
    if missing:
        raise DataError(
            f"--input: {path.name} lacks the column(s) {', '.join(missing)}; the model takes "
            f"{', '.join(names)} (the file has {', '.join(header)})"
        )
    columns = [header.index(name) for name in names]
    x = np.empty((len(body), len(columns)), dtype="float32")
    for i, (line, row) in enumerate(body):
        for j, column in enumerate(columns):
            value = row[column] if column < len(row) else ""
            try:
                x[i, j] = float(value)
            except ValueError:
                raise DataError(
                    f"--input: {path.name} line {line}, column {names[j]!r}: {value!r} is not "
                    "a number"
                ) from None
    return x


def _image_features(spec: DataSpec, folder: Path) -> Features:
    if spec.image_size is None:
        raise DataError(
            f"--input: {folder} is a folder of images, but the model takes arrays of shape "
            f"{shape_text(spec.input_shape)}; give an .npz or a .csv"
        )
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise DataError(f"--input: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    names = [p.relative_to(folder).as_posix() for p in files]
    return Features(np.array([str(p) for p in files]), names)


# --------------------------------------------------------------------------- pipelines


def decode_images(paths, spec: DataSpec):
    """Read, decode, resize and scale a batch of image files to float32 in [0, 1]."""
    import tensorflow as tf

    channels = 3 if spec.color_mode == "rgb" else 1

    def one(path):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        image = tf.image.resize(tf.cast(image, "float32"), spec.image_size)
        return image / 255.0

    return tf.map_fn(one, paths, fn_output_signature=tf.float32)


def _batches(arrays: Arrays, spec: DataSpec, index_batches):
    """Turn a dataset of index batches into (x, y) batches gathered from ``arrays``."""
    import tensorflow as tf

    x, y = tf.constant(arrays.x), tf.constant(arrays.y)

    def gather(index):
        features = tf.gather(x, index)
        if spec.image_size is not None:
            features = decode_images(features, spec)
        return features, tf.gather(y, index)

    return index_batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _fixed_order(arrays: Arrays, spec: DataSpec, batch_size: int):
    import tensorflow as tf

    index = tf.data.Dataset.range(len(arrays)).batch(batch_size)
    return _batches(arrays, spec, index).prefetch(tf.data.AUTOTUNE)


def in_order(arrays: Arrays, spec: DataSpec, batch_size: int):
    """``arrays`` as (x, y) batches in their order (images decoded), for ``evaluate``."""
    return _fixed_order(arrays, spec, batch_size)


def _shuffled_stream(arrays: Arrays, spec: DataSpec, cfg: ExperimentConfig, start_batch: int):
    import tensorflow as tf

    size, batch_size = len(arrays), cfg.data.batch_size
    per_epoch = math.ceil(size / batch_size)
    first_epoch, offset = divmod(start_batch, per_epoch)
    shuffle, seed = cfg.data.shuffle, cfg.seed

    def epoch_batches(epoch):
        order = tf.range(size, dtype=tf.int64)
        if shuffle:
            seeds = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=seeds)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, _EPOCH_LIMIT)
    index = epochs.flat_map(epoch_batches).skip(offset)
    return _batches(arrays, spec, index).prefetch(tf.data.AUTOTUNE)


def _dataset_steps(dataset, cfg: ExperimentConfig) -> int:
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    cardinality = int(dataset.cardinality())
    if cardinality < 0:  # infinite or unknown
        raise DataError(
            "train.steps_per_epoch: the factory's training dataset has no known length; "
            "set train.steps_per_epoch"
        )
    if cardinality == 0:
        raise DataError(f"data.factory: {cfg.data.factory}'s training dataset is empty")
    return cardinality


def _check_validation(val, cfg: ExperimentConfig) -> None:
    """A factory's validation data must exist if monitored, and end (or fit never does)."""
    import tensorflow as tf

    monitor = cfg.checkpoint.monitor
    if val is None and monitor.startswith("val_"):
        raise DataError(
            f"checkpoint.monitor: {monitor!r} needs validation data, but "
            f"{cfg.data.factory} returned None for it; return (train, validation) "
            f"or monitor {monitor[4:]!r}"
        )
    if isinstance(val, tf.data.Dataset) and val.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError(
            f"data.factory: {cfg.data.factory}'s validation dataset repeats forever, so "
            "validation would never end; remove its .repeat()"
        )


def load_pipelines(cfg: ExperimentConfig) -> Pipelines:
    """Read the data and build the pipelines (``DataError`` on any data problem)."""
    train, val, spec = read_sources(cfg)
    batch_size = cfg.data.batch_size
    with reported_against(cfg):
        if isinstance(train, Arrays):
            steps = cfg.train.steps_per_epoch or math.ceil(len(train) / batch_size)

            def train_stream(start_batch: int):
                return _shuffled_stream(train, spec, cfg, start_batch)

            train_eval = _fixed_order(train, spec, batch_size)
            num_train = len(train)
        else:
            steps = _dataset_steps(train, cfg)

            def train_stream(start_batch: int):
                return train.repeat().skip(start_batch)

            train_eval, num_train = train.take(steps), None
        if isinstance(cfg.data, PythonData):
            _check_validation(val, cfg)
    validation = _fixed_order(val, spec, batch_size) if isinstance(val, Arrays) else val
    return Pipelines(
        spec=spec,
        steps_per_epoch=steps,
        train_stream=train_stream,
        train_eval=train_eval,
        validation=validation,
        num_train=num_train,
        num_validation=len(val) if isinstance(val, Arrays) else None,
    )
