"""The experiment config's schema: every section, key, type and bound, as pydantic models.

Unknown keys are errors (with a "did you mean"), relative paths resolve against the config
file's folder, data files are checked to exist, and the cross-section rules (a ``val_*``
monitor needs validation data, the monitor must be logged) run here, before TensorFlow
builds a model or anything is written. ``keepbest.config.loading`` turns YAML and
``--set`` overrides into an ``ExperimentConfig``; ``keepbest.config.messages`` turns
pydantic's errors into one line per problem.

Example:

    >>> from keepbest.config.schema import CheckpointConfig
    >>> CheckpointConfig(monitor="val_accuracy").mode
    'auto'
"""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

from keepbest.config.references import did_you_mean
from keepbest.errors import ConfigError
from keepbest.monitor import Kept, Schedule
from keepbest.signals import DEFAULT_SIGNALS, StopSignalName

BUILTIN_BUILDERS = ("mlp", "cnn")
# The model or the data was given as a Python object (``keepbest.KeepBest`` in a script,
# ``keepbest.train(..., model=..., data=...)``): nothing in the config can rebuild it.
SCRIPT = "script"
# The builder compiled the model and the config set no compile of its own: the run's
# optimizer, loss and metrics are the builder's (``model.json`` records them).
BUILDER = "builder"
BUNDLED_DATASETS = ("digits",)
REFERENCE_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,=+-]*$")
MAX_SEED = 2**32 - 1  # NumPy's global seed (set by keras.utils.set_random_seed) is 32-bit


# --------------------------------------------------------------------------- paths


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir", "."))


def _resolve(path: Path, info: ValidationInfo) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


def _checking_files(info: ValidationInfo) -> bool:
    return (info.context or {}).get("check_files", True)


