"""Which number picks the best epoch, which way is better, and where it is measured.

``val_*`` monitors are measured by Keras' own validation pass at epoch end, on the
post-update weights. A training-set monitor (``loss``, ``accuracy``...) is *not* Keras'
logged running mean, which mixes values computed before each update: keepbest measures it
with an end-of-epoch evaluation pass over the training data and logs it as
``epoch_end_<name>`` next to Keras' ``<name>``.

Example:

    >>> from keepbest.monitor import Monitor
    >>> m = Monitor("loss", mode="min")
    >>> m.log_key, m.improves(0.5, best=0.7), m.improves(float("nan"), best=0.7)
    ('epoch_end_loss', True, False)
"""

from __future__ import annotations

import dataclasses
import math

EPOCH_END_PREFIX = "epoch_end_"


@dataclasses.dataclass(frozen=True)
class Monitor:
    name: str
    mode: str  # "min" or "max"; "auto" is resolved by ``resolve_mode`` first
    min_delta: float = 0.0
    baseline: float | None = None

    @property
    def on_validation(self) -> bool:
        return self.name.startswith("val_")

    @property
    def metric(self) -> str:
        """The metric's name as ``evaluate`` returns it (without ``val_``)."""
        return self.name.removeprefix("val_")

    @property
    def log_key(self) -> str:
        """The logs key that holds the value measured on the epoch's final weights."""
        return self.name if self.on_validation else EPOCH_END_PREFIX + self.name

    def improves(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` (or the baseline) by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        reference = best if best is not None else self.baseline
        if reference is None:
            return True
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta


def resolve_mode(name: str, mode: str, model) -> str:
    """``auto`` becomes ``min`` for losses, else the direction the Keras metric declares."""
    if mode != "auto":
        return mode
    metric = name.removeprefix("val_")
    if metric == "loss" or metric.endswith("_loss"):
        return "min"
    for candidate in _compiled_metrics(model):
        if candidate.name == metric and getattr(candidate, "_direction", None) in ("up", "down"):
            return "max" if candidate._direction == "up" else "min"
    from keepbest.errors import ConfigError

    raise ConfigError(
        f"checkpoint.mode: cannot tell whether {name!r} should go up or down; "
        "set checkpoint.mode to min or max"
    )


def _compiled_metrics(model) -> list:
    found = []
    for metric in getattr(model, "metrics", []):
        inner = getattr(metric, "metrics", None)
        found.extend(inner if isinstance(inner, list) else [metric])
    return found


def evaluate_metrics(model, data) -> dict[str, float]:
    """Evaluate ``model`` on ``data`` in inference mode: every compiled metric, by name."""
    results = model.evaluate(data, verbose=0, return_dict=True)
    return {name: float(value) for name, value in results.items()}


def measure(model, monitor: Monitor, validation, train_eval) -> float:
    """The monitored value of the model's current weights, measured as during training."""
    data = validation if monitor.on_validation else train_eval
    return evaluate_metrics(model, data)[monitor.metric]
