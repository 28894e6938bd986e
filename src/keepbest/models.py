"""The model a config describes: built-in builders, user builders, and compilation.

A builder is any function returning a ``keras.Model``. It receives the config's
``model.kwargs`` and, if its signature asks for them by name, facts about the data:
``input_shape``, ``num_classes`` (None for regression), ``target_shape``, ``class_names``,
and ``config_dir``, the config file's folder (relative paths in its kwargs start there).

Every check that needs Keras (builder arguments, optimizer, loss and metric names) runs
before any model is built or file written, and reports against the config's file.

Example:

    >>> from keepbest.models import mlp
    >>> model = mlp(input_shape=(8, 8, 1), num_classes=10, hidden=[32])   # doctest: +SKIP
    >>> model.output_shape                                                  # doctest: +SKIP
    (None, 10)
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.code import resolve_code
from keepbest.config.references import (
    call_with_supported_kwargs,
    check_kwargs,
    describe_exception,
    did_you_mean,
)
from keepbest.config.schema import BUILDER, BUILTIN_BUILDERS, SCRIPT, OptimizerConfig, spec_name
from keepbest.data.spec import DataSpec
from keepbest.errors import ConfigError, InputError
from keepbest.keras_objects import make

log = logging.getLogger(__name__)

Rate = Annotated[float, Field(ge=0, lt=1)]
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _head(x, num_classes: int | None, target_shape: Sequence[int]):
    import keras

    if num_classes is not None:
        return keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    units = math.prod(target_shape) if target_shape else 1
    x = keras.layers.Dense(units, name="head")(x)
    return keras.layers.Reshape(target_shape)(x) if target_shape else x


def mlp(
    input_shape: Sequence[int],
    num_classes: int | None = None,
    target_shape: Sequence[int] = (),
    hidden: Sequence[int] = (128,),
    dropout: Rate = 0.0,
    activation: str = "relu",
):
    """A multilayer perceptron: flatten, ``hidden`` dense layers with dropout, a head."""
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Flatten()(inputs)
    for units in hidden:
        x = keras.layers.Dense(units, activation=activation)(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, target_shape), name="mlp")


def cnn(
    input_shape: Sequence[int],
    num_classes: int | None = None,
    target_shape: Sequence[int] = (),
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    dense: int = 128,
    dropout: Rate = 0.0,
):
    """A small convnet: conv blocks (conv, relu, 2x2 max-pool when the map allows), a head."""
    import keras

    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"cnn takes images (height, width[, channels]); this data's samples have shape "
            f"{tuple(input_shape)}: use builder mlp"
        )
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    size = min(input_shape[:2])
    for count in filters:
        x = keras.layers.Conv2D(count, kernel_size, padding="same", activation="relu")(x)
        if size >= 4:
            x = keras.layers.MaxPooling2D()(x)
            size //= 2
    x = keras.layers.Flatten()(x)
    if dense:
        x = keras.layers.Dense(dense, activation="relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, target_shape), name="cnn")


_BUILTINS: dict[str, Callable] = {"mlp": mlp, "cnn": cnn}
assert tuple(_BUILTINS) == BUILTIN_BUILDERS


def resolve_builder(cfg: ExperimentConfig) -> Callable:
    """The builder function, with its kwargs checked against its signature (and, for a
    built-in builder, against its argument types)."""
    with reported_against(cfg):
        name = cfg.model.builder
        if name == SCRIPT:
            return _object_builder(cfg)
        builder = _BUILTINS.get(name) or resolve_code(cfg, "model.builder", name)
        offered = [*(f.name for f in dataclasses.fields(DataSpec)), "config_dir"]
        check_kwargs(builder, cfg.model.kwargs, "model.kwargs", offered=offered)
        if builder in _BUILTINS.values():
            _check_types(builder, cfg.model.kwargs)
        return builder


def _object_builder(cfg: ExperimentConfig) -> Callable:
    """``keepbest.train(model=...)``: a ``keras.Model`` as it is, or a builder function."""
    import keras

    given = cfg.script_object("model")
    if given is None:
        raise ConfigError(
            "model.builder: script: the model was given as an object (keepbest.train(model=...) "
            "or KeepBest in a script) and is not in the config; give model= again, or "
            "load the trained one with keepbest.load_best"
        )
    if isinstance(given, keras.Model):
        if cfg.distribute.strategy != "none":
            raise ConfigError(
                f"model: a built keras.Model cannot move into distribute.strategy "
                f"{cfg.distribute.strategy!r}; give model=a function that builds it"
            )
        if cfg.model.kwargs:
            raise ConfigError("model.kwargs: a built keras.Model takes no kwargs; remove them")
        return lambda: given
    if not callable(given):
        raise ConfigError(
            f"model: expected a keras.Model or a function that builds one, "
            f"got {type(given).__name__}"
        )
    offered = [*(f.name for f in dataclasses.fields(DataSpec)), "config_dir"]
    check_kwargs(given, cfg.model.kwargs, "model.kwargs", offered=offered)
    return given


def _check_types(builder: Callable, kwargs: dict[str, Any]) -> None:
    """A built-in builder's kwargs must have its signature's types: a YAML slip then fails
    here, not inside Keras once the run has started."""
    hints = typing.get_type_hints(builder, include_extras=True)
    problems = []
    for key, value in kwargs.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
            bound = first["type"] in _BOUND_ERRORS
            wanted = (
                first["msg"] if bound else f"{builder.__name__}() expects {_expected(hints[key])}"
            )
            problems.append(f"model.kwargs.{key}{where}: {wanted} (got {first['input']!r})")
    if problems:
        raise ConfigError(problems)


def _expected(hint: Any) -> str:
    """A type hint in words: ``Sequence[int]`` is "a list of integers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _expected(args[0])
    if origin in (Sequence, list, tuple):
        return f"a list of {_expected(args[0]).split(' ', 1)[1]}s"
    if args and type(None) in args:
        return " or ".join(_expected(a) for a in args if a is not type(None)) + " or null"
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


