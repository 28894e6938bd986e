"""Data sources become tf.data pipelines whose order depends only on (seed, epoch).

Every source is first read into arrays (images stay file paths, decoded per batch), then
served by ``Pipelines``:

- ``train_stream(start_batch)``: the training batches from global batch ``start_batch``
  on, epoch after epoch. Epoch ``e`` is shuffled with the stateless seed ``(seed, e)``, so
  the order never depends on how many iterators a process made before, which is what
  makes resuming bit-exact.
- ``validation`` and ``train_eval``: fixed-order passes for the end-of-epoch evaluation.

A ``python`` factory may return tf.data.Datasets instead of arrays; those are used as
given (already batched), and their order is the factory's business.

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
)
from keepbest.errors import DataError
from keepbest.references import call_with_supported_kwargs, resolve_reference

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
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in (x_key, y_key) if key not in npz.files]
            if missing:
                raise DataError(
                    f"{where}: {path.name} has no array {missing[0]!r}; it holds "
                    f"{', '.join(npz.files)} (set data.x_key / data.y_key)"
                )
            x, y = npz[x_key], npz[y_key]
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: cannot read {path} as .npz ({exc})") from None
    if len(x) != len(y):
        raise DataError(f"{where}: {x_key} has {len(x)} rows but {y_key} has {len(y)}")
    return Arrays(_as_features(x), y)


def _as_features(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise ValueError(f"features must be numeric, got dtype {x.dtype}")
    return x.astype("float32") if x.dtype != np.float32 else x


def _read_csv(cfg: CsvData, path: Path, where: str) -> tuple[Arrays, list[str], np.ndarray]:
    """Numeric feature columns plus a raw target column (encoded later, with validation)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter=cfg.delimiter))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read {path} ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if cfg.target not in header:
        raise DataError(
            f"data.target: column {cfg.target!r} is not in {path.name}; "
            f"columns: {', '.join(header)}"
        )
    features = cfg.features or [c for c in header if c != cfg.target]
    unknown = [c for c in features if c not in header]
    if unknown:
        raise DataError(f"data.features: column {unknown[0]!r} is not in {path.name}")
    columns = [header.index(c) for c in features]
    target_col = header.index(cfg.target)
    x = np.empty((len(body), len(columns)), dtype="float32")
    for row_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{where}: {path.name} line {row_number} has {len(row)} fields, "
                f"the header has {len(header)}"
            )
        for j, col in enumerate(columns):
            try:
                x[row_number - 2, j] = float(row[col])
            except ValueError:
                raise DataError(
                    f"{where}: {path.name} line {row_number}, column {features[j]!r}: "
                    f"{row[col]!r} is not a number (list numeric columns in data.features)"
                ) from None
    targets = np.array([row[target_col] for row in body])
    return Arrays(x, targets), features, targets


def _encode_targets(*columns: np.ndarray) -> tuple[list[np.ndarray], list[str] | None]:
    """CSV targets: numbers stay numbers (integers are class ids); text becomes class ids."""
    try:
        numeric = [col.astype("float64") for col in columns]
    except ValueError:
        names = sorted(set(np.concatenate(columns).tolist()))
        lookup = {name: i for i, name in enumerate(names)}
        return [np.array([lookup[v] for v in col], dtype="int64") for col in columns], names
    if all(np.all(col == np.round(col)) for col in numeric):
        return [col.astype("int64") for col in numeric], None
    return [col.astype("float32") for col in numeric], None


def _read_image_dir(folder: Path, where: str, class_names: list[str] | None = None):
    classes = class_names or sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{where}: {folder} has no class subfolders (expected one per class)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        sub = folder / name
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return Arrays(np.array(paths), np.array(labels, dtype="int64")), classes


def _from_factory(cfg: PythonData, search_dir: Path) -> tuple[Any, Any]:
    factory = resolve_reference(cfg.factory, "data.factory", search_dir)
    result = call_with_supported_kwargs(factory, cfg.kwargs, {}, "data.kwargs")
    if not (isinstance(result, tuple) and len(result) == 2):
        raise DataError(
            f"data.factory: {cfg.factory} must return (train, validation), "
            f"got {type(result).__name__}"
        )
    return tuple(_factory_part(part, i) for i, part in enumerate(result))


