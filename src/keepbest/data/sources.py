"""Data sources: each ``data.source`` is one class that reads its training data and, in
the same format, the files a user gives later (``evaluate --data``, ``predict --input``).

Adding a source is its config section (``keepbest.config.schema``) plus one ``Source``
subclass here, registered in ``SOURCES`` under its ``source`` name. A source reads its
files' raw values and declares, once, the preprocessing that makes them the model's
inputs (``Source.preprocessing``: stock Keras layers that the training pipeline runs and
that ``load_best`` and ``export`` put in front of the model, see
``keepbest.data.preprocessing``). ``read_sources`` is what training calls: it reads the
configured source, splits off validation data, and derives the ``DataSpec``. A
``python`` factory may return tf.data.Datasets instead of arrays; those are used as given
(already batched). Sample weights (``Arrays.w``) come from an .npz's ``weight_key``, a
CSV's ``weight_column`` or a factory's ``(x, y, w)``, in the validation data alike, and
are checked by ``keepbest.data.weights``. Every problem is a ``DataError`` that names the
config key (or command-line option) to fix. TensorFlow is imported only for a factory's
datasets.

Example:

    >>> from keepbest.config import load_config
    >>> from keepbest.data.sources import read_sources
    >>> train, val, spec = read_sources(load_config("configs/quickstart.yaml"))
    >>> len(train), len(val), spec.raw_shape, spec.input_shape, spec.num_classes
    (1438, 359, (8, 8), (8, 8, 1), 10)
    >>> spec.raw_range, spec.preprocessing.describe()
    ((0.0, 16.0), 'x * 0.0625, then add a channel axis')
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.references import (
    call_with_supported_kwargs,
    describe_exception,
    did_you_mean,
)
from keepbest.config.schema import CsvData, NpyData, NpzData, ParquetData, folder_files
from keepbest.data.files import (
    IMAGE_SUFFIXES,
    check_image_files,
    class_folders,
    csv_header,
    image_files,
    npz_names,
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
from keepbest.data.preprocessing import Preprocessing
from keepbest.data.rows import (
    ItemRows,
    NpyArray,
    NpyRows,
    ParquetRows,
    Rows,
    SubsetRows,
    is_random_access,
)
from keepbest.data.spec import Arrays, DataSpec, Features, shape_fits, shape_text
from keepbest.data.weights import sample_weights
from keepbest.errors import DataError, InputError

log = logging.getLogger(__name__)

VALIDATION_PATH = "data.validation.path"
# A factory's random-access source is read whole for its class ids only up to this size.
ITEM_LABEL_SCAN = 65536


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
    raw_dtype: str | None = None  # the training file's inputs, before they became float32


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
        """The configured training (and validation) data, as the files hold it."""
        raise NotImplementedError

    def preprocessing(self) -> Preprocessing:
        """What turns the raw values ``read`` returns into the model's inputs (default:
        nothing, the files hold the model's inputs)."""
        return Preprocessing()

    def file_settings(self, path: Path, spec: DataSpec):
        """The ``data`` settings that read ``path`` as this run's data, without validation
        (``evaluate --data``); ``DataError`` if the source has no file format."""
        return self.settings.model_copy(update={"path": path, "validation": None})

    def read_labeled_file(self, path: Path, spec: DataSpec) -> Arrays:
        """Features and targets from ``path``, read as the run's own data, labels mapped to
        the run's class ids by name (``evaluate --data``)."""
        if not path.exists():
            raise DataError(f"--data: {path} does not exist")
        settings = self.file_settings(path, spec)
        arrays, _, found = read_sources(self.cfg.model_copy(update={"data": settings}))
        where = f"--data: {path.name}"
        if isinstance(arrays, Rows):  # measured in memory: a file to evaluate, read whole
            whole = arrays.read(np.arange(len(arrays)))
            arrays = Arrays(as_features(whole.x, where), whole.y, whole.w)
        if not shape_fits(found.raw_shape, spec.raw_shape):
            raise DataError(
                f"{where}: the model expects input of shape {shape_text(spec.raw_shape)}, "
                f"the file has {shape_text(found.raw_shape, len(arrays))}"
            )
        arrays.y = as_run_labels(arrays.y, found.class_names, spec, where)
        return arrays

    def read_inputs(self, path: Path, spec: DataSpec) -> Features:
        """Model inputs from an .npz, a CSV or a folder of images, checked against the
        model's input (shape, dtype, columns) before anything is predicted."""
        if path.is_dir():
            return _image_inputs(spec, path)
        where = "--input"
        suffix = path.suffix.lower()
        if suffix == ".npz":
            (x,) = read_npz(path, [self.input_key], where)
        elif suffix == ".npy":
            array = NpyArray([path], where)
            x = array.read(np.arange(len(array)))
        elif suffix == ".parquet":
            x = _parquet_inputs(path, spec, where)
        elif suffix == ".csv":
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
            raise DataError(
                f"{where}: {path.name} is not an .npz, .npy, .csv or .parquet file or a folder "
                "of images"
            )
        return Features(check_features(x, spec, f"{where}: {path.name}"))