def _kind(path: Path) -> str:
    """What ``path`` is: "file", "folder", "other" (a pipe, socket or device) or
    "missing"; a name the system cannot look up (too long, ...) is a ``ValueError``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
        raise ValueError(f"{exc.strerror or exc}: {shown}") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


_NOT_REGULAR = "is not a regular file (a pipe, socket or device: reading one could block)"


def _existing_file(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    kind = _kind(resolved) if _checking_files(info) else "file"
    if kind != "file":
        what = {"folder": "is a folder, not a file", "other": _NOT_REGULAR}.get(
            kind, "file not found"
        )
        raise ValueError(f"{what}: {resolved}")
    return resolved


def _existing_dir(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    kind = _kind(resolved) if _checking_files(info) else "folder"
    if kind != "folder":
        what = {"file": "is a file, not a folder", "other": _NOT_REGULAR}.get(
            kind, "folder not found"
        )
        raise ValueError(f"{what}: {resolved}")
    return resolved


def _output_dir(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and _kind(resolved) in ("file", "other"):
        raise ValueError(f"is a file, not a folder: {resolved}")
    return resolved


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, Path)) else value


def folder_files(folder: Path, suffix: str) -> list[Path]:
    """The ``suffix`` files below ``folder`` (any depth), sorted; hidden ones and those
    under names starting with ``_`` (``_SUCCESS``, ``_temporary/``) left out."""
    return sorted(
        p
        for p in folder.rglob(f"*{suffix}")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def _shards(paths: list[Path], info: ValidationInfo, suffix: str) -> list[Path]:
    """Files given as paths, glob patterns (``shards/x-*.npy``) or folders (every
    ``suffix`` file below it), each resolved from the config's folder, in the order
    given, a pattern's or a folder's matches sorted by name; every match a regular file.
    A stored config (not checking files) keeps the list as it was expanded."""
    if not paths:
        raise ValueError("give one file or more (a path, a glob pattern, or a list of them)")
    found: list[Path] = []
    for given in paths:
        path = _resolve(Path(given), info)
        if not _checking_files(info):
            found.append(path)
            continue
        if any(char in str(given) for char in "*?["):
            anchor = Path(path.anchor)
            matches = sorted(anchor.glob(str(path.relative_to(anchor))))
            if not matches:
                raise ValueError(f"the pattern {str(given)!r} matches no file")
        elif _kind(path) == "folder":
            matches = folder_files(path, suffix)
            if not matches:
                raise ValueError(f"the folder {path} holds no {suffix} file")
        else:
            matches = [path]
        for match in matches:
            kind = _kind(match)
            if kind != "file":
                what = {"folder": "is a folder, not a file", "other": _NOT_REGULAR}.get(
                    kind, "file not found"
                )
                raise ValueError(f"{what}: {match}")
            if match.suffix.lower() != suffix:
                raise ValueError(f"{match.name} is not a {suffix} file")
        found += matches
    repeated = sorted({p for p in found if found.count(p) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]} is given twice")
    return found


def _npy_shards(paths: list[Path], info: ValidationInfo) -> list[Path]:
    return _shards(paths, info, ".npy")


def _parquet_files(paths: list[Path], info: ValidationInfo) -> list[Path]:
    return _shards(paths, info, ".parquet")


# A file, a glob pattern or a folder, or a list of them: the shards of one array in order.
NpyShards = Annotated[list[Path], BeforeValidator(_as_list), AfterValidator(_npy_shards)]
ParquetFiles = Annotated[list[Path], BeforeValidator(_as_list), AfterValidator(_parquet_files)]


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
ExistingDir = Annotated[Path, AfterValidator(_existing_dir)]
OutputDir = Annotated[Path, AfterValidator(_output_dir)]
Count = Annotated[StrictInt, Field(gt=0)]  # strict: YAML's `true` is not 1 epoch


def _reference(value: str) -> str:
    if not REFERENCE_PATTERN.match(value):
        raise ValueError("expected 'module:function', e.g. 'mypkg.models:build'")
    return value


Reference = Annotated[str, AfterValidator(_reference)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {value})")
    return value


Finite = Annotated[float, AfterValidator(_finite)]


# --------------------------------------------------------------------------- schema


class Section(BaseModel):
    """A config section: unknown keys are errors, never silently ignored."""

    # numbers are finite unless a key says otherwise: a NaN baseline or an infinite
    # learning rate would only show after training
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class ValidationData(Section):
    """Where validation data comes from: a fraction of the training data, or a file."""

    split: float | None = Field(None, gt=0, lt=1)
    path: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ValidationData:
        if (self.split is None) == (self.path is None):
            raise ValueError("give exactly one of 'split' (a fraction) or 'path' (a file)")
        return self


class _DataBase(Section):
    validation: ValidationData | None = None
    batch_size: Count = 32
    shuffle: bool = True

    def validation_path_kind(self) -> str:
        return "file"

    def files(self) -> list[Path]:
        """Every file or folder the data is read from, validation's included."""
        found = []
        for part in (self, self.validation):
            for key in ("path", "x", "y", "weights"):
                value = getattr(part, key, None)
                found += value if isinstance(value, list) else [value] if value else []
        return found

    def files_text(self) -> str:
        """The training files for people: a name, or the first name and how many more."""
        return names_text(getattr(self, "path", None) or getattr(self, "x", None))


def names_text(paths: Path | list[Path] | None) -> str:
    if not paths:
        return ""
    if not isinstance(paths, list):
        return paths.name
    more = f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""
    return paths[0].name + more


class BundledData(_DataBase):
    """A dataset shipped inside keepbest (no download)."""

    source: Literal["digits"]

    @field_validator("validation")
    @classmethod
    def _split_only(cls, value: ValidationData | None) -> ValidationData | None:
        if value is not None and value.path is not None:
            raise ValueError(
                "a bundled dataset has no validation file; use {split: 0.2} instead of path"
            )
        return value


class NpzData(_DataBase):
    source: Literal["npz"]
    path: ExistingFile
    x_key: str = "x"
    y_key: str = "y"
    # an array of one weight per sample (shape (n,)), in the validation file too
    weight_key: str | None = None