def _factory_part(part: Any, index: int) -> Any:
    if part is None and index == 1:
        return None
    if isinstance(part, tuple) and len(part) == 2:
        x, y = np.asarray(part[0]), np.asarray(part[1])
        if len(x) != len(y):
            raise DataError(f"data.factory: x has {len(x)} rows but y has {len(y)}")
        return Arrays(_as_features(x), y)
    import tensorflow as tf

    if isinstance(part, tf.data.Dataset):
        return part
    which = ("train", "validation")[index]
    raise DataError(
        f"data.factory: {which} must be an (x, y) tuple of arrays or a tf.data.Dataset, "
        f"got {type(part).__name__}"
    )


def read_sources(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """Read the configured data into (train, validation, spec), raising ``DataError``."""
    data = cfg.data
    validation = data.validation
    val_path = validation.path if validation else None
    class_names = feature_names = None
    image_size = color_mode = None
    if isinstance(data, BundledData):
        train, val = _read_digits(), None
    elif isinstance(data, NpzData):
        train = _read_npz(data.path, data.x_key, data.y_key, "data.path")
        val = (
            _read_npz(val_path, data.x_key, data.y_key, "data.validation.path")
            if val_path
            else None
        )
    elif isinstance(data, CsvData):
        train, feature_names, raw_y = _read_csv(data, data.path, "data.path")
        val, raw_val = None, None
        if val_path:
            val, _, raw_val = _read_csv(data, val_path, "data.validation.path")
        encoded, class_names = _encode_targets(raw_y, *([raw_val] if val is not None else []))
        train.y = encoded[0]
        if val is not None:
            val.y = encoded[1]
    elif isinstance(data, ImageDirData):
        train, class_names = _read_image_dir(data.path, "data.path")
        val = (
            _read_image_dir(val_path, "data.validation.path", class_names)[0] if val_path else None
        )
        image_size, color_mode = tuple(data.image_size), data.color_mode
    else:
        train, val = _from_factory(data, cfg.base_dir)
    if validation is not None and validation.split is not None:
        train, val = _split(train, validation.split, cfg.seed)
    spec = _spec(train, val, class_names, feature_names, image_size, color_mode)
    return train, val, spec


def _spec(train, val, class_names, feature_names, image_size, color_mode) -> DataSpec:
    if isinstance(train, Arrays):
        if image_size is not None:
            channels = 3 if color_mode == "rgb" else 1
            input_shape = (*image_size, channels)
        else:
            input_shape = tuple(int(d) for d in train.x.shape[1:])
        ys = [train.y] + ([val.y] if isinstance(val, Arrays) else [])
        target_shape = tuple(int(d) for d in train.y.shape[1:])
        num_classes = None
        if train.y.dtype.kind in "iub" and not target_shape:
            num_classes = int(max(int(y.max()) for y in ys)) + 1
            if class_names:
                num_classes = max(num_classes, len(class_names))
    else:
        x_spec, y_spec = train.element_spec[:2]
        input_shape = tuple(int(d) for d in x_spec.shape[1:])
        target_shape = tuple(int(d) for d in y_spec.shape[1:])
        num_classes = None
    return DataSpec(
        input_shape=input_shape,
        num_classes=num_classes,
        target_shape=target_shape,
        class_names=class_names,
        feature_names=feature_names,
        image_size=image_size,
        color_mode=color_mode,
    )


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
    import tensorflow as tf

    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    cardinality = int(dataset.cardinality())
    if cardinality in (tf.data.INFINITE_CARDINALITY, tf.data.UNKNOWN_CARDINALITY):
        raise DataError(
            "train.steps_per_epoch: the factory's training dataset has no known length; "
            "set train.steps_per_epoch"
        )
    return cardinality


def load_pipelines(cfg: ExperimentConfig) -> Pipelines:
    """Read the data and build the pipelines (``DataError`` on any data problem)."""
    train, val, spec = read_sources(cfg)
    batch_size = cfg.data.batch_size
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