class DigitsSource(Source):
    """The bundled 8x8 digits (UCI, CC BY 4.0): pixels 0..16 (uint8, shape (n, 8, 8)),
    scaled to [0, 1] and given a channel axis by the preprocessing."""

    name = "digits"

    def read(self) -> Loaded:
        resource = importlib.resources.files("keepbest.datasets") / "digits.npz"
        with resource.open("rb") as handle, np.load(handle) as npz:
            x = npz["x"]
            arrays = Arrays(as_features(x, "data.source: digits"), npz["y"].astype("int64"))
            return Loaded(arrays, raw_dtype=str(x.dtype))

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(scale=1 / 16, add_channel=True)

    def file_settings(self, path: Path, spec: DataSpec):
        return NpzData(source="npz", path=path, batch_size=self.settings.batch_size)


class NpzSource(Source):
    """Arrays ``x_key`` and ``y_key`` of an .npz archive (and of a validation archive),
    and ``weight_key``'s sample weights if set."""

    name = "npz"

    @property
    def input_key(self) -> str:  # type: ignore[override]
        return self.settings.x_key

    def _read(self, path: Path, where: str) -> tuple[Arrays, str]:
        data = self.settings
        keys, settings = [data.x_key, data.y_key], ["data.x_key", "data.y_key"]
        if data.weight_key is not None:
            keys.append(data.weight_key)
            settings.append("data.weight_key")
        x, y, *weights = read_npz(path, keys, where, settings=settings)
        if len(x) != len(y):
            raise DataError(f"{where}: {keys[0]} has {len(x)} rows but {keys[1]} has {len(y)}")
        w = None
        if weights:
            w = sample_weights(weights[0], len(y), f"data.weight_key: {keys[2]!r} of {path.name}")
        return Arrays(as_features(x, where), y, w), str(x.dtype)

    def file_settings(self, path: Path, spec: DataSpec):
        settings = super().file_settings(path, spec)
        key = settings.weight_key
        if key is not None and key not in npz_names(path, "--data"):
            return _unweighted(settings, "weight_key", f"{path.name} has no array {key!r}")
        return settings

    def read(self) -> Loaded:
        data = self.settings
        train, dtype = self._read(data.path, "data.path")
        val_path = data.validation.path if data.validation else None
        val = self._read(val_path, VALIDATION_PATH)[0] if val_path else None
        class_names = finish_targets(train, val, f"data.y_key: {data.y_key!r}")
        return Loaded(train, val, class_names, raw_dtype=dtype)


class NpySource(Source):
    """Arrays in ``.npy`` files (shards, glob patterns), read a batch at a time by row
    index (``keepbest.data.rows.NpyRows``): the data never sits in memory whole."""

    name = "npy"

    def read(self) -> Loaded:
        data: NpyData = self.settings
        train = NpyRows(data.x, data.y, data.weights, "data")
        val = None
        validation = data.validation
        if validation is not None and validation.x is not None:
            val = NpyRows(validation.x, validation.y, validation.weights, "data.validation")
        return Loaded(train, val, raw_dtype=str(train.x_dtype), validation_where="data.validation")

    def file_settings(self, path: Path, spec: DataSpec):
        """A folder holding ``x.npy`` and ``y.npy`` (``weights.npy`` if the run has
        weights), or an .npz with arrays ``x`` and ``y``."""
        if path.suffix.lower() == ".npz":
            return plain_npz(path, self.settings.batch_size)
        if not path.is_dir():
            raise DataError(
                f"--data: {path.name}: an npy run is evaluated on a folder holding x.npy and "
                "y.npy, or on an .npz with arrays x and y"
            )
        files = {name: path / f"{name}.npy" for name in ("x", "y", "weights")}
        for name in ("x", "y"):
            if not files[name].is_file():
                raise DataError(f"--data: {path} has no {name}.npy (it needs x.npy and y.npy)")
        weights = [files["weights"]] if files["weights"].is_file() else None
        return self.settings.model_copy(
            update={"x": [files["x"]], "y": [files["y"]], "weights": weights, "validation": None}
        )


