"""Measuring the monitor on exactly the current weights, and verifying a reloaded best.

The one place that measures. The checkpoint callback calls ``measure_point`` to judge a
candidate, the post-training verification and ``keepbest evaluate`` call ``measure``, and
all of them measure the same way:

- a ``val_*`` monitor: a validation pass (``model.evaluate``) over the fixed-order
  validation data; at an epoch end Keras' own validation pass has just done exactly that
  on the same weights, and its values are used as they are;
- a training-set monitor: a pass in inference mode over the fixed-order training data,
  bounded to ``checkpoint.train_eval_steps`` batches (``Pipelines.train_eval``), logged
  as ``epoch_end_<metric>``;
- with an optimizer's ``use_ema``, on the moving-average weights (``deployed_weights``):
  what fit leaves in the model at its end and what a user deploys; they are measured by
  a pass of keepbest's own and saved as the best.

``evaluate`` is bit-reproducible on CPU, so a reloaded best must give exactly its recorded
value there; with a GPU, ``tolerance`` allows a relative 1e-5 (``values_match``), or what
``checkpoint.verify_tolerance`` says.

Example:

    >>> from keepbest.measure import values_match
    >>> values_match(0.0717901, 0.0717901, 0.0), values_match(0.07179, 0.0717901, 1e-5)
    (True, True)
    >>> values_match(0.0717, 0.0717901, 1e-5), values_match(1e-9, 0.0, 1e-5)
    (False, False)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

from keepbest.errors import MonitorError, VerificationError
from keepbest.monitor import EPOCH_END_PREFIX, VALIDATION_PREFIX, Monitor

GPU_TOLERANCE = 1e-5  # relative: GPU kernels may reduce in another order between runs


@dataclasses.dataclass(frozen=True)
class MeasureData:
    """The passes a monitor is measured on: fixed-order validation data (or None) and the
    bounded fixed-order pass over the training data."""

    validation: Any | None
    train_eval: Any

    @classmethod
    def from_pipelines(cls, pipelines) -> MeasureData:
        return cls(pipelines.validation, pipelines.train_eval)

    def for_monitor(self, monitor: Monitor):
        return self.validation if monitor.on_validation else self.train_eval


class FitValidation:
    """The validation data a script gave ``fit`` (``keepbest.KeepBest``): measured again
    through Keras' own cached validation iterator, the very batches of fit's epoch-end
    pass, captured at the first epoch end that validated."""

    def __init__(self, model):
        self.model = model
        self.iterator = None

    def capture(self) -> None:
        found = getattr(self.model, "_eval_epoch_iterator", None)
        if found is not None:
            self.iterator = found

    def evaluate(self, model) -> dict:
        if self.iterator is None:
            raise MonitorError(
                "KeepBest: no validation pass was seen to measure a val_* monitor on: give "
                "fit validation_data, or KeepBest(validation_data=...)"
            )
        before = getattr(model, "_eval_epoch_iterator", None)
        model._eval_epoch_iterator = self.iterator
        try:
            return model.evaluate(verbose=0, return_dict=True, _use_cached_eval_dataset=True)
        finally:
            model._eval_epoch_iterator = before


def evaluate_metrics(model, data) -> dict[str, float]:
    """Every compiled metric of ``model`` on ``data``, in inference mode, by name."""
    if isinstance(data, FitValidation):
        results = data.evaluate(model)
    else:
        results = model.evaluate(data, verbose=0, return_dict=True)
    return {name: float(value) for name, value in results.items()}


def measure(model, monitor: Monitor, data: MeasureData) -> float:
    """The monitored value of the model's current weights, measured as during training."""
    values = evaluate_metrics(model, data.for_monitor(monitor))
    if monitor.metric not in values:
        raise MonitorError(
            f"checkpoint.monitor: {monitor.name!r} is not logged by this run; "
            f"it logs {', '.join(sorted(values))}"
        )
    return values[monitor.metric]