class NpyValidation(Section):
    """An ``npy`` source's validation data: a fraction of the rows, or arrays of its own."""

    split: float | None = Field(None, gt=0, lt=1)
    x: NpyShards | None = None
    y: NpyShards | None = None
    weights: NpyShards | None = None

    @model_validator(mode="after")
    def _split_or_arrays(self) -> NpyValidation:
        if (self.split is None) == (self.x is None) or (self.x is None) != (self.y is None):
            raise ValueError("give either 'split' (a fraction) or both 'x' and 'y' (.npy files)")
        return self

    @property
    def path(self) -> Path | None:
        """The first validation file (for people); the source reads ``x`` and ``y``."""
        return self.x[0] if self.x else None


class NpyData(_DataBase):
    """Arrays in ``.npy`` files, read a batch at a time by row index (never whole):
    ``x`` the inputs, ``y`` the targets, ``weights`` one sample weight per row; each a
    file, a glob pattern or a list of them (shards, rows in order)."""

    source: Literal["npy"]
    x: NpyShards
    y: NpyShards
    weights: NpyShards | None = None
    validation: NpyValidation | None = None

    def validation_path_kind(self) -> str:
        return "shards"


class ParquetValidation(Section):
    """A ``parquet`` source's validation data: a fraction of its row groups, or files."""

    split: float | None = Field(None, gt=0, lt=1)
    path: ParquetFiles | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ParquetValidation:
        if (self.split is None) == (self.path is None):
            raise ValueError("give exactly one of 'split' (a fraction) or 'path' (files)")
        return self


class ParquetData(_DataBase):
    """Columns of Parquet files (a file, a folder, a glob pattern, or a list), read a
    row group at a time: numeric ``features`` (default: every column but the target and
    the weights), a ``target`` column (numbers or class names), optional sample weights."""

    source: Literal["parquet"]
    path: ParquetFiles
    target: str
    features: list[str] | None = None
    weight_column: str | None = None
    validation: ParquetValidation | None = None

    def validation_path_kind(self) -> str:
        return "shards"


class CsvData(_DataBase):
    source: Literal["csv"]
    path: ExistingFile
    target: str
    features: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    # a numeric column of one weight per sample (not a feature), in the validation file too
    weight_column: str | None = None

    @field_validator("weight_column")
    @classmethod
    def _weight_is_no_feature(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("target"):
            raise ValueError("it is the target; name the column of sample weights")
        if value is not None and value in (info.data.get("features") or []):
            raise ValueError("it is in data.features too; a column is a feature or the weights")
        return value


class ImageDirData(_DataBase):
    source: Literal["image_dir"]
    path: ExistingDir
    image_size: tuple[Count, Count]
    color_mode: Literal["rgb", "grayscale"] = "rgb"

    def validation_path_kind(self) -> str:
        return "folder"


class PythonData(_DataBase):
    """A ``module:function`` returning ``(train, validation)``; validation may be None."""

    source: Literal["python"]
    factory: Reference
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("validation")
    @classmethod
    def _factory_owns_validation(cls, value: ValidationData | None) -> ValidationData | None:
        if value is not None:
            raise ValueError("a python data factory returns its own validation data; remove this")
        return value


class ScriptData(_DataBase):
    """Data given as Python objects: ``keepbest.train(..., data=...)`` (arrays or datasets,
    as a ``python`` factory returns them), or whatever a script passed to ``model.fit``
    with ``keepbest.KeepBest``. The run dir records only this; ``evaluate`` needs
    ``--data``."""

    source: Literal["script"]
    description: str | None = None  # e.g. "arrays (1000, 8, 8) float32", for people

    @field_validator("validation")
    @classmethod
    def _objects_own_validation(cls, value: ValidationData | None) -> ValidationData | None:
        if value is not None:
            raise ValueError("data given as objects brings its own validation data; remove this")
        return value


DataConfig = Annotated[
    BundledData
    | NpzData
    | NpyData
    | CsvData
    | ParquetData
    | ImageDirData
    | PythonData
    | ScriptData,
    Field(discriminator="source"),
]


class KerasObject(Section):
    """A Keras object as Keras serializes it: ``{class_name: CosineDecay, config: {...}}``.

    ``class_name`` is a Keras name (``CosineDecay``, ``ReduceLROnPlateau``) or
    ``module:name`` (a class, made with ``config`` as its kwargs, or a function: for a
    loss or a metric, called with ``config`` as extra kwargs; otherwise a factory called
    with them). ``module`` and ``registered_name``, which ``keras.saving.serialize``
    writes, are accepted and ignored, so its output can be pasted."""

    class_name: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    module: str | None = None
    registered_name: str | None = None

    @property
    def name(self) -> str:
        return self.class_name


def keras_spec(value: Any) -> str | KerasObject:
    """One type, one message: a name, or a Keras config dict."""
    if isinstance(value, KerasObject) or (isinstance(value, str) and value):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(KerasObject.model_fields))
        if "class_name" not in value or unknown:
            what = f"unknown key {unknown[0]!r}" if unknown else "no class_name"
            raise ValueError(
                f"a Keras object as a mapping takes class_name and config ({what}), e.g. "
                "{class_name: CosineDecay, config: {initial_learning_rate: 0.01}}"
            )
        if not isinstance(value["class_name"], str) or not value["class_name"]:
            raise ValueError("class_name must be a name, e.g. CosineDecay or 'mymodule:Name'")
        if not isinstance(value.get("config", {}), dict):
            raise ValueError("config must be a mapping of the object's keyword arguments")
        return KerasObject.model_construct(**{"config": {}, **value})
    raise ValueError(
        "expected a name (a Keras one or 'module:name') or {class_name: ..., config: {...}}"
    )


