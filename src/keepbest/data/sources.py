"""Data sources: each ``data.source`` is one class that reads its training data and, in
the same format, the files a user gives later (``evaluate --data``, ``predict --input``).

Adding a source is its config section (``keepbest.config.schema``) plus one ``Source``
subclass here, registered in ``SOURCES`` under its ``source`` name. ``read_sources`` is
what training calls: it reads the configured source, splits off validation data, and
derives the ``DataSpec``. A ``python`` factory may return tf.data.Datasets instead of
arrays; those are used as given (already batched). Every problem is a ``DataError`` that
names the config key (or command-line option) to fix. TensorFlow is imported only for a
factory's datasets.

Example:

    >>> from keepbest.config import load_config
    >>> from keepbest.data.sources import read_sources
    >>> train, val, spec = read_sources(load_config("configs/quickstart.yaml"))
    >>> len(train), len(val), spec.input_shape, spec.num_classes
    (1438, 359, (8, 8, 1), 10)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.references import (
    call_with_supported_kwargs,
    describe_exception,
    did_you_mean,
    resolve_reference,
)
from keepbest.config.schema import CsvData, NpzData
from keepbest.data.files import (
    IMAGE_SUFFIXES,
    class_folders,
    image_files,
    numeric_columns,
    read_csv_table,
    read_npz,
    target_column,
)
from keepbest.data.labels import (
    as_features,
    as_run_labels,
    check_features,
    finish_targets,
    typed_csv_targets,
)
from keepbest.data.spec import Arrays, DataSpec, Features, shape_text
from keepbest.errors import DataError, InputError

VALIDATION_PATH = "data.validation.path"


@dataclasses.dataclass
class Loaded:
    """A source's training data as read, before the validation split."""

    train: Any  # Arrays, or a factory's tf.data.Dataset
    validation: Any | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    image_size: tuple[int, int] | None = None
    color_mode: str | None = None
    validation_where: str = VALIDATION_PATH


class Source:
    """One kind of ``data.source``. Subclasses implement ``read``; the file readers for
    ``evaluate --data`` and ``predict --input`` have defaults that fit most sources."""

    name: ClassVar[str]
    input_key: ClassVar[str] = "x"  # the array an .npz given to predict holds the inputs in
    delimiter: ClassVar[str] = ","  # of a CSV given to predict

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.settings = cfg.data

    def read(self) -> Loaded:
        """The configured training (and validation) data."""
        raise NotImplementedError

    def file_settings(self, path: Path, spec: DataSpec):
        """The ``data`` settings that read ``path`` as this run's data, without validation
        (``evaluate --data``); ``DataError`` if the source has no file format."""
        return self.settings.model_copy(update={"path": path, "validation": None})

    def read_labeled_file(self, path: Path, spec: DataSpec) -> Arrays:
        """Features and targets from ``path``, read as the run's own data, labels mapped to
        the run's class ids by name (``evaluate --data``)."""
        settings = self.file_settings(path, spec)
        if not path.exists():
            raise DataError(f"--data: {path} does not exist")
        arrays, _, found = read_sources(self.cfg.model_copy(update={"data": settings}))
        where = f"--data: {path.name}"
        if found.input_shape != spec.input_shape:
            raise DataError(
                f"{where}: the model expects input of shape {shape_text(spec.input_shape)}, "
                f"the file has {shape_text(found.input_shape, len(arrays))}"
            )
        arrays.y = as_run_labels(arrays.y, found.class_names, spec, where)
        return arrays

    def read_inputs(self, path: Path, spec: DataSpec) -> Features:
        """Model inputs from an .npz, a CSV or a folder of images, checked against the
        model's input (shape, dtype, columns) before anything is predicted."""
        if path.is_dir():
            return _image_inputs(spec, path)
        where = "--input"
        if path.suffix.lower() == ".npz":
            (x,) = read_npz(path, [self.input_key], where)
        elif path.suffix.lower() == ".csv":
            header, body = read_csv_table(path, self.delimiter, where)
            names = spec.feature_names or header
            missing = [name for name in names if name not in header]
            if missing:
                raise DataError(
                    f"{where}: {path.name} lacks the column(s) {', '.join(missing)}; the model "
                    f"takes {', '.join(names)} (the file has {', '.join(header)})"
                )
            x = numeric_columns(path, header, body, names, where)
        else:
            raise DataError(f"{where}: {path.name} is not an .npz, a .csv or a folder of images")
        return Features(check_features(x, spec, f"{where}: {path.name}"))