class ParquetSource(Source):
    """Columns of Parquet files read a row group at a time
    (``keepbest.data.rows.ParquetRows``), as the CSV source reads its columns."""

    name = "parquet"

    def read(self) -> Loaded:
        data: ParquetData = self.settings
        train = ParquetRows(data.path, data.target, data.features, data.weight_column, "data.path")
        val = None
        validation = data.validation
        if validation is not None and validation.path is not None:
            val = ParquetRows(
                validation.path, data.target, train.features, data.weight_column, VALIDATION_PATH
            )
            if (val.class_names is None) != (train.class_names is None):
                raise DataError(
                    f"{VALIDATION_PATH}: its target column {data.target!r} holds "
                    f"{val.y_dtype if val.class_names is None else 'text'}, the training "
                    "files' holds "
                    f"{train.y_dtype if train.class_names is None else 'text'}"
                )
            if val.class_names is not None:
                extra = sorted(set(val.class_names) - set(train.class_names))
                if extra:
                    raise DataError(
                        f"{VALIDATION_PATH}: labels {', '.join(extra[:5])} are not in the "
                        "training files"
                    )
                val.class_names = train.class_names
        return Loaded(train, val, train.class_names, list(train.features), raw_dtype="float32")

    def file_settings(self, path: Path, spec: DataSpec):
        if path.suffix.lower() != ".parquet" and not path.is_dir():
            raise DataError(
                f"--data: {path.name}: this run's data is Parquet; give a .parquet file or "
                "a folder of them"
            )
        settings = self.settings.model_copy(
            update={"path": [path], "validation": None, "features": spec.feature_names}
        )
        if path.is_dir():
            found = folder_files(path, ".parquet")
            if not found:
                raise DataError(f"--data: {path} holds no .parquet file")
            settings = settings.model_copy(update={"path": found})
        column = settings.weight_column
        if column is not None:
            import pyarrow.parquet as pq

            names = pq.ParquetFile(settings.path[0]).schema_arrow.names
            if column not in names:
                return _unweighted(
                    settings, "weight_column", f"{path.name} has no column {column!r}"
                )
        return settings


class CsvSource(Source):
    """Numeric feature columns and a target column of a CSV file with a header row."""

    name = "csv"

    @property
    def delimiter(self) -> str:  # type: ignore[override]
        return self.settings.delimiter

    def _read(self, path: Path, where: str) -> tuple[Arrays, list[str]]:
        """Numeric feature columns plus the target column as text (typed later, jointly
        with the validation file's), and the weight column's sample weights if set."""
        data: CsvData = self.settings
        header, body = read_csv_table(path, data.delimiter, where)
        for key, column in (("target", data.target), ("weight_column", data.weight_column)):
            if column is not None and column not in header:
                raise DataError(
                    f"data.{key}: column {column!r} is not in {path.name}; its columns are "
                    f"{', '.join(header)}{did_you_mean(column, header)}"
                )
        features = data.features or [
            c for c in header if c not in (data.target, data.weight_column)
        ]
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
        y = target_column(path, header, body, data.target, where)
        w = None
        if data.weight_column is not None:
            hint = " (data.weight_column: the sample weights are numbers)"
            weights = numeric_columns(path, header, body, [data.weight_column], where, hint)
            name = f"data.weight_column: {data.weight_column!r} of {path.name}"
            w = sample_weights(weights[:, 0], len(y), name)
        return Arrays(x, y, w), features

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
        return Loaded(train, val, class_names, feature_names, raw_dtype="float32")

    def file_settings(self, path: Path, spec: DataSpec):
        settings = self.settings.model_copy(
            update={"path": path, "validation": None, "features": spec.feature_names}
        )
        column = settings.weight_column
        if column is not None and column not in csv_header(path, settings.delimiter, "--data"):
            return _unweighted(settings, "weight_column", f"{path.name} has no column {column!r}")
        return settings