# A loss, a metric, a schedule or a callback: a name (Keras' or ``module:name``), or a
# Keras config dict (``keepbest.keras_objects`` makes the object).
KerasSpec = Annotated[Any, BeforeValidator(keras_spec)]


def _learning_rate(value: Any) -> Any:
    if value is None or isinstance(value, (dict, KerasObject)):
        return keras_spec(value) if value is not None else None
    if isinstance(value, str) and REFERENCE_PATTERN.match(value):
        return value
    if isinstance(value, bool):
        value = "a flag"
    try:
        rate = float(value)  # YAML reads 1e-3 as a string
    except (TypeError, ValueError):
        raise ValueError(
            "expected a number, a schedule {class_name: CosineDecay, config: {...}} or "
            "'module:name'"
        ) from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError("must be a finite number greater than 0")
    return rate


def spec_name(spec: KerasSpec) -> str:
    """The name a spec gives: the string, or its ``class_name``."""
    return spec if isinstance(spec, str) else spec.class_name


def spec_text(spec: Any) -> str:
    """A spec for people: ``CosineDecay(initial_learning_rate=0.01, decay_steps=100)``."""
    if isinstance(spec, KerasObject):
        kwargs = ", ".join(f"{key}={value}" for key, value in spec.config.items())
        return f"{spec.class_name}({kwargs})"
    return str(spec)


def is_reference(spec: KerasSpec) -> bool:
    """Whether a spec names user code (``module:name``), not a Keras object."""
    return bool(REFERENCE_PATTERN.match(spec_name(spec)))


class ModelConfig(Section):
    builder: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("builder")
    @classmethod
    def _known_builder(cls, value: str) -> str:
        if value in BUILTIN_BUILDERS or value == SCRIPT or REFERENCE_PATTERN.match(value):
            return value
        hint = did_you_mean(value, BUILTIN_BUILDERS)
        raise ValueError(
            f"expected a built-in builder ({', '.join(BUILTIN_BUILDERS)}) "
            f"or 'module:function'{hint}"
        )