def measure_point(
    model, monitor: Monitor, data: MeasureData, logs: dict[str, float], own_pass: bool = False
) -> dict[str, float]:
    """The values a checkpoint decision needs, measured on the current weights, as log
    keys to add to ``logs``: ``epoch_end_*`` of every metric for a training-set monitor;
    for a validation monitor, ``val_*`` of every metric unless Keras' own validation pass
    has just put them in ``logs`` (at epoch ends) and ``own_pass`` is False (it is True
    when the weights judged are not the ones fit validated: ``deployed_weights``)."""
    measured: dict[str, float] = {}
    validated = any(key.startswith(VALIDATION_PREFIX) for key in logs)
    if validated and isinstance(data.validation, FitValidation):
        data.validation.capture()  # fit's own pass: the batches a verification reuses
    if not monitor.on_validation:
        values = evaluate_metrics(model, data.train_eval)
        measured = {EPOCH_END_PREFIX + name: value for name, value in values.items()}
    elif own_pass or not validated:
        values = evaluate_metrics(model, data.validation)
        measured = {VALIDATION_PREFIX + name: value for name, value in values.items()}
    if monitor.log_key not in {**logs, **measured}:
        available = sorted(k for k in {**logs, **measured} if not k.startswith(EPOCH_END_PREFIX))
        raise MonitorError(
            f"checkpoint.monitor: {monitor.name!r} is not logged by this run; "
            f"it logs {', '.join(available)}"
        )
    return measured


def _ema_optimizer(model):
    """The optimizer that keeps an exponential moving average of the weights
    (``use_ema=True``; inside a ``LossScaleOptimizer`` too), or None."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer if getattr(optimizer, "use_ema", False) else None


def uses_ema(model) -> bool:
    """Whether the model's optimizer keeps moving averages of the weights."""
    return _ema_optimizer(model) is not None


@contextlib.contextmanager
def deployed_weights(model):
    """Inside: the model holds the weights a user deploys. With ``use_ema`` those are the
    optimizer's moving averages (what Keras' fit leaves in the model when it ends), so
    they are swapped in for measuring and saving, and swapped back after, one variable
    at a time, bit for bit; training goes on with its own weights. Yields whether it
    swapped."""
    optimizer = _ema_optimizer(model)
    if optimizer is None:
        yield False
        return
    variables = model.trainable_variables
    averages = optimizer._model_variables_moving_average  # built with these, in order
    if len(averages) != len(variables) or any(
        tuple(a.shape) != tuple(v.shape) for a, v in zip(averages, variables, strict=True)
    ):
        raise MonitorError(
            "the optimizer's moving averages (use_ema) do not match the model's trainable "
            "variables; keepbest cannot tell which weights to judge"
        )
    _swap(variables, averages)
    try:
        yield True
    finally:
        _swap(variables, averages)


def _swap(variables, averages) -> None:
    import numpy as np

    for variable, average in zip(variables, averages, strict=True):
        held = np.array(variable)  # one variable's copy at a time
        variable.assign(average)
        average.assign(held)


def default_tolerance() -> float:
    """Exact on CPU (evaluate is bit-reproducible there); relative 1e-5 with a GPU."""
    import tensorflow as tf

    return GPU_TOLERANCE if tf.config.list_physical_devices("GPU") else 0.0


def tolerance(configured: float | None) -> float:
    """``checkpoint.verify_tolerance`` if set, else the default for this machine."""
    return configured if configured is not None else default_tolerance()


def values_match(measured: float, recorded: float, tolerance: float) -> bool:
    """Whether a value measured again reproduces the recorded one: exactly, or within
    ``tolerance`` relative to the recorded value (no absolute slack: 1e-5 of 0.07 is
    7e-7, not 1e-5)."""
    if tolerance == 0.0:
        return measured == recorded
    return math.isclose(measured, recorded, rel_tol=tolerance, abs_tol=0.0)


def verify_best(model, run_dir, record, monitor: Monitor, data: MeasureData, tolerance: float):
    """Load the run's best checkpoint into ``model`` (checksum first) and measure the
    monitor again; ``VerificationError`` unless it reproduces the recorded value.
    Returns the value measured."""
    from keepbest.checkpoint import load_best_weights

    weights = load_best_weights(model, run_dir, record)
    measured = measure(model, monitor, data)
    if not values_match(measured, record.value, tolerance):
        raise VerificationError(
            f"{weights} reloaded gives {monitor.name} = {measured!r}, but its record "
            f"says {record.value!r} (epoch {record.epoch}, tolerance {tolerance}); the "
            "checkpoint does not reproduce its value"
        )
    return measured