class ImageDirSource(Source):
    """One subfolder of images per class; images stay file paths until a batch decodes
    them (``keepbest.data.pipelines.decode_images``). The raw input is a decoded image
    (uint8, any height and width); the preprocessing resizes it to ``image_size`` and
    scales it to [0, 1]."""

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
        check_image_files(paths, where)
        return Arrays(np.array(paths), np.array(labels, dtype="int64")), classes

    def read(self) -> Loaded:
        data = self.settings
        train, class_names = self._read(data.path, "data.path")
        val_path = data.validation.path if data.validation else None
        val = self._read(val_path, VALIDATION_PATH, class_names)[0] if val_path else None
        size = tuple(data.image_size)
        return Loaded(
            train, val, class_names, image_size=size, color_mode=data.color_mode, raw_dtype="uint8"
        )

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=tuple(self.settings.image_size), scale=1 / 255)


_FACTORY_RETURNS = (
    "(train, validation), each an (x, y) tuple of arrays (or (x, y, w), w the sample "
    "weights), a random-access source of samples (len() and [i], e.g. a Grain MapDataset) "
    "or a batched tf.data.Dataset (validation may be None), optionally followed by a dict "
    "of class_names and feature_names"
)
FACTORY_INFO_KEYS = ("class_names", "feature_names")


class PythonSource(Source):
    """A ``module:function`` factory returning ``(train, validation)``: arrays, or
    batched tf.data.Datasets used as given, optionally followed by a dict that names the
    classes and features: ``(train, validation, {"class_names": [...]})``.

    The factory gets ``data.kwargs`` and, if its signature asks for it, ``config_dir``:
    the config file's folder, which relative paths in its kwargs start from (also when
    the run is evaluated later from another working directory)."""

    name = "python"

    @property
    def label(self) -> str:
        """How messages name where the data comes from."""
        return f"data.factory: {self.settings.factory}"

    def read(self) -> Loaded:
        from keepbest.config.code import resolve_code

        data = self.settings
        factory = resolve_code(self.cfg, "data.factory", data.factory)
        offered = {"config_dir": self.cfg.base_dir}
        try:
            result = call_with_supported_kwargs(factory, data.kwargs, offered, "data.kwargs")
        except InputError:
            raise
        except (Exception, SystemExit) as exc:
            raise DataError(
                f"data.factory: {data.factory} failed: {describe_exception(exc)}"
            ) from None
        return self.loaded(result)

    def loaded(self, result: Any) -> Loaded:
        """What a factory returned, checked and made into arrays or datasets."""
        if not (isinstance(result, (tuple, list)) and len(result) in (2, 3)):
            got = type(result).__name__
            if isinstance(result, (tuple, list)):
                got += f" of {len(result)}"
            raise DataError(f"{self.label} must return {_FACTORY_RETURNS}; got {got}")
        info = self._info(result[2] if len(result) == 3 else {})
        (train, dtype), (val, _) = self._part(result[0], 0), self._part(result[1], 1)
        arrays = [p for p in (train, val) if isinstance(p, Arrays)]
        for part in (train, val):
            if isinstance(part, Rows):
                part.class_names = info.get("class_names")
        declared = info.get("class_names")
        class_names = declared
        if arrays:
            second = arrays[1] if len(arrays) > 1 else None
            key = self.label.split(":")[0]
            class_names = finish_targets(arrays[0], second, key, declared) or declared
        where = f"{self.label}'s validation data"
        return Loaded(
            train,
            val,
            class_names,
            info.get("feature_names"),
            validation_where=where,
            raw_dtype=dtype,
        )

    def _info(self, info: Any) -> dict[str, list[str]]:
        """The factory's third element: class and feature names, each a list of texts."""
        where = f"{self.label}'s third element"
        if not isinstance(info, dict):
            raise DataError(
                f"{where} must be a dict with {' and/or '.join(FACTORY_INFO_KEYS)}; "
                f"got {type(info).__name__}"
            )
        checked = {}
        for key, names in info.items():
            if key not in FACTORY_INFO_KEYS:
                hint = did_you_mean(str(key), FACTORY_INFO_KEYS)
                raise DataError(
                    f"{where} has an unknown key {key!r}{hint} (it may hold "
                    f"{', '.join(FACTORY_INFO_KEYS)})"
                )
            if names is None:
                continue
            if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
                raise DataError(f"{where}: {key} must be a list of texts, got {names!r:.60}")
            names = [str(name) for name in names]
            if not names or len(set(names)) != len(names):
                raise DataError(f"{where}: {key} must be distinct texts, got {names!r:.80}")
            checked[key] = names
        return checked

    def _part(self, part: Any, index: int) -> tuple[Any, str | None]:
        """The train or validation part, and the dtype of its inputs as returned."""
        which = ("train", "validation")[index]
        where = f"{self.label}'s {which} data"
        if part is None and index == 1:
            return None, None
        if isinstance(part, (tuple, list)) and len(part) in (2, 3):
            weighted = len(part) == 3 and part[2] is not None
            try:
                x, y = np.asarray(part[0]), np.asarray(part[1])
                w = np.asarray(part[2]) if weighted else None
            except ValueError as exc:  # ragged nested lists
                raise DataError(f"{where}: cannot be made into arrays ({exc})") from None
            if x.ndim == 0 or y.ndim == 0:
                raise DataError(f"{where}: x and y must be arrays with one row per sample")
            if len(x) != len(y):
                raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)}")
            if w is not None:
                w = sample_weights(w, len(y), f"{where}'s w")
            return Arrays(as_features(x, where), y, w), str(x.dtype)
        if is_random_access(part):  # keepbest shuffles, batches and resumes it by index
            rows = ItemRows(part, where)
            return rows, str(rows.x_dtype)
        import tensorflow as tf

        if isinstance(part, tf.data.Dataset):
            _check_dataset(part, where)
            return part, part.element_spec[0].dtype.name
        raise DataError(
            f"{self.label} must return {_FACTORY_RETURNS}; its {which} is a {type(part).__name__}"
        )

    def file_settings(self, path: Path, spec: DataSpec):
        raise DataError(
            f"--data: this run's data comes from {self.settings.factory}, which has no file "
            "format; omit --data to evaluate on the factory's validation data"
        )