@contextlib.contextmanager
def precision_policy(name: str | None):
    """Keras' global dtype policy ``name`` while a model is built (its layers keep it);
    the previous one afterwards. None: the policy as it is."""
    if name is None:
        yield
        return
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def build_model(cfg: ExperimentConfig, spec: DataSpec, builder: Callable | None = None):
    """Build (not compile) the configured model; a failing builder is a ``ConfigError``."""
    import keras

    with reported_against(cfg):
        builder = builder or resolve_builder(cfg)
        offered = {**dataclasses.asdict(spec), "config_dir": cfg.base_dir}
        try:
            with precision_policy(cfg.train.mixed_precision):
                model = call_with_supported_kwargs(
                    builder, cfg.model.kwargs, offered, "model.kwargs"
                )
        except InputError:
            raise
        except (Exception, SystemExit) as exc:
            raise ConfigError(
                f"model.builder: {cfg.model.builder} failed: {describe_exception(exc)}"
            ) from None
        if not isinstance(model, keras.Model):
            raise ConfigError(
                f"model.builder: {cfg.model.builder} returned {type(model).__name__}, "
                "not a keras.Model"
            )
    if not model.built:
        model.build((None, *spec.input_shape))
    return model


@dataclasses.dataclass
class CompileArgs:
    """How the configured model is compiled: new Keras objects for each model (metrics
    hold state), all of them made once up front by ``compile_args`` to check them."""

    cfg: ExperimentConfig
    make_optimizer: Callable[[], Any] | None  # in its strategy scope; None: the builder's

    def apply(self, model) -> None:
        if self.make_optimizer is None:
            return  # the builder compiled the model, and the config keeps its compile
        cfg = self.cfg
        with reported_against(cfg):
            loss = make(cfg.loss, "loss", "loss", cfg)
            metrics = [make(m, "metric", f"metrics[{i}]", cfg) for i, m in enumerate(cfg.metrics)]
        model.compile(optimizer=self.make_optimizer(), loss=loss, metrics=metrics)


def compile_args(cfg: ExperimentConfig) -> CompileArgs:
    """Keras objects for compile, checked by name and signature before any model exists
    (each problem one line; all of them at once)."""
    import keras

    with reported_against(cfg):
        if cfg.compiled_by_model:
            return CompileArgs(cfg, None)
        problems: list[str] = []
        optimizer = _collect(problems, _optimizer, cfg, keras)
        _collect(problems, make, cfg.loss, "loss", "loss", cfg)
        for i, metric in enumerate(cfg.metrics):
            _collect(problems, make, metric, "metric", f"metrics[{i}]", cfg)
        if problems:
            raise ConfigError(problems)
    return CompileArgs(cfg, optimizer)


def compile_model(cfg: ExperimentConfig, model, args: CompileArgs) -> None:
    """Compile ``model`` as configured. A builder that compiled its model keeps that
    compile when the config sets no optimizer, loss or metrics (``cfg`` then records
    ``builder`` for them); a config that sets any of them replaces it, and says so."""
    if not getattr(model, "compiled", False) or cfg.compiled_by_model:
        args.apply(model)
        return
    given = [key for key in ("optimizer", "loss", "metrics") if key in cfg.model_fields_set]
    if not given:
        cfg.optimizer = OptimizerConfig(name=BUILDER, learning_rate=None)
        cfg.loss, cfg.metrics = BUILDER, []
        return
    loss = getattr(model.loss, "__name__", None) or getattr(model.loss, "name", model.loss)
    log.warning(
        "%s: %s compiled its model (optimizer %s, loss %s); the config sets %s, so the "
        "config's compile replaces the builder's (optimizer %s, loss %s): set optimizer, "
        "loss and metrics in the config, or none of them",
        cfg.origin,
        cfg.model.builder,
        type(model.optimizer).__name__,
        loss,
        " and ".join(given),
        cfg.optimizer.name,
        spec_name(cfg.loss),
    )
    args.apply(model)


def _collect(problems: list[str], check: Callable, *args) -> Any:
    """Run ``check``; add its problems to ``problems`` (so all are reported at once)."""
    try:
        return check(*args)
    except ConfigError as exc:
        problems += exc.problems
        return None


def _optimizer(cfg: ExperimentConfig, keras):
    name = cfg.optimizer.name
    try:
        cls = type(keras.optimizers.get(name))
    except ValueError:
        known = _public_names(keras.optimizers, keras.optimizers.Optimizer)
        hint = did_you_mean(name.lower(), known) or f"; known: {', '.join(known)}"
        raise ConfigError(f"optimizer.name: unknown Keras optimizer {name!r}{hint}") from None
    kwargs = cfg.optimizer.kwargs()
    # Keras optimizers take **kwargs only to reject unknown names: check them here.
    check_kwargs(cls.__init__, kwargs, "optimizer", name=cls.__name__, open_ended=False)
    schedule = cfg.optimizer.schedule()

    def made():
        rate = {}
        if schedule is not None:  # a new schedule object per optimizer
            rate = {"learning_rate": make(schedule, "schedule", "optimizer.learning_rate", cfg)}
        return cls(**{**kwargs, **rate})

    try:
        made()  # fails now, on bad values, rather than after the data is loaded
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {cls.__name__}({kwargs}) failed: {exc}") from None
    return made


def _public_names(module, base: type) -> list[str]:
    return sorted(
        n.lower()
        for n in dir(module)
        if inspect.isclass(getattr(module, n)) and issubclass(getattr(module, n), base)
    )
