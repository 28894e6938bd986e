"""The experiment config: its schema, and how YAML files and ``--set`` overrides become one.

Everything a user can get wrong in a config is caught here, before TensorFlow builds a
model or anything is written: unknown keys (with a "did you mean"), wrong types, bad
values and missing files, one line per problem, each with its full dotted path.

Example:

    >>> from keepbest.config import load_config
    >>> cfg = load_config("configs/quickstart.yaml", overrides=["train.epochs=3"])
    >>> cfg.train.epochs
    3
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator

from keepbest.errors import ConfigError

BUILTIN_BUILDERS = ("mlp", "cnn")
BUNDLED_DATASETS = ("digits",)
REFERENCE_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,=+-]*$")


# --------------------------------------------------------------------------- paths


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir", "."))


def _resolve(path: Path, info: ValidationInfo) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


def _checking_files(info: ValidationInfo) -> bool:
    return (info.context or {}).get("check_files", True)


def _existing_file(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and not resolved.is_file():
        raise ValueError(f"file not found: {resolved}")
    return resolved


def _existing_dir(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and not resolved.is_dir():
        raise ValueError(f"folder not found: {resolved}")
    return resolved


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
ExistingDir = Annotated[Path, AfterValidator(_existing_dir)]
ResolvedPath = Annotated[Path, AfterValidator(_resolve)]


def _reference(value: str) -> str:
    if not REFERENCE_PATTERN.match(value):
        raise ValueError("expected 'module:function', e.g. 'mypkg.models:build'")
    return value


Reference = Annotated[str, AfterValidator(_reference)]


# --------------------------------------------------------------------------- schema


class Section(BaseModel):
    """A config section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


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
    batch_size: int = Field(32, gt=0)
    shuffle: bool = True

    def validation_path_kind(self) -> str:
        return "file"


class BundledData(_DataBase):
    """A dataset shipped inside keepbest (no download)."""

    source: Literal["digits"]


class NpzData(_DataBase):
    source: Literal["npz"]
    path: ExistingFile
    x_key: str = "x"
    y_key: str = "y"


class CsvData(_DataBase):
    source: Literal["csv"]
    path: ExistingFile
    target: str
    features: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)


class ImageDirData(_DataBase):
    source: Literal["image_dir"]
    path: ExistingDir
    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
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


DataConfig = Annotated[
    Union[BundledData, NpzData, CsvData, ImageDirData, PythonData],  # noqa: UP007
    Field(discriminator="source"),
]


class ModelConfig(Section):
    builder: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("builder")
    @classmethod
    def _known_builder(cls, value: str) -> str:
        if value in BUILTIN_BUILDERS or REFERENCE_PATTERN.match(value):
            return value
        hint = _did_you_mean(value, BUILTIN_BUILDERS)
        raise ValueError(
            f"expected a built-in builder ({', '.join(BUILTIN_BUILDERS)}) "
            f"or 'module:function'{hint}"
        )


class OptimizerConfig(BaseModel):
    """Any Keras optimizer by name; other keys are passed to its constructor."""

    model_config = ConfigDict(extra="allow")

    name: str = "adam"
    learning_rate: float = Field(0.001, gt=0)

    def kwargs(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, **(self.model_extra or {})}


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    steps_per_epoch: int | None = Field(None, gt=0)


class CheckpointConfig(Section):
    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"
    min_delta: float = Field(0.0, ge=0)
    patience: int | None = Field(None, gt=0)
    start_from_epoch: int = Field(0, ge=0)
    baseline: float | None = None
    stop_on_nonfinite: bool = True
    verify_tolerance: float | None = Field(None, ge=0)

    @field_validator("monitor")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w]*$", value):
            raise ValueError("expected a metric name such as 'val_loss' or 'accuracy'")
        return value


