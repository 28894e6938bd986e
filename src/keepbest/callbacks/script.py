"""What a plain script's ``fit`` tells ``keepbest.KeepBest`` about its run.

A script gives keepbest a compiled model and whatever it passes to ``fit``; the run dir
still gets what ``keepbest.train`` writes, made from those objects:

- ``config.yaml``: the callback's settings, ``train.epochs`` and ``steps_per_epoch`` from
  ``fit``, and ``data.source``/``model.builder``/``loss`` recorded as ``script`` (the
  objects cannot be rebuilt from a config: ``evaluate`` then needs ``--data``); the
  optimizer's class and Keras config, so a resume with another optimizer is refused;
- ``model.json`` with Keras' compile config (``load_best`` compiles from it, custom
  losses and layers once their module is imported);
- ``data_spec.json``: what can be known, the model's input shape and dtype.

The monitor is measured on exactly the weights judged: ``val_*`` on fit's own validation
data, through Keras' cached validation iterator (the very batches of fit's pass), or on
``validation_data``; a training-set monitor on ``train_data``. Arrays given as
``(x, y, w)`` are measured with ``w`` as sample weights, as ``fit(x, y, sample_weight=w)``
counts them.

Example:

    >>> setup = script_setup(callback)       # doctest: +SKIP
    >>> setup.cfg.data.source, setup.steps_per_epoch  # doctest: +SKIP
    ('script', 23)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from keepbest.callbacks.session import RunSetup
from keepbest.cluster.distribute import Distribution
from keepbest.config.schema import SCRIPT, ExperimentConfig
from keepbest.data.fingerprint import SCRIPT_FIX
from keepbest.data.spec import DataSpec
from keepbest.data.weights import sample_weights
from keepbest.errors import ConfigError, MonitorError
from keepbest.measure import FitValidation, MeasureData
from keepbest.monitor import Monitor, compiled_metric_names

log = logging.getLogger("keepbest.training")

EVAL_BATCH_SIZE = 32  # Keras' default batch size, for arrays given as train_data


def script_setup(callback) -> RunSetup:
    """The ``RunSetup`` of a plain ``fit`` with ``callback`` (a ``KeepBest``)."""
    model, params = callback.model, callback.params
    steps = params.get("steps")
    if not steps:
        raise ConfigError(
            "KeepBest: fit does not know how many steps an epoch has (a dataset of unknown "
            "length); pass steps_per_epoch to fit, or a dataset with a known length"
        )
    names = compiled_metric_names(model)
    monitor = Monitor(callback.checkpoint.monitor, "min")
    if names and monitor.metric not in names:
        prefix = "val_" if monitor.on_validation else ""
        raise MonitorError(
            f"KeepBest: monitor {monitor.name!r} is not logged by this model; it logs "
            f"{', '.join(prefix + name for name in names)}"
        )
    data = MeasureData(
        validation=_dataset(callback.validation_data, "validation_data")
        if callback.validation_data is not None
        else FitValidation(model),
        train_eval=_dataset(callback.train_data, "train_data", callback.checkpoint),
    )
    cfg = _config(callback, int(steps), int(params.get("epochs") or 1), (names or ["loss"])[1:])
    return RunSetup(
        cfg=cfg,
        spec=_spec(model),
        data=data,
        steps_per_epoch=int(steps),
        distribution=Distribution.of_model(model),
        fingerprint=None,
        data_name="the data given to fit",
        data_fix=SCRIPT_FIX,
        listeners=[],
        rerun="run the same script to resume",
        fresh="use the original model and settings, or another run_dir",
        compare_architecture=True,
    )


def _dataset(data: Any, name: str, checkpoint=None):
    """``data`` as a finite batched dataset ``model.evaluate`` takes: a dataset as it is,
    arrays ``(x, y)`` or ``(x, y, w)`` (sample weights) in batches of Keras' default
    size."""
    if data is None:
        return None
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        if data.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ConfigError(
                f"KeepBest: {name} repeats forever, so measuring on it would never end; "
                "remove its .repeat() (or take a finite part of it)"
            )
        dataset = data
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        parts, weights = tuple(data[:2]), data[2] if len(data) == 3 else None
        try:
            if weights is not None:
                parts += (sample_weights(weights, len(parts[1]), f"KeepBest: {name}'s w"),)
            dataset = tf.data.Dataset.from_tensor_slices(parts).batch(EVAL_BATCH_SIZE)
        except (ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(
                f"KeepBest: {name} must be (x, y) or (x, y, w) arrays of the same length, or "
                f"a finite tf.data.Dataset ({first})"
            ) from None
    else:
        raise ConfigError(
            f"KeepBest: {name} must be (x, y) or (x, y, w) arrays, or a finite "
            f"tf.data.Dataset, got {type(data).__name__}"
        )
    steps = checkpoint.train_eval_steps if checkpoint is not None else None
    return dataset.take(steps) if steps is not None else dataset


def _optimizer_record(model) -> dict[str, Any]:
    optimizer = model.optimizer
    try:
        config = json.loads(json.dumps(optimizer.get_config(), default=_plain))
    except (TypeError, ValueError, NotImplementedError):
        config = {}
    config.pop("name", None)
    return {
        "name": SCRIPT,
        "learning_rate": None,
        "class": type(optimizer).__name__,
        "config": config,
    }


def _plain(value: Any) -> Any:
    try:
        return value.item()
    except AttributeError:
        return repr(value)


def _config(callback, steps: int, epochs: int, metrics: list[str]) -> ExperimentConfig:
    run_dir = callback.run_dir.resolve()
    raw = {
        "name": run_dir.name,
        "output_dir": str(run_dir.parent),
        "data": {"source": SCRIPT, "description": "the data given to fit"},
        "model": {"builder": SCRIPT},
        "optimizer": _optimizer_record(callback.model),
        "loss": SCRIPT,
        "metrics": metrics,
        "train": {"epochs": epochs, "steps_per_epoch": steps},
        "checkpoint": callback.checkpoint.model_dump(),
        "resume": callback.resume_settings.model_dump(),
    }
    try:
        cfg = ExperimentConfig.model_validate(raw, context={"base_dir": run_dir.parent})
    except Exception as exc:
        raise ConfigError(f"KeepBest: run_dir: {str(exc).splitlines()[0]}") from None
    cfg._origin = "KeepBest"
    return cfg


def _spec(model) -> DataSpec:
    """What can be known of the data from the model alone."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, RuntimeError):
        shape = None
    input_shape = tuple(shape[1:]) if isinstance(shape, tuple) and shape else ()
    try:
        output = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        output = None
    target = tuple(output[1:]) if isinstance(output, tuple) and output else ()
    loss = str(getattr(model, "loss", "") or "")
    classes = None
    if "categorical" in loss and target and target[-1]:
        classes, target = int(target[-1]), ()
    dtype = None
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        dtype = str(getattr(inputs[0], "dtype", "") or "") or None
    return DataSpec(
        input_shape=input_shape, num_classes=classes, target_shape=target, raw_dtype=dtype
    )