class OptimizerConfig(BaseModel):
    """Any Keras optimizer by name; other keys are passed to its constructor."""

    model_config = ConfigDict(extra="allow")

    name: str = "adam"
    # a number, or a schedule (a Keras config dict or ``module:name``); null: the
    # optimizer's own default (a script's run records its optimizer this way)
    learning_rate: Annotated[Any, BeforeValidator(_learning_rate)] = 0.001

    @model_validator(mode="after")
    def _finite_kwargs(self) -> OptimizerConfig:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"optimizer.{key} must be a finite number (got {value})")
        return self

    def schedule(self) -> KerasSpec | None:
        """The learning-rate schedule, if the learning rate is one."""
        rate = self.learning_rate
        return rate if isinstance(rate, (str, KerasObject)) else None

    def kwargs(self) -> dict[str, Any]:
        """The constructor's kwargs (a schedule's spec as it is: ``keras_objects`` makes
        it)."""
        given = {"learning_rate": self.learning_rate} if self.learning_rate is not None else {}
        return {**given, **(self.model_extra or {})}


class TrainConfig(Section):
    epochs: Count = 10
    steps_per_epoch: Count | None = None
    # weights per class in the training loss (and in a training-set monitor, as Keras
    # counts them): a map of class id (or class name) to weight, or "balanced"
    # (n_samples / (n_classes * count of the class), computed from the labels)
    # (checked against the labels when the data is read: keepbest.data.weights)
    class_weight: dict[int | str, float] | Literal["balanced"] | None = None
    # Keras callbacks run inside fit after keepbest's own: a Keras callback's name or
    # 'module:Class', or {class_name: ..., config: {kwargs}}
    callbacks: list[KerasSpec] = Field(default_factory=list)
    # Keras' mixed-precision policy for building (and reloading) the model
    mixed_precision: Literal["mixed_float16", "mixed_bfloat16"] | None = None

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value: Any) -> Any:
        """One line per problem (a union's members would each say theirs)."""
        if value is None or value == "balanced":
            return value
        if not isinstance(value, dict):
            hint = did_you_mean(value, ["balanced"]) if isinstance(value, str) else ""
            raise ValueError(f"must be a mapping of class to weight, or 'balanced'{hint}")
        checked: dict[int | str, float] = {}
        for key, weight in value.items():
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise ValueError(f"{key!r}: a class is a class id (0, 1, ...) or a class name")
            try:
                number = float("nan" if isinstance(weight, bool) else weight)
            except (TypeError, ValueError):
                number = math.nan
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"class {key!r}: its weight must be a finite number 0 or more")
            checked[key] = number
        return checked


class AverageConfig(Section):
    """``checkpoint.average``: after training, the uniform average of the weights of the
    k best (``top_k``) or the k latest (``last_k``) evaluation points, measured like every
    point, kept as ``average.weights.h5`` if it beats the best."""

    of: Literal["top_k", "last_k"] = "top_k"
    k: StrictInt = Field(ge=2)