class ScriptSource(PythonSource):
    """Data given as objects: ``keepbest.train(..., data=...)`` takes what a ``python``
    factory returns, or a function returning it; a script's ``KeepBest`` run records
    only that its data came from the script. Neither can be read again later:
    ``evaluate`` needs ``--data``, an .npz with ``x`` and ``y``."""

    name = "script"

    @property
    def label(self) -> str:
        return "data"

    def read(self) -> Loaded:
        given = self.cfg.script_object("data")
        if given is None:
            raise DataError(
                "data: this run's data was given as objects in Python (keepbest.train(data=...) "
                "or KeepBest in a script), so it cannot be read again; evaluate a file "
                "instead: --data FILE.npz (arrays x and y)"
            )
        if callable(given):
            try:
                given = given()
            except InputError:
                raise
            except Exception as exc:
                raise DataError(
                    f"data: the function given failed: {describe_exception(exc)}"
                ) from None
        return self.loaded(given)

    def file_settings(self, path: Path, spec: DataSpec):

        if path.suffix.lower() != ".npz":
            raise DataError(
                f"--data: {path.name}: this run's data came from a script; give an .npz "
                "with arrays x and y"
            )
        return plain_npz(path, self.settings.batch_size)


SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (
        DigitsSource,
        NpzSource,
        NpySource,
        CsvSource,
        ParquetSource,
        ImageDirSource,
        PythonSource,
        ScriptSource,
    )
}


def source_for(cfg: ExperimentConfig) -> Source:
    """The ``Source`` that reads ``cfg.data``."""
    return SOURCES[cfg.data.source](cfg)


