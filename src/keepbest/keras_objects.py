"""The Keras objects a config names: losses, metrics, learning-rate schedules, callbacks.

Each is given one of three ways (``keepbest.config.schema.KerasSpec``):

- a Keras name: ``sparse_categorical_crossentropy``, ``accuracy`` (passed to ``compile``
  as given, so Keras picks the variant that fits the data), ``ReduceLROnPlateau``;
- a Keras config dict, as ``keras.saving.serialize_keras_object`` writes it:
  ``{class_name: CosineDecay, config: {initial_learning_rate: 0.01, decay_steps: 1000}}``;
- ``module:name`` from the config's folder or the installed packages, alone or as the
  ``class_name`` of a dict: a class is made with ``config`` as its kwargs; a loss or
  metric function is used as it is, or, with ``config``, called with those kwargs too
  (a loss through ``functools.partial``, a metric through ``MeanMetricWrapper``); any
  other function is a factory called with them.

Every object is made once up front (``make``), so a bad name or argument is one line
naming its config key before any data is read or file written; the run dir records the
spec (``config.yaml``) and where the code was found (``code.json``), so ``load_best`` and
``evaluate`` make the same objects again.

Example:

    >>> from keepbest.keras_objects import make
    >>> make({"class_name": "CosineDecay",
    ...       "config": {"initial_learning_rate": 0.1, "decay_steps": 10}},
    ...      "schedule", "optimizer.learning_rate")          # doctest: +ELLIPSIS
    <...CosineDecay object at ...>
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal

from keepbest.config import reported_against
from keepbest.config.references import check_kwargs, describe_exception, did_you_mean
from keepbest.config.schema import KerasObject, KerasSpec, keras_spec, spec_name
from keepbest.errors import ConfigError

Kind = Literal["loss", "metric", "schedule", "callback"]

# Names ``compile`` resolves itself, picking the variant that fits the data's shapes.
SHAPE_AWARE = {"metric": ("accuracy", "acc"), "loss": ("crossentropy", "ce")}

# Keras callbacks that keep or restore weights on their own: next to keepbest they
# would keep other weights, judged on other numbers (why, in one line each).
_REFUSED_CALLBACKS = {
    "ModelCheckpoint": "keepbest already saves the best, judged on the saved weights; remove it",
    "BackupAndRestore": "keepbest already resumes runs bit for bit; remove it",
}


def _modules(kind: Kind):
    import keras

    return {
        "loss": keras.losses,
        "metric": keras.metrics,
        "schedule": keras.optimizers.schedules,
        "callback": keras.callbacks,
    }[kind]


def _base(kind: Kind) -> type:
    import keras

    return {
        "loss": keras.losses.Loss,
        "metric": keras.metrics.Metric,
        "schedule": keras.optimizers.schedules.LearningRateSchedule,
        "callback": keras.callbacks.Callback,
    }[kind]


def make(spec: KerasSpec, kind: Kind, where: str, cfg=None) -> Any:
    """The object ``spec`` describes, checked; ``ConfigError`` naming ``where`` if it
    cannot be made. ``cfg`` finds ``module:name`` code (its folder, or where a run found
    it); None: the installed packages only."""
    spec = keras_spec(spec)
    name = spec_name(spec)
    config = spec.config if isinstance(spec, KerasObject) else {}
    if ":" in name:
        target = _resolve(cfg, where, name)
    else:
        if isinstance(spec, str) and kind in ("loss", "metric"):
            return _keras_name(spec, kind, where)
        target = _keras_class(name, kind, where)
    made = _call(target, config, kind, where)
    _check_made(made, kind, where, name)
    return made


def _resolve(cfg, where: str, reference: str) -> Callable:
    from keepbest.config.code import resolve_code
    from keepbest.config.references import resolve_reference

    if cfg is None:
        return resolve_reference(reference, where)
    return resolve_code(cfg, where, reference)


def _keras_name(name: str, kind: Kind, where: str) -> str:
    """``name`` if Keras knows it as a ``kind``; it is passed to ``compile`` as given."""
    module = _modules(kind)
    if name.lower() in SHAPE_AWARE[kind]:
        return name
    try:
        module.get(name)
    except (ValueError, TypeError):
        known = [
            n
            for n in dir(module)
            if n.islower()
            and not n.startswith("_")
            and n not in ("get", "serialize")
            and n != "deserialize"
        ]
        hint = did_you_mean(name, [*known, *SHAPE_AWARE[kind]])
        raise ConfigError(
            f"{where}: unknown Keras {kind} {name!r}{hint} (or 'module:name' for your own)"
        ) from None
    return name


def _keras_class(name: str, kind: Kind, where: str) -> type:
    module, base = _modules(kind), _base(kind)
    found = getattr(module, name, None)
    if inspect.isclass(found) and issubclass(found, base):
        return found
    known = sorted(
        n
        for n in dir(module)
        if inspect.isclass(getattr(module, n))
        and issubclass(getattr(module, n), base)
        and getattr(module, n) is not base
    )
    hint = did_you_mean(name, known) or f"; known: {', '.join(known)}"
    raise ConfigError(
        f"{where}: unknown Keras {kind} class {name!r}{hint} (or 'module:Class' for your own)"
    )


def _call(target: Callable, config: dict[str, Any], kind: Kind, where: str) -> Any:
    import keras

    kwargs_where = f"{where}.config"
    if inspect.isclass(target):
        # Keras' classes take **kwargs only to pass on or to drop (ReduceLROnPlateau drops
        # a misspelt one silently): their named arguments are all there is.
        own = target.__module__.split(".")[0] == "keras"
        check_kwargs(
            target.__init__, config, kwargs_where, name=f"{target.__name__}()", open_ended=not own
        )
        call = lambda: target(**config)  # noqa: E731
    elif kind in ("loss", "metric"):
        if not config:
            return target  # Keras wraps a plain function itself (named after it)
        check_kwargs(target, {"y_true": 0, "y_pred": 0, **config}, kwargs_where)
        name = config.get("name", getattr(target, "__name__", kind))
        rest = {k: v for k, v in config.items() if k != "name"}
        if kind == "metric":
            call = lambda: keras.metrics.MeanMetricWrapper(target, name=name, **rest)  # noqa: E731
        else:  # Keras names a loss function after it: a partial that keeps the name
            call = lambda: functools.update_wrapper(functools.partial(target, **rest), target)  # noqa: E731
    else:
        check_kwargs(target, config, kwargs_where)
        call = lambda: target(**config)  # noqa: E731
    try:
        return call()
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:
        raise ConfigError(
            f"{where}: making {getattr(target, '__name__', target)} failed: "
            f"{describe_exception(exc)}"
        ) from None


def _check_made(made: Any, kind: Kind, where: str, name: str) -> None:
    base = _base(kind)
    if kind in ("loss", "metric") and callable(made):
        return
    if not isinstance(made, base):
        raise ConfigError(
            f"{where}: {name} made a {type(made).__name__}, not a Keras {kind} "
            f"({base.__module__.split('.src')[0]}.{base.__qualname__})"
        )


def refused_callback(callback: Any) -> str | None:
    """Why ``callback`` cannot run next to keepbest (None: it can)."""
    import keras

    for cls in type(callback).__mro__:
        if cls.__name__ in _REFUSED_CALLBACKS and cls.__module__.startswith("keras"):
            return f"{cls.__name__}: {_REFUSED_CALLBACKS[cls.__name__]}"
    if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
        return (
            "EarlyStopping(restore_best_weights=True) keeps a copy of other weights in memory, "
            "judged on the running mean; use checkpoint.patience (keepbest restores the "
            "verified best), or restore_best_weights: false"
        )
    return None


def _sets_scheduled_rate(callback: Any, cfg) -> str | None:
    """A callback that sets the learning rate cannot work with a schedule (Keras refuses
    the assignment after the first epoch: say so before training)."""
    import keras

    schedule = cfg.optimizer.schedule()
    setters = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)
    if schedule is None or not isinstance(callback, setters):
        return None
    return (
        f"{type(callback).__name__} sets the learning rate, but optimizer.learning_rate is "
        f"the schedule {spec_name(schedule)}, which Keras does not let it set; use one of them"
    )


def make_callbacks(cfg, where: str = "train.callbacks") -> list:
    """The config's ``train.callbacks``, new objects each call (one ``fit`` each)."""
    made, problems = [], []
    for index, spec in enumerate(cfg.train.callbacks):
        key = f"{where}[{index}]"
        try:
            callback = make(spec, "callback", key, cfg)
        except ConfigError as exc:
            problems += exc.problems
            continue
        why = refused_callback(callback) or _sets_scheduled_rate(callback, cfg)
        if why:
            problems.append(f"{key}: {why}")
        made.append(callback)
    if problems:
        with reported_against(cfg):
            raise ConfigError(problems)
    return made