class CheckpointConfig(Section):
    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"
    # true: keep a mode that contradicts the direction the monitor's name says (mode: min
    # with val_accuracy, max with a loss), e.g. for a custom metric named against its
    # direction; false: such a mode is refused (keepbest.monitor.direction_from_name)
    force_mode: bool = False
    min_delta: float = Field(0.0, ge=0)
    # counted in evaluation points: epochs, or evaluations when every_steps is set
    patience: Count | None = None
    start_from_epoch: StrictInt = Field(0, ge=0)
    baseline: float | None = None
    stop_on_nonfinite: bool = True
    verify_tolerance: float | None = Field(None, ge=0)
    # bounds a training-set monitor's end-of-epoch pass (and its verification) to the
    # first N batches of the fixed-order training data; None: the whole training set
    train_eval_steps: Count | None = None
    # evaluate (and consider a new best) at global optimizer steps N, 2N, ... instead of
    # at epoch ends; None: at every epoch end
    every_steps: Count | None = None
    # with every_steps: evaluation points at or before this global step are warm-up
    start_from_step: StrictInt = Field(0, ge=0)
    # keep the weights of the k best evaluation points (best.json ranks them), not only
    # the best's
    keep_top: Count = 1
    average: AverageConfig | None = None

    @field_validator("monitor")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w]*$", value):
            raise ValueError("expected a metric name such as 'val_loss' or 'accuracy'")
        return value

    @model_validator(mode="after")
    def _mode_agrees_with_the_monitor(self) -> CheckpointConfig:
        from keepbest.monitor import mode_contradiction

        problem = mode_contradiction(self.monitor, self.mode)
        if problem and not self.force_mode:
            raise ConfigError(problem)
        return self

    @model_validator(mode="after")
    def _warm_up_in_the_schedule_s_unit(self) -> CheckpointConfig:
        if self.every_steps is not None and self.start_from_epoch:
            raise ConfigError(
                "checkpoint.start_from_epoch: with checkpoint.every_steps the warm-up is "
                "counted in steps; set checkpoint.start_from_step instead"
            )
        if self.every_steps is None and self.start_from_step:
            raise ConfigError(
                "checkpoint.start_from_step: applies with checkpoint.every_steps only; "
                "use checkpoint.start_from_epoch, or set checkpoint.every_steps"
            )
        return self

    @model_validator(mode="after")
    def _enough_kept_to_average(self) -> CheckpointConfig:
        average = self.average
        if average is not None and average.of == "top_k" and self.keep_top < average.k:
            raise ConfigError(
                f"checkpoint.keep_top: {self.keep_top} keeps fewer points than "
                f"checkpoint.average averages (k: {average.k} of top_k); set keep_top to "
                f"at least {average.k}"
            )
        return self

    def kept(self) -> Kept:
        """Which points' weights are kept (``keepbest.monitor.Kept``)."""
        last = self.average.k if self.average and self.average.of == "last_k" else 0
        return Kept(top=self.keep_top, last=last)

    def schedule(self) -> Schedule:
        """When this run is judged (``keepbest.monitor.Schedule``)."""
        return Schedule(self.every_steps, self.start_from_epoch, self.start_from_step)


class ResumeConfig(Section):
    """How a run reacts to interruption (see keepbest.signals and keepbest.callbacks.resume)."""

    signals: list[StopSignalName] = Field(default_factory=lambda: list(DEFAULT_SIGNALS))
    requeue: bool | Literal["auto"] = "auto"  # auto: under Slurm (SLURM_JOB_ID is set)
    # resume-state cadence (keepbest.callbacks.resume.Cadence): a fixed one, and a budget
    every_steps: Count | None = None
    every_seconds: float | None = Field(None, gt=0)
    max_overhead: float | None = Field(0.05, gt=0, le=1)

    @model_validator(mode="after")
    def _some_cadence(self) -> ResumeConfig:
        if self.max_overhead is None and self.every_steps is None and self.every_seconds is None:
            raise ConfigError(
                "resume.max_overhead: null leaves no cadence for resume states; set "
                "resume.every_steps or resume.every_seconds, or a max_overhead such as 0.05"
            )
        return self


class DistributeConfig(Section):
    """tf.distribute settings (see keepbest.cluster.distribute)."""

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    logical_cpus: int | None = Field(None, ge=2)  # mirrored: split the CPU into N devices
    connect_timeout: float = Field(120.0, gt=0)  # multi_worker: seconds to wait for peers
    # multi_worker: seconds a worker may go without a heartbeat before the others stop
    heartbeat_timeout: float = Field(30.0, gt=0)
    port_base: int = Field(8888, ge=1024, le=65535)  # multi_worker under Slurm
    # multi_worker: agree on stop requests and resume states every N steps (null: choose
    # N so that agreeing costs about 1% of the training time)
    sync_every_steps: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "collective_timeout" in raw:
            raise ConfigError(
                "distribute.collective_timeout: replaced by distribute.heartbeat_timeout "
                "(seconds a worker may stop answering before the others stop); rename it"
            )
        return raw

    @model_validator(mode="after")
    def _cpus_only_for_mirrored(self) -> DistributeConfig:
        if self.logical_cpus is not None and self.strategy != "mirrored":
            raise ValueError("logical_cpus applies to strategy: mirrored only")
        return self