class DigitsSource(Source):
    """The bundled 8x8 digits (UCI, CC BY 4.0): pixels 0..16 scaled to [0, 1], one channel."""

    name = "digits"

    def read(self) -> Loaded:
        resource = importlib.resources.files("keepbest.datasets") / "digits.npz"
        with resource.open("rb") as handle, np.load(handle) as npz:
            x = (npz["x"].astype("float32") / 16.0)[..., None]
            return Loaded(Arrays(x, npz["y"].astype("int64")))

    def file_settings(self, path: Path, spec: DataSpec):
        return NpzData(source="npz", path=path, batch_size=self.settings.batch_size)


class NpzSource(Source):
    """Arrays ``x_key`` and ``y_key`` of an .npz archive (and of a validation archive)."""

    name = "npz"

    @property
    def input_key(self) -> str:  # type: ignore[override]
        return self.settings.x_key

    def _read(self, path: Path, where: str) -> Arrays:
        keys = [self.settings.x_key, self.settings.y_key]
        x, y = read_npz(path, keys, where, settings=["data.x_key", "data.y_key"])
        if len(x) != len(y):
            raise DataError(f"{where}: {keys[0]} has {len(x)} rows but {keys[1]} has {len(y)}")
        return Arrays(as_features(x, where), y)

    def read(self) -> Loaded:
        data = self.settings
        train = self._read(data.path, "data.path")
        val_path = data.validation.path if data.validation else None
        val = self._read(val_path, VALIDATION_PATH) if val_path else None
        class_names = finish_targets(train, val, f"data.y_key: {data.y_key!r}")
        return Loaded(train, val, class_names)


class CsvSource(Source):
    """Numeric feature columns and a target column of a CSV file with a header row."""

    name = "csv"

    @property
    def delimiter(self) -> str:  # type: ignore[override]
        return self.settings.delimiter

    def _read(self, path: Path, where: str) -> tuple[Arrays, list[str]]:
        """Numeric feature columns plus the target column as text (typed later, jointly
        with the validation file's)."""
        data: CsvData = self.settings
        header, body = read_csv_table(path, data.delimiter, where)
        if data.target not in header:
            raise DataError(
                f"data.target: column {data.target!r} is not in {path.name}; its columns are "
                f"{', '.join(header)}{did_you_mean(data.target, header)}"
            )
        features = data.features or [c for c in header if c != data.target]
        for name in features:
            if name == data.target:
                raise DataError(f"data.features: {name!r} is the target; it cannot be a feature")
            if name not in header:
                raise DataError(
                    f"data.features: column {name!r} is not in {path.name}; its columns are "
                    f"{', '.join(header)}{did_you_mean(name, header)}"
                )
        hint = " (list numeric columns in data.features)"
        x = numeric_columns(path, header, body, features, where, hint)
        return Arrays(x, target_column(path, header, body, data.target, where)), features

    def read(self) -> Loaded:
        data = self.settings
        train, feature_names = self._read(data.path, "data.path")
        val_path = data.validation.path if data.validation else None
        val = self._read(val_path, VALIDATION_PATH)[0] if val_path else None
        typed = typed_csv_targets(train.y, *([] if val is None else [val.y]))
        train.y = typed[0]
        if val is not None:
            val.y = typed[1]
        class_names = finish_targets(train, val, f"data.target: {data.target!r}")
        return Loaded(train, val, class_names, feature_names)

    def file_settings(self, path: Path, spec: DataSpec):
        return self.settings.model_copy(
            update={"path": path, "validation": None, "features": spec.feature_names}
        )


class ImageDirSource(Source):
    """One subfolder of images per class; images stay file paths until a batch decodes
    them (``keepbest.data.pipelines.decode_images``)."""

    name = "image_dir"

    def _read(self, folder: Path, where: str, class_names: list[str] | None = None):
        """Image paths and labels from one subfolder per class (``class_names`` from
        training: a validation folder may lack a class, but not add one)."""
        found = class_folders(folder)
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
            files = image_files(folder / name)
            if not files and class_names is None:
                raise DataError(
                    f"{where}: class folder {name!r} has no images ({', '.join(IMAGE_SUFFIXES)})"
                )
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        if not paths:
            raise DataError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
        return Arrays(np.array(paths), np.array(labels, dtype="int64")), classes

    def read(self) -> Loaded:
        data = self.settings
        train, class_names = self._read(data.path, "data.path")
        val_path = data.validation.path if data.validation else None
        val = self._read(val_path, VALIDATION_PATH, class_names)[0] if val_path else None
        size = tuple(data.image_size)
        return Loaded(train, val, class_names, image_size=size, color_mode=data.color_mode)


_FACTORY_RETURNS = (
    "(train, validation), each an (x, y) tuple of arrays or a batched tf.data.Dataset "
    "(validation may be None)"
)