def read_sources(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """Read the configured data into (train, validation, spec), raising ``DataError``."""
    with reported_against(cfg):
        source = source_for(cfg)
        loaded = source.read()
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
        if (
            isinstance(train, Rows)
            and isinstance(val, Rows)
            and (train.x_shape, train.y_shape) != (val.x_shape, val.y_shape)
        ):
            raise DataError(
                f"{loaded.validation_where}: samples have shape {val.x_shape} (targets "
                f"{val.y_shape}), but the training data's have {train.x_shape} (targets "
                f"{train.y_shape})"
            )
        return train, val, _spec(train, val, loaded, source)


def read_like_run(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Arrays:
    """Features and targets from ``path``, read as the run's own data (``evaluate --data``)."""
    return source_for(cfg).read_labeled_file(Path(path).resolve(), spec)


def read_features(cfg: ExperimentConfig, spec: DataSpec, path: Path) -> Features:
    """Inputs from an .npz, a CSV or a folder of images (``keepbest predict``)."""
    return source_for(cfg).read_inputs(Path(path), spec)


def plain_npz(path: Path, batch_size: int) -> NpzData:
    """The settings that read an .npz of arrays ``x`` and ``y`` given to ``evaluate
    --data`` for a run whose own data has no file format of that kind."""
    return NpzData.model_construct(
        source="npz",
        path=path,
        x_key="x",
        y_key="y",
        weight_key=None,
        validation=None,
        batch_size=batch_size,
        shuffle=False,
    )


def _unweighted(settings, key: str, why: str):
    """The settings of a file given to ``evaluate --data`` that has no sample weights:
    measured unweighted (training needs them; a file to evaluate may lack them)."""
    log.info("--data: %s (data.%s): its samples are weighted equally", why, key)
    return settings.model_copy(update={key: None})


def _split(arrays, fraction: float, seed: int):
    if isinstance(arrays, ParquetRows):
        return arrays.group_split(fraction, seed)
    order = np.random.default_rng(seed).permutation(len(arrays))
    count = max(1, round(len(arrays) * fraction))
    if count >= len(arrays):
        raise DataError(
            f"data.validation.split: {fraction} leaves no training data out of "
            f"{len(arrays)} samples; use a smaller fraction"
        )
    train, val = np.sort(order[count:]), np.sort(order[:count])
    if isinstance(arrays, Rows):
        return SubsetRows(arrays, train), SubsetRows(arrays, val)
    return arrays.take(train), arrays.take(val)


def _image_inputs(spec: DataSpec, folder: Path) -> Features:
    if spec.image_size is None:
        raise DataError(
            f"--input: {folder} is a folder of images, but the model takes arrays of shape "
            f"{shape_text(spec.raw_shape)}; give an .npz or a .csv"
        )
    files = image_files(folder)
    if not files:
        raise DataError(f"--input: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    check_image_files(files, "--input")
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


def _spec(train, val, loaded: Loaded, source: Source) -> DataSpec:
    cfg, preprocessing = source.cfg, source.preprocessing()
    class_names, image_size, color_mode = loaded.class_names, loaded.image_size, loaded.color_mode
    raw_range = None
    if isinstance(train, Rows):
        raw_shape, target_shape = tuple(train.x_shape), tuple(train.y_shape)
        sample = check_rows(train, cfg)
        if isinstance(val, Rows):
            check_rows(val, cfg)
        raw_range = (float(sample.x.min()), float(sample.x.max()))
        num_classes = rows_classes(train, val, cfg)
        if num_classes is not None and target_shape == (1,):
            target_shape = ()
    elif isinstance(train, Arrays):
        if image_size is not None:  # decoded images: any size, 0..255
            raw_shape = (None, None, 3 if color_mode == "rgb" else 1)
            raw_range = (0.0, 255.0)
        else:
            raw_shape = tuple(int(d) for d in train.x.shape[1:])
            if train.x.size:
                raw_range = (float(train.x.min()), float(train.x.max()))
        target_shape = tuple(int(d) for d in train.y.shape[1:])
        num_classes = None
        if train.y.dtype.kind in "iub" and not target_shape:
            ys = [train.y] + ([val.y] if isinstance(val, Arrays) else [])
            num_classes = max(int(y.max()) for y in ys if y.size) + 1
    else:
        x_spec, y_spec = train.element_spec[:2]
        raw_shape = _dims(x_spec.shape[1:])
        target_shape = _dims(y_spec.shape[1:])
        num_classes = None
        if y_spec.dtype.is_integer and target_shape in ((), (1,)):
            num_classes = _dataset_classes(train, val, cfg)
            target_shape = () if num_classes else target_shape
    _check_names(loaded, raw_shape, num_classes)
    if class_names and num_classes is not None:
        num_classes = max(num_classes, len(class_names))
    return DataSpec(
        input_shape=preprocessing.model_input_shape(raw_shape),
        num_classes=num_classes,
        target_shape=target_shape,
        class_names=class_names,
        feature_names=loaded.feature_names,
        image_size=image_size,
        color_mode=color_mode,
        raw_shape=raw_shape,
        raw_dtype=loaded.raw_dtype,
        raw_range=raw_range,
        preprocessing=preprocessing,
        replays_on_resume=not isinstance(train, (Arrays, Rows)),
    )


def _check_names(loaded: Loaded, raw_shape: tuple, num_classes: int | None) -> None:
    """Class and feature names (a factory declares them) must fit the data."""
    names, features = loaded.class_names, loaded.feature_names
    if names and num_classes is None:
        raise DataError(
            "data.factory: it names classes, but its targets are not class ids "
            "(integers or texts, one per sample)"
        )
    if names and num_classes > len(names):
        raise DataError(
            f"data.factory: its labels go up to {num_classes - 1}, but it names "
            f"{len(names)} classes ({', '.join(names)}); name one class per label"
        )
    if features and tuple(raw_shape) != (len(features),):
        raise DataError(
            f"data.factory: it names {len(features)} features, but its samples have shape "
            f"{tuple(raw_shape)}; name one feature per column of x"
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


def check_rows(rows: Rows, cfg: ExperimentConfig) -> Arrays:
    """The pre-flight look at data read by row: a sample of ``SAMPLE_ROWS`` rows spread
    over it must hold finite numbers (the rest is read only while training)."""
    index = rows.sample_rows()
    sample = rows.read(index)
    x = sample.x.reshape(len(sample.x), -1)
    if x.dtype.kind == "f":
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            where = rows.locate(int(index[int(np.argmin(finite))]))
            raise DataError(
                f"{rows.x_where or rows.where}: {where} holds NaN or infinite values (found "
                f"in a sample of {len(sample.x)} rows); fill them in or leave those rows out"
            )
    return sample


def rows_classes(train: Rows, val: Rows | None, cfg: ExperimentConfig) -> int | None:
    """Integer targets are class ids: their count from one pass over the targets alone
    (a chunk at a time), checked like in-memory labels (0 or more, two classes or more)."""
    from keepbest.data.pipelines import labels_key

    if train.y_dtype.kind not in "iub" or tuple(train.y_shape) not in ((), (1,)):
        return None
    if isinstance(train, ItemRows) and len(train) + len(val or ()) > ITEM_LABEL_SCAN:
        # reading every sample for its label could take as long as an epoch: the factory
        # names its classes, or the builder is told num_classes=None
        return len(train.class_names) if train.class_names else None
    where = labels_key(cfg)
    lowest, highest, present = None, None, set()
    for rows in (train, val):
        if rows is None:
            continue
        for chunk in rows.label_chunks():
            if not chunk.size:
                continue
            low, high = int(chunk.min()), int(chunk.max())
            lowest = low if lowest is None else min(lowest, low)
            highest = high if highest is None else max(highest, high)
            if rows is train and len(present) < 2:
                present.update(np.unique(chunk[:65536]).tolist())
    if lowest is not None and lowest < 0:
        raise DataError(
            f"{where}: integer targets are class ids and must be 0 or more, found {lowest} "
            "(use float targets for regression)"
        )
    if len(present) == 1:
        label = int(next(iter(present)))
        raise DataError(
            f"{where}: every training label is class {label}; a classifier needs two classes "
            "or more (for regression, store the targets as floats)"
        )
    count = None if highest is None else highest + 1
    if train.class_names:
        count = max(count or 0, len(train.class_names))
    return count


def _parquet_inputs(path: Path, spec: DataSpec, where: str) -> np.ndarray:
    """The model's feature columns of a Parquet file, as float32 (``predict --input``)."""
    import pyarrow.parquet as pq

    names = spec.feature_names
    try:
        table = pq.read_table(path)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"{where}: {path} is not a readable Parquet file ({reason})") from None
    if not names:
        raise DataError(
            f"{where}: {path.name} is Parquet, but the model's inputs have no column names; "
            "give an .npz or .npy"
        )
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise DataError(
            f"{where}: {path.name} lacks the column(s) {', '.join(missing)}; the model takes "
            f"{', '.join(names)} (the file has {', '.join(table.column_names)})"
        )
    columns = []
    for name in names:
        column = table.column(name)
        if column.null_count:
            raise DataError(f"{where}: column {name!r} of {path.name} has empty (null) values")
        try:
            columns.append(column.to_numpy().astype("float32"))
        except (ValueError, TypeError):
            raise DataError(
                f"{where}: column {name!r} of {path.name} holds {column.type} values, not numbers"
            ) from None
    return np.stack(columns, axis=1) if columns else np.empty((table.num_rows, 0), "float32")