class MlflowConfig(Section):
    """MLflow tracking of the run (see keepbest.callbacks.mlflow_tracking)."""

    # None: MLflow's own default (MLFLOW_TRACKING_URI); a relative sqlite:/// or file:
    # path starts at the config file's folder, like every path in the config
    tracking_uri: str | None = None
    experiment: str | None = None  # None: MLflow's default experiment

    @field_validator("tracking_uri")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        for prefix in ("sqlite:///", "file:"):
            path = value.removeprefix(prefix)
            if value.startswith(prefix) and path and not path.startswith(("/", ":memory:")):
                return prefix + str(_base_dir(info).resolve() / path)
        return value


class LoggingConfig(Section):
    """Extra logs (``history.csv`` is always written)."""

    tensorboard: bool = False  # TensorBoard event files in run_dir/tensorboard
    mlflow: MlflowConfig | None = None  # an MLflow run per run dir


class ExperimentConfig(Section):
    name: str
    output_dir: OutputDir = Path("runs")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    # a Keras name, 'module:name' or a Keras config dict; each recorded in the run dir
    loss: KerasSpec = "sparse_categorical_crossentropy"
    metrics: list[KerasSpec] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    resume: ResumeConfig = Field(default_factory=ResumeConfig)
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _origin: str = PrivateAttr(default="config")
    # For a config read from a run dir: where training found its code (config.code).
    _code_origin: Any = PrivateAttr(default=None)
    # ``keepbest.train(..., model=..., data=...)``: the objects behind ``script``.
    _objects: dict = PrivateAttr(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths and 'module:function' refs start here
        (for a config read from a run dir: the folder of the config it was trained with)."""
        return self._base_dir

    @property
    def compiled_by_model(self) -> bool:
        """Whether the run's compile settings are the model's own (a script's, or a
        builder's that compiles), recorded in ``model.json`` rather than in the config."""
        return self.optimizer.name in (SCRIPT, BUILDER) or self.loss in (SCRIPT, BUILDER)

    def script_object(self, key: str) -> Any:
        """The ``model`` or ``data`` object given to ``keepbest.train`` (None if none)."""
        return self._objects.get(key)

    @property
    def origin(self) -> str:
        """Where the config came from (its file), the first word of every error about it."""
        return self._origin

    @field_validator("name")
    @classmethod
    def _safe_run_name(cls, value: str) -> str:
        if not RUN_NAME_PATTERN.match(value):
            raise ValueError("use letters, digits and . _ , = + - only (it names the run folder)")
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ExperimentConfig:
        problems = []
        validation = self.data.validation
        kind = self.data.validation_path_kind()
        if validation is not None and validation.path is not None and kind != "shards":
            check = _existing_dir if kind == "folder" else _existing_file
            try:
                validation.path = check(validation.path, info)
            except ValueError as exc:
                problems.append(f"data.validation.path: {exc} (got {str(validation.path)!r})")
        has_validation = validation is not None or self.data.source in ("python", SCRIPT)
        monitor = self.checkpoint.monitor
        if monitor.startswith("val_") and not has_validation:
            problems.append(
                f"checkpoint.monitor: '{monitor}' needs validation data; set data.validation "
                f"(e.g. {{split: 0.2}}) or monitor '{monitor[4:]}'"
            )
        known = ["loss", *(spec_name(m) for m in self.metrics)]
        # Metric names are known here only for Keras' names and a builder that does not
        # compile; otherwise the first batch tells (``training._check_monitor_is_logged``).
        plain = all(isinstance(m, str) and not is_reference(m) for m in self.metrics)
        compiles = self.model.builder not in BUILTIN_BUILDERS
        if (
            monitor.removeprefix("val_") not in known
            and not self.compiled_by_model
            and plain
            and not (compiles and "metrics" not in self.model_fields_set)
        ):
            hint = did_you_mean(monitor, [*known, *(f"val_{k}" for k in known)])
            problems.append(
                f"checkpoint.monitor: '{monitor}' is not logged by this run; it logs "
                f"{', '.join(known)} (and val_* of each with validation data){hint}"
            )
        if problems:
            raise ConfigError(problems)
        return self

    def run_dir(self) -> Path:
        return self.output_dir / self.name