class PythonSource(Source):
    """A ``module:function`` factory returning ``(train, validation)``: arrays, or
    batched tf.data.Datasets used as given."""

    name = "python"

    def read(self) -> Loaded:
        data = self.settings
        factory = resolve_reference(data.factory, "data.factory", self.cfg.base_dir)
        try:
            result = call_with_supported_kwargs(factory, data.kwargs, {}, "data.kwargs")
        except InputError:
            raise
        except Exception as exc:
            raise DataError(
                f"data.factory: {data.factory} failed: {describe_exception(exc)}"
            ) from None
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            got = type(result).__name__
            if isinstance(result, (tuple, list)):
                got += f" of {len(result)}"
            raise DataError(
                f"data.factory: {data.factory} must return {_FACTORY_RETURNS}; got {got}"
            )
        train, val = self._part(result[0], 0), self._part(result[1], 1)
        arrays = [p for p in (train, val) if isinstance(p, Arrays)]
        class_names = None
        if arrays:
            second = arrays[1] if len(arrays) > 1 else None
            class_names = finish_targets(arrays[0], second, "data.factory")
        where = f"data.factory: {data.factory}'s validation data"
        return Loaded(train, val, class_names, validation_where=where)

    def _part(self, part: Any, index: int) -> Any:
        factory = self.settings.factory
        which = ("train", "validation")[index]
        where = f"data.factory: {factory}'s {which} data"
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
            return Arrays(as_features(x, where), y)
        import tensorflow as tf

        if isinstance(part, tf.data.Dataset):
            _check_dataset(part, where)
            return part
        raise DataError(
            f"data.factory: {factory} must return {_FACTORY_RETURNS}; its {which} "
            f"is a {type(part).__name__}"
        )

    def file_settings(self, path: Path, spec: DataSpec):
        raise DataError(
            f"--data: this run's data comes from {self.settings.factory}, which has no file "
            "format; omit --data to evaluate on the factory's validation data"
        )


SOURCES: dict[str, type[Source]] = {
    cls.name: cls for cls in (DigitsSource, NpzSource, CsvSource, ImageDirSource, PythonSource)
}


def source_for(cfg: ExperimentConfig) -> Source:
    """The ``Source`` that reads ``cfg.data``."""
    return SOURCES[cfg.data.source](cfg)


def read_sources(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """Read the configured data into (train, validation, spec), raising ``DataError``."""
    with reported_against(cfg):
        loaded = source_for(cfg).read()
        train, val = loaded.train, loaded.validation
        validation = cfg.data.validation
        if validation is not None and validation.split is not None:
            train, val = _split(train, validation.split, cfg.seed)
        same_kind = (
            isinstance(train, Arrays) and isinstance(val, Arrays) and loaded.image_size is None
        )
        if same_kind and train.x.shape[1:] != val.x.shape[1:]:
            raise DataError(
                f"{loaded.validation_where}: samples have shape {val.x.shape[1:]}, but the "
                f"training data's have {train.x.shape[1:]}"
            )
        return train, val, _spec(train, val, loaded, cfg)


def read_like_run(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Arrays:
    """Features and targets from ``path``, read as the run's own data (``evaluate --data``)."""
    return source_for(cfg).read_labeled_file(Path(path).resolve(), spec)


def read_features(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Features:
    """Inputs from an .npz, a CSV or a folder of images (``keepbest predict``)."""
    return source_for(cfg).read_inputs(Path(path), spec)


def _split(arrays: Arrays, fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    order = np.random.default_rng(seed).permutation(len(arrays))
    count = max(1, round(len(arrays) * fraction))
    if count >= len(arrays):
        raise DataError(
            f"data.validation.split: {fraction} leaves no training data out of "
            f"{len(arrays)} samples; use a smaller fraction"
        )
    return arrays.take(np.sort(order[count:])), arrays.take(np.sort(order[:count]))


def _image_inputs(spec: DataSpec, folder: Path) -> Features:
    if spec.image_size is None:
        raise DataError(
            f"--input: {folder} is a folder of images, but the model takes arrays of shape "
            f"{shape_text(spec.input_shape)}; give an .npz or a .csv"
        )
    files = image_files(folder)
    if not files:
        raise DataError(f"--input: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    names = [p.relative_to(folder).as_posix() for p in files]
    return Features(np.array([str(p) for p in files]), names)


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


def _spec(train, val, loaded: Loaded, cfg: ExperimentConfig) -> DataSpec:
    class_names, image_size, color_mode = loaded.class_names, loaded.image_size, loaded.color_mode
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
        feature_names=loaded.feature_names,
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