class ExperimentConfig(Section):
    name: str
    output_dir: ResolvedPath = Path("runs")
    seed: int = Field(0, ge=0)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: str = "sparse_categorical_crossentropy"
    metrics: list[str] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths and 'module:function' refs start here."""
        return self._base_dir

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
        if validation is not None and validation.path is not None:
            kind = self.data.validation_path_kind()
            check = _existing_dir if kind == "folder" else _existing_file
            try:
                validation.path = check(validation.path, info)
            except ValueError as exc:
                problems.append(("data.validation.path", str(exc), validation.path))
        has_validation = validation is not None or self.data.source == "python"
        monitor = self.checkpoint.monitor
        if monitor.startswith("val_") and not has_validation:
            problems.append(
                (
                    "checkpoint.monitor",
                    f"'{monitor}' needs validation data; set data.validation "
                    f"(e.g. {{split: 0.2}}) or monitor '{monitor[4:]}'",
                    monitor,
                )
            )
        known = ["loss", *self.metrics]
        metric = monitor.removeprefix("val_")
        if metric not in known and all(REFERENCE_PATTERN.match(m) is None for m in known):
            hint = _did_you_mean(monitor, [*known, *(f"val_{k}" for k in known)])
            problems.append(
                (
                    "checkpoint.monitor",
                    f"'{monitor}' is not logged by this run; it logs "
                    f"{', '.join(known)} (and val_* of each with validation data){hint}",
                    monitor,
                )
            )
        if problems:
            raise ConfigError([f"{path}: {msg}" for path, msg, _ in problems])
        return self

    def run_dir(self) -> Path:
        return self.output_dir / self.name


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice is an error instead of a silent win."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark else origin
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b=c``; the value is parsed as YAML (``3`` is an int)."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. train.epochs=30")
    value = parse_yaml(text, f"--set {assignment}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {assignment}: '{section}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config(
    source: str | Path | dict,
    overrides: typing.Sequence[str] = (),
    base_dir: str | Path | None = None,
    check_files: bool = True,
) -> ExperimentConfig:
    """Read, override and validate a config; raise ``ConfigError`` with every problem.

    ``source`` is a YAML file or an already-parsed mapping. Relative paths resolve against
    the file's folder (or ``base_dir``, by default the working directory, for a mapping).
    ``check_files=False`` accepts data paths that do not exist (a run dir moved elsewhere).
    """
    if isinstance(source, dict):
        raw, origin = _deep_copy(source), "config"
        base = Path(base_dir or ".").resolve()
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--config: file not found: {path}")
        raw, origin = parse_yaml(path.read_text(encoding="utf-8"), str(path)), str(path)
        base = Path(base_dir).resolve() if base_dir else path.resolve().parent
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: expected a mapping of sections at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        cfg = ExperimentConfig.model_validate(
            raw, context={"base_dir": base, "check_files": check_files}
        )
    except ValidationError as exc:
        raise ConfigError([f"{origin}: {line}" for line in describe_errors(exc, raw)]) from None
    except ConfigError as exc:
        raise ConfigError([f"{origin}: {line}" for line in exc.problems]) from None
    cfg._base_dir = base
    return cfg


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, in the schema's key order (paths as strings)."""
    raw = cfg.model_dump(mode="json")
    raw["data"] = {"source": raw["data"].pop("source"), **raw["data"]}
    return yaml.safe_dump(raw, sort_keys=False)


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


# --------------------------------------------------------------------------- messages


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def describe_errors(exc: ValidationError, raw: Any) -> list[str]:
    """One line per pydantic error: dotted path, what is wrong, the bad value, a hint."""
    lines = []
    for error in exc.errors(include_url=False):
        path, parent = _walk(error["loc"])
        dotted = ".".join(str(p) for p in path) or "(top level)"
        kind, ctx = error["type"], error.get("ctx") or {}
        given = error.get("input")
        if kind == "extra_forbidden":
            fields = list(parent.model_fields) if parent else []
            key = str(path[-1])
            hint = _did_you_mean(key, fields) or f"; known keys: {', '.join(fields)}"
            lines.append(f"{dotted}: unknown key{hint}")
        elif kind == "missing":
            lines.append(f"{dotted}: required, but not given")
        elif kind == "union_tag_invalid":
            tags = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", "")))
            hint = _did_you_mean(str(ctx.get("tag")), tags)
            lines.append(
                f"{dotted}.source: unknown source '{ctx.get('tag')}'; expected one of "
                f"{', '.join(tags)}{hint}"
            )
        elif kind == "union_tag_not_found":
            lines.append(f"{dotted}.source: required, one of digits, npz, csv, image_dir, python")
        elif kind == "literal_error":
            options = re.findall(r"'([^']+)'", str(ctx.get("expected", "")))
            hint = _did_you_mean(str(given), options)
            lines.append(f"{dotted}: must be one of {', '.join(options)} (got {given!r}){hint}")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{dotted}: {message} (got {_short(given)})")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(loc: tuple) -> tuple[list, type[BaseModel] | None]:
    """Follow a pydantic error location through the schema.

    Returns the user-facing path (without the tags pydantic inserts for tagged unions)
    and the section class that holds the last key, for "did you mean" suggestions.
    """
    path: list = []
    annotation: Any = ExperimentConfig
    parent: type[BaseModel] | None = ExperimentConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        model = _as_model(annotation)
        members = _union_members(annotation)
        if members and isinstance(part, str) and part in members:
            annotation = members[part]  # a tag pydantic put into the location
            continue
        if model is not None:
            parent = model
            field = model.model_fields.get(str(part))
            annotation = field.annotation if field else None
            path.append(part)
            continue
        path.append(part)
        annotation = None
    return path, parent


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _union_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """For a tagged union of sections, map each ``source`` tag to its class."""
    members = {}
    candidates = _flatten(annotation)
    if len(candidates) < 2:
        return {}
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            source = candidate.model_fields.get("source")
            for tag in typing.get_args(source.annotation) if source else ():
                members[tag] = candidate
    return members


def _flatten(annotation: Any) -> list:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin is Union or isinstance(annotation, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _flatten(arg)]
    return [annotation]
