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

import contextlib
import difflib
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator

from keepbest.errors import ConfigError
from keepbest.references import did_you_mean

BUILTIN_BUILDERS = ("mlp", "cnn")
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


def _existing_file(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and not resolved.is_file():
        what = "is a folder, not a file" if resolved.is_dir() else "file not found"
        raise ValueError(f"{what}: {resolved}")
    return resolved


def _existing_dir(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and not resolved.is_dir():
        what = "is a file, not a folder" if resolved.is_file() else "folder not found"
        raise ValueError(f"{what}: {resolved}")
    return resolved


def _output_dir(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if _checking_files(info) and resolved.is_file():
        raise ValueError(f"is a file, not a folder: {resolved}")
    return resolved


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
ExistingDir = Annotated[Path, AfterValidator(_existing_dir)]
OutputDir = Annotated[Path, AfterValidator(_output_dir)]
Count = Annotated[StrictInt, Field(gt=0)]  # strict: YAML's `true` is not 1 epoch


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
    batch_size: Count = 32
    shuffle: bool = True

    def validation_path_kind(self) -> str:
        return "file"


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


class CsvData(_DataBase):
    source: Literal["csv"]
    path: ExistingFile
    target: str
    features: list[str] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)


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
        hint = did_you_mean(value, BUILTIN_BUILDERS)
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
    epochs: Count = 10
    steps_per_epoch: Count | None = None


class CheckpointConfig(Section):
    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"
    min_delta: float = Field(0.0, ge=0)
    patience: Count | None = None
    start_from_epoch: StrictInt = Field(0, ge=0)
    baseline: float | None = None
    stop_on_nonfinite: bool = True
    verify_tolerance: float | None = Field(None, ge=0)
    # bounds a training-set monitor's end-of-epoch pass (and its verification) to the
    # first N batches of the fixed-order training data; None: the whole training set
    train_eval_steps: Count | None = None

    @field_validator("monitor")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w]*$", value):
            raise ValueError("expected a metric name such as 'val_loss' or 'accuracy'")
        return value


class ResumeConfig(Section):
    """How a run reacts to interruption (see keepbest.signals and keepbest.resume_state)."""

    signals: list[Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP"]] = Field(
        default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"]
    )
    requeue: bool | Literal["auto"] = "auto"  # auto: under Slurm (SLURM_JOB_ID is set)


class DistributeConfig(Section):
    """tf.distribute settings (see keepbest.distribute)."""

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    logical_cpus: int | None = Field(None, ge=2)  # mirrored: split the CPU into N devices
    connect_timeout: float = Field(120.0, gt=0)  # multi_worker: seconds to wait for peers
    collective_timeout: float = Field(600.0, gt=0)  # multi_worker: seconds per collective
    port_base: int = Field(8888, ge=1024, le=65535)  # multi_worker under Slurm

    @model_validator(mode="after")
    def _cpus_only_for_mirrored(self) -> DistributeConfig:
        if self.logical_cpus is not None and self.strategy != "mirrored":
            raise ValueError("logical_cpus applies to strategy: mirrored only")
        return self


class LoggingConfig(Section):
    """Extra logs in the run dir (``history.csv`` is always written)."""

    tensorboard: bool = False  # TensorBoard event files in run_dir/tensorboard


class ExperimentConfig(Section):
    name: str
    output_dir: OutputDir = Path("runs")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: str = "sparse_categorical_crossentropy"
    metrics: list[str] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    resume: ResumeConfig = Field(default_factory=ResumeConfig)
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _origin: str = PrivateAttr(default="config")

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths and 'module:function' refs start here."""
        return self._base_dir

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
        if validation is not None and validation.path is not None:
            kind = self.data.validation_path_kind()
            check = _existing_dir if kind == "folder" else _existing_file
            try:
                validation.path = check(validation.path, info)
            except ValueError as exc:
                problems.append(f"data.validation.path: {exc} (got {str(validation.path)!r})")
        has_validation = validation is not None or self.data.source == "python"
        monitor = self.checkpoint.monitor
        if monitor.startswith("val_") and not has_validation:
            problems.append(
                f"checkpoint.monitor: '{monitor}' needs validation data; set data.validation "
                f"(e.g. {{split: 0.2}}) or monitor '{monitor[4:]}'"
            )
        known = ["loss", *self.metrics]
        if monitor.removeprefix("val_") not in known:
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


# --------------------------------------------------------------------------- loading


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(node: yaml.Node, path: str = "", seen: set | None = None) -> list[str]:
    """``a.b: given twice ...`` for each key that one mapping repeats (YAML keeps the last)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already checked
        return []
    seen.add(id(node))
    problems = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{path}.{key}" if path else key
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                line = key_node.start_mark.line + 1
                if key in first_line:
                    problems.append(
                        f"{dotted}: key given twice (lines {first_line[key]} and {line}); keep one"
                    )
                first_line.setdefault(key, line)
            problems += _duplicate_keys(value_node, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, f"{path}[{index}]", seen)
    return problems


def _load_yaml(text: str) -> tuple[Any, list[str]]:
    """The document and its duplicate-key problems; ``yaml.YAMLError`` if it is not YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        problems = _duplicate_keys(node)
        return (None if problems else loader.construct_document(node)), problems
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}invalid YAML: {problem}"


def parse_yaml(text: str, origin: str) -> Any:
    """Parse one YAML document; ``ConfigError`` on a syntax error or a repeated key."""
    try:
        raw, problems = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: {_yaml_problem(exc)}") from None
    if problems:
        raise ConfigError([f"{origin}: {line}" for line in problems])
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b=c``; the value is parsed as YAML (``3`` is an int).

    Missing sections on the way are created (and then validated like any other key).
    """
    key, sep, text = assignment.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        where = key if key and all(parts) else "--set"
        raise ConfigError(
            f"{where}: --set {assignment!r} is not KEY=VALUE, e.g. --set train.epochs=30"
        )
    value = parse_yaml(text, f"{key}: --set value {text!r}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{key}: cannot --set inside '{section}': it is a value "
                f"({_short(child)}), not a section"
            )
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
    Every problem line starts with the file's name (``config`` for a mapping).
    """
    if isinstance(source, dict):
        raw, origin = _deep_copy(source), "config"
        base = Path(base_dir or ".").resolve()
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"{origin}: config file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{origin}: cannot read the config file ({exc})") from None
        raw = parse_yaml(text, origin)
        base = Path(base_dir).resolve() if base_dir else path.resolve().parent
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{origin}: expected a mapping of sections (name, data, ...) at the top level, "
                f"got {type(raw).__name__}"
            )
    problems = []
    for assignment in overrides:
        try:
            apply_override(raw, assignment)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError([f"{origin}: {line}" for line in problems])
    try:
        cfg = ExperimentConfig.model_validate(
            raw, context={"base_dir": base, "check_files": check_files}
        )
    except ValidationError as exc:
        raise ConfigError([f"{origin}: {line}" for line in describe_errors(exc)]) from None
    except ConfigError as exc:
        raise ConfigError([f"{origin}: {line}" for line in exc.problems]) from None
    cfg._base_dir = base
    cfg._origin = origin
    return cfg


@contextlib.contextmanager
def reported_against(cfg: ExperimentConfig) -> Iterator[None]:
    """Prefix ``ConfigError``s raised inside with the config's file, as ``load_config`` does.

    Used around the checks that need Keras or the data (builder, optimizer, files'
    contents), so that every problem a config causes reads ``<file>: <dotted path>: ...``.
    """
    try:
        yield
    except ConfigError as exc:
        if getattr(exc, "origin", None) is not None:  # already located by an inner block
            raise
        located = type(exc)([f"{cfg.origin}: {line}" for line in exc.problems])
        located.origin = cfg.origin
        raise located from None


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

# What a member of a plain (untagged) union expects, by the first word of its error type.
_EXPECTED = {
    "bool": ["true", "false"],
    "int": ["an integer"],
    "float": ["a number"],
    "string": ["a string"],
    "list": ["a list"],
    "dict": ["a mapping"],
}


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem: dotted path, what is wrong, the bad value, a hint.

    The errors pydantic reports for each member of a plain union (``true``, ``false`` or
    ``'auto'``) are one problem, so they become one line.
    """
    entries: list[str | list[dict]] = []
    unions: dict[str, list[dict]] = {}
    for error in exc.errors(include_url=False):
        path, parent, in_union = _walk(error["loc"])
        dotted = _dotted(path)
        if not in_union:
            entries.append(_describe(dotted, path, parent, error))
        elif dotted in unions:
            unions[dotted].append(error)
        else:
            unions[dotted] = [error]
            entries.append(unions[dotted])
    return [e if isinstance(e, str) else _describe_union(e) for e in entries]


def _describe(dotted: str, path: list, parent: type[BaseModel] | None, error: dict) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return f"{dotted}: unknown key{_unknown_key_hint(str(path[-1]), parent)}"
    if kind == "missing":
        return f"{dotted}: required, but not given"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", "")))
        hint = did_you_mean(str(ctx.get("tag")), tags)
        return (
            f"{dotted}.source: unknown source {ctx.get('tag')!r}; expected one of "
            f"{', '.join(tags)}{hint}"
        )
    if kind == "union_tag_not_found":
        return f"{dotted}.source: required, one of {', '.join(_data_sources())}"
    if kind == "literal_error":
        options = re.findall(r"'([^']+)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(given), options)
        return f"{dotted}: must be one of {', '.join(options)} (got {given!r}){hint}"
    message, sep, hint = str(error["msg"]).removeprefix("Value error, ").partition("; did you")
    return f"{dotted}: {message} (got {_short(given)}){sep}{hint}"


def _describe_union(errors: list[dict]) -> str:
    path, _, _ = _walk(errors[0]["loc"])
    options: list[str] = []
    for error in errors:
        if error["type"] == "literal_error":
            expected = str((error.get("ctx") or {}).get("expected", ""))
            options += [f"'{o}'" for o in re.findall(r"'([^']+)'", expected)]
        else:
            options += _EXPECTED.get(error["type"].split("_")[0], [str(error["msg"])])
    given = errors[0].get("input")
    hint = did_you_mean(str(given), [o.strip("'") for o in options])
    choices = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]
    return f"{_dotted(path)}: must be {choices} (got {_short(given)}){hint}"


def _unknown_key_hint(key: str, parent: type[BaseModel] | None) -> str:
    """The data source that has this key, a near-miss in the same section, the section
    that has a key like it, or else the known keys."""
    fields = list(parent.model_fields) if parent else []
    sources = _data_sources()
    if parent in sources.values():
        owners = [tag for tag, cls in sources.items() if key in cls.model_fields]
        if owners:
            return f"; {key!r} is a key of source {' or '.join(owners)}, not of this source"
    hint = did_you_mean(key, fields)
    if hint:
        return hint
    elsewhere = {
        f"{section}.{name}": name
        for section, cls in _sections().items()
        if cls is not parent
        for name in cls.model_fields
    }
    close = difflib.get_close_matches(key, list(elsewhere.values()), n=1)
    if close:
        found = next(dotted for dotted, name in elsewhere.items() if name == close[0])
        return f"; did you mean '{found}'?"
    return f"; known keys: {', '.join(fields)}"


def _sections() -> dict[str, type[BaseModel]]:
    """Every section of the schema by its dotted name (each data source's as ``data``)."""
    found: dict[str, type[BaseModel]] = {"": ExperimentConfig}
    for name, field in ExperimentConfig.model_fields.items():
        model = _as_model(field.annotation)
        if model is not None and name != "data":
            found[name] = model
    found["data.validation"] = ValidationData
    return found | {f"data[{tag}]": cls for tag, cls in _data_sources().items()}


def _data_sources() -> dict[str, type[BaseModel]]:
    return _union_members(ExperimentConfig.model_fields["data"].annotation)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(path: list) -> str:
    """``data.validation.split``, with list positions as ``metrics[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _walk(loc: tuple) -> tuple[list, type[BaseModel] | None, bool]:
    """Follow a pydantic error location through the schema.

    Returns the user-facing path (without the tags pydantic inserts for unions), the
    section class that holds the last key (for "did you mean"), and whether the error
    is one member's of a plain union (one of several errors for the same value).
    """
    path: list = []
    annotation: Any = ExperimentConfig
    parent: type[BaseModel] | None = ExperimentConfig
    in_union = False
    for part in loc:
        members = _union_members(annotation)
        if members and isinstance(part, str) and part in members:
            annotation = members[part]  # a data source's tag
            continue
        model = _as_model(annotation)
        if model is not None:
            parent = model
            field = model.model_fields.get(str(part))
            annotation = field.annotation if field else None
            path.append(part)
        elif len(_flatten(annotation)) > 1 and isinstance(part, str):
            in_union, annotation = True, None  # the name of the member pydantic tried
        else:
            path.append(part)
            annotation = None
    return path, parent, in_union


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
