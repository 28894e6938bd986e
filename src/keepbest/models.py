"""The model a config describes: built-in builders, user builders, and compilation.

A builder is any function returning a ``keras.Model``. It receives the config's
``model.kwargs`` and, if its signature asks for them by name, facts about the data:
``input_shape``, ``num_classes`` (None for regression), ``target_shape``, ``class_names``.

Example:

    >>> from keepbest.models import mlp
    >>> model = mlp(input_shape=(8, 8, 1), num_classes=10, hidden=[32])   # doctest: +SKIP
    >>> model.output_shape                                                  # doctest: +SKIP
    (None, 10)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from keepbest.config import BUILTIN_BUILDERS, ExperimentConfig
from keepbest.data import DataSpec
from keepbest.errors import ConfigError
from keepbest.references import call_with_supported_kwargs, check_kwargs, resolve_reference


def _head(x, num_classes: int | None, target_shape: tuple[int, ...]):
    import keras

    if num_classes is not None:
        return keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    units = math.prod(target_shape) if target_shape else 1
    x = keras.layers.Dense(units, name="head")(x)
    return keras.layers.Reshape(target_shape)(x) if target_shape else x


def mlp(
    input_shape: tuple[int, ...],
    num_classes: int | None = None,
    target_shape: tuple[int, ...] = (),
    hidden: Sequence[int] = (128,),
    dropout: float = 0.0,
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
    input_shape: tuple[int, ...],
    num_classes: int | None = None,
    target_shape: tuple[int, ...] = (),
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    dense: int = 128,
    dropout: float = 0.0,
):
    """A small convnet: conv blocks (conv, relu, 2x2 max-pool when the map allows), a head."""
    import keras

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
    """The builder function, with its kwargs checked against its signature."""
    name = cfg.model.builder
    builder = _BUILTINS.get(name) or resolve_reference(name, "model.builder", cfg.base_dir)
    check_kwargs(builder, cfg.model.kwargs, "model.kwargs")
    return builder


def build_model(cfg: ExperimentConfig, spec: DataSpec, builder: Callable | None = None):
    """Build (not compile) the configured model; a failing builder is a ``ConfigError``."""
    import keras

    builder = builder or resolve_builder(cfg)
    offered = dataclasses.asdict(spec)
    try:
        model = call_with_supported_kwargs(builder, cfg.model.kwargs, offered, "model.kwargs")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"model.builder: {cfg.model.builder} failed with {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"model.builder: {cfg.model.builder} returned {type(model).__name__}, not a keras.Model"
        )
    if not model.built:
        model.build((None, *spec.input_shape))
    return model


@dataclasses.dataclass
class CompileArgs:
    optimizer: Any
    loss: Any
    metrics: list[Any]

    def apply(self, model) -> None:
        model.compile(optimizer=self.optimizer, loss=self.loss, metrics=self.metrics)


def compile_args(cfg: ExperimentConfig) -> CompileArgs:
    """Keras objects for compile, checked by name and signature before any model exists."""
    import keras

    return CompileArgs(
        optimizer=_optimizer(cfg, keras),
        loss=_keras_object(keras.losses, cfg.loss, "loss", "loss"),
        metrics=[
            _keras_object(keras.metrics, name, f"metrics[{i}]", "metric")
            for i, name in enumerate(cfg.metrics)
        ],
    )


def _optimizer(cfg: ExperimentConfig, keras):
    name = cfg.optimizer.name
    try:
        cls = type(keras.optimizers.get(name))
    except ValueError:
        known = _public_names(keras.optimizers, keras.optimizers.Optimizer)
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
        raise ConfigError(f"optimizer.name: unknown Keras optimizer {name!r}{hint}") from None
    kwargs = cfg.optimizer.kwargs()
    check_kwargs(cls.__init__, kwargs, "optimizer")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {cls.__name__}({kwargs}) failed: {exc}") from None


def _keras_object(module, name: str, where: str, kind: str):
    try:
        module.get(name)
    except ValueError:
        known = [n for n in dir(module) if n.islower() and not n.startswith("_")]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: unknown Keras {kind} {name!r}{hint}") from None
    return name


def _public_names(module, base: type) -> list[str]:
    return sorted(
        n.lower()
        for n in dir(module)
        if inspect.isclass(getattr(module, n)) and issubclass(getattr(module, n), base)
    )
