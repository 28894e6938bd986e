"""Which number picks the best checkpoint, which way is better, and when to stop.

The decisions only, no measuring (``keepbest.measure`` measures) and no TensorFlow:

- ``Monitor``: the monitored metric, its direction, ``min_delta`` and ``baseline``;
  ``improves`` says whether a value beats the best so far (NaN and inf never do);
- ``patience_exhausted``: how long the run has waited for an improvement, once that
  reaches ``patience``;
- ``stop_reason``: the one wording of why training stopped early, shared by the
  training callback, a finished run's summary and ``keepbest show``;
- ``direction_from_name``: the direction a monitor's name says (accuracy: max, loss:
  min), which ``checkpoint.mode`` may not contradict unless forced
  (``mode_contradiction``).

``val_*`` monitors are measured by a validation pass on the weights being judged. A
training-set monitor (``loss``, ``accuracy``...) is *not* Keras' logged running mean,
which mixes values computed before each update: keepbest measures it with a pass over the
training data in inference mode and logs it as ``epoch_end_<name>`` next to Keras'
``<name>``.

Example:

    >>> from keepbest.monitor import Monitor, patience_exhausted, stop_reason
    >>> m = Monitor("loss", mode="min", min_delta=0.01)
    >>> m.log_key, m.improves(0.5, best=0.7), m.improves(0.695, best=0.7)
    ('epoch_end_loss', True, False)
    >>> m.improves(float("nan"), best=None)
    False
    >>> Monitor("val_acc", "max", baseline=0.9).improves(0.8, best=None)
    False
    >>> waited = patience_exhausted(done=9, best_at=4, patience=5, start_from=0)
    >>> waited, stop_reason("patience", "loss", waited=waited, patience=5)
    (5, 'no improvement of loss for 5 epochs (patience 5)')
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

EPOCH_END_PREFIX = "epoch_end_"
VALIDATION_PREFIX = "val_"

# nonfinite, patience: keepbest's own stops; callback: another callback in fit set
# ``model.stop_training`` (a user's EarlyStopping, a time limit)
StopKind = Literal["nonfinite", "patience", "callback"]


@dataclasses.dataclass(frozen=True)
class Monitor:
    name: str
    mode: str  # "min" or "max"; "auto" is resolved by ``resolve_mode`` first
    min_delta: float = 0.0
    baseline: float | None = None

    @property
    def on_validation(self) -> bool:
        return self.name.startswith(VALIDATION_PREFIX)

    @property
    def metric(self) -> str:
        """The metric's name as ``evaluate`` returns it (without ``val_``)."""
        return self.name.removeprefix(VALIDATION_PREFIX)

    @property
    def log_key(self) -> str:
        """The logs key that holds the value measured on the weights being judged."""
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


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a run is judged: at every epoch end, or (``every_steps``) at the global
    optimizer steps N, 2N, 3N, ... wherever they fall. Patience and warm-up count
    evaluation points: epochs, or multiples of N. ``start_from`` is the warm-up in
    those units: ``checkpoint.start_from_epoch`` epochs, or the points at or before
    ``checkpoint.start_from_step``.

    Example:

        >>> every_500 = Schedule(every_steps=500, start_from_step=1000)
        >>> every_500.is_point(1500), every_500.ordinal(epoch=3, step=1500), every_500.start_from
        (True, 3, 2)
        >>> Schedule().ordinal(epoch=3, step=1500), Schedule().unit
        (3, 'epochs')
    """

    every_steps: int | None = None
    start_from_epoch: int = 0
    start_from_step: int = 0

    @property
    def by_steps(self) -> bool:
        return self.every_steps is not None

    @property
    def unit(self) -> str:
        return "evaluations" if self.by_steps else "epochs"

    @property
    def start_from(self) -> int:
        """Warm-up evaluation points: neither saved as best nor counted for patience."""
        if self.by_steps:
            return self.start_from_step // self.every_steps
        return self.start_from_epoch

    def is_point(self, step: int) -> bool:
        """Whether global step ``step`` is an evaluation point (in step mode)."""
        return self.by_steps and step > 0 and step % self.every_steps == 0

    def ordinal(self, epoch: int, step: int) -> int:
        """How many evaluation points there have been up to and including this one
        (``epoch`` is 1-based)."""
        return step // self.every_steps if self.by_steps else epoch


def patience_exhausted(
    done: int, best_at: int | None, patience: int | None, start_from: int
) -> int | None:
    """How many evaluations have passed without improvement, if that reaches ``patience``
    (else None). ``done`` evaluations have happened, the best was the ``best_at``-th (None:
    none yet), and the first ``start_from`` are warm-up, neither best nor counted."""
    if patience is None or done <= start_from:
        return None
    since = best_at if best_at is not None else start_from
    waited = done - since
    return waited if waited >= patience else None


def stop_reason(
    kind: StopKind,
    monitor: str,
    *,
    waited: int | None = None,
    patience: int | None = None,
    value: float | None = None,
    where: str | None = None,
    unit: str = "epochs",
) -> str:
    """Why training stopped early, in words (``where``: e.g. "at epoch 4")."""
    if kind == "nonfinite":
        what = f"is {value}" if value is not None else "became non-finite"
        return f"{monitor} {what}" + (f" {where}" if where else "")
    if kind == "callback":
        return "a callback in fit stopped training" + (f" {where}" if where else "")
    return f"no improvement of {monitor} for {waited} {unit} (patience {patience})"


# What a metric's name says about its direction, by its last word (Keras' numbered
# copies, ``auc_1``, without the number): the phrase says why, in a refusal.
_SAYS_MAX = {
    "accuracy": "an accuracy",
    "acc": "an accuracy",
    "auc": "an AUC",
    "precision": "a precision",
    "recall": "a recall",
    "iou": "an IoU",
    "similarity": "a similarity",
    "f1": "an F1 score",
    "fbeta": "an F-beta score",
    "r2": "an R2 score",
}
_SAYS_MIN = {
    "loss": "a loss",
    "error": "an error",
    "mse": "a squared error",
    "rmse": "a squared error",
    "msle": "a squared error",
    "mae": "an absolute error",
    "mape": "an absolute error",
    "crossentropy": "a cross-entropy",
    "hinge": "a hinge loss",
    "divergence": "a divergence",
    "kld": "a divergence",
    "logcosh": "a log-cosh error",
    "poisson": "a Poisson loss",
}


def _direction_word(monitor: str) -> tuple[str, str] | None:
    """(``min`` or ``max``, why in words) from ``monitor``'s name, or None."""
    words = [w for w in monitor.lower().removeprefix(VALIDATION_PREFIX).split("_") if w]
    while len(words) > 1 and words[-1].isdigit():
        words.pop()
    if words and words[-1] == "score" and len(words) > 1:
        words.pop()  # f1_score, r2_score
    if not words:
        return None
    last = words[-1]
    if last in _SAYS_MIN:
        return "min", f"{_SAYS_MIN[last]} goes down"
    if last in _SAYS_MAX:
        return "max", f"{_SAYS_MAX[last]} goes up"
    return None


def direction_from_name(monitor: str) -> Literal["min", "max"] | None:
    """The direction ``monitor``'s name says better values go, or None if it says none.

    The last word of the name decides (an accuracy of a loss is a loss):

    >>> [direction_from_name(m) for m in ("val_accuracy", "auc_1", "val_precision", "recall")]
    ['max', 'max', 'max', 'max']
    >>> [direction_from_name(m) for m in ("loss", "val_mse", "mean_absolute_error", "f1_score")]
    ['min', 'min', 'min', 'max']
    >>> direction_from_name("accuracy_loss"), direction_from_name("val_confident_accuracy")
    ('min', 'max')
    >>> direction_from_name("true_positives") is None, direction_from_name("score") is None
    (True, True)
    """
    found = _direction_word(monitor)
    return found[0] if found else None  # type: ignore[return-value]


def mode_contradiction(monitor: str, mode: str) -> str | None:
    """Why ``mode`` (``min`` or ``max``) contradicts what ``monitor``'s name says, in
    one line naming the fixes, or None (``auto``, a name that says nothing, or agreed).

    >>> mode_contradiction("val_accuracy", "min")
    'checkpoint.mode: min contradicts val_accuracy (an accuracy goes up when the model \
improves); use mode: max, or auto, or set checkpoint.force_mode: true'
    >>> mode_contradiction("val_accuracy", "max") is None, mode_contradiction("x", "min") is None
    (True, True)
    """
    found = _direction_word(monitor)
    if mode not in ("min", "max") or found is None or found[0] == mode:
        return None
    return (
        f"checkpoint.mode: {mode} contradicts {monitor} ({found[1]} when the model improves); "
        f"use mode: {found[0]}, or auto, or set checkpoint.force_mode: true"
    )


def resolve_mode(name: str, mode: str, model=None) -> str:
    """``auto`` becomes ``min`` for losses, else the direction the Keras metric declares:
    the compiled metric of ``model``, or, without a model, the metric Keras knows by
    that name."""
    if mode != "auto":
        return mode
    metric = name.removeprefix(VALIDATION_PREFIX)
    if metric == "loss" or metric.endswith("_loss"):
        return "min"
    if model is not None:
        candidates = [m for m in _compiled_metrics(model) if m.name == metric]
    else:
        import keras

        try:
            candidates = [keras.metrics.get(metric)]
        except (ValueError, TypeError):
            candidates = []
    for candidate in candidates:
        if getattr(candidate, "_direction", None) in ("up", "down"):
            return "max" if candidate._direction == "up" else "min"
    from keepbest.errors import ConfigError

    raise ConfigError(
        f"checkpoint.mode: cannot tell whether {name!r} should go up or down; "
        "set checkpoint.mode to min or max"
    )


def compiled_metric_names(model) -> list[str] | None:
    """The names ``evaluate`` logs for ``model``'s compiled loss and metrics (``loss``
    first), or None where they cannot be told before a step (several outputs)."""
    compiled = getattr(model, "_compile_metrics", None)
    if compiled is not None and not compiled.built:
        given = getattr(compiled, "_user_metrics", None) or []
        weighted = getattr(compiled, "_user_weighted_metrics", None) or []
        if not isinstance(given, list) or not isinstance(weighted, list):
            return None
        names = ["loss"]
        for metric in [*given, *weighted]:
            name = metric if isinstance(metric, str) else getattr(metric, "name", None)
            name = name or getattr(metric, "__name__", None)
            if not isinstance(name, str):
                return None
            names.append(name)
        return names
    names = ["loss"]
    for metric in _compiled_metrics(model):
        if metric.name not in names and metric.name != "compile_metrics":
            names.append(metric.name)
    return names


def _compiled_metrics(model) -> list:
    found = []
    for metric in getattr(model, "metrics", []):
        inner = getattr(metric, "metrics", None)
        found.extend(inner if isinstance(inner, list) else [metric])
    return found


@dataclasses.dataclass(frozen=True)
class Kept:
    """The points whose weights are kept besides the best (``checkpoint.keep_top`` and
    ``checkpoint.average``): ``others`` are the best ``top - 1`` points but the best, by
    value (ties: the earlier first); ``last`` the latest ``last`` points. A point's file
    stays while it is the best, among ``others`` or among ``last``.

    Example (``min``, keep the top 3 and the last 2; points are (step, value)):

    >>> kept = Kept(top=3, last=2)
    >>> for step, value, best in [(1, 0.5, True), (2, 0.4, True), (3, 0.45, False),
    ...                           (4, 0.3, True), (5, 0.6, False)]:
    ...     kept = kept.add(step, value, new_best=best, mode="min")
    >>> kept.best, kept.others, kept.last_points
    ((4, 0.3), ((2, 0.4), (3, 0.45)), ((4, 0.3), (5, 0.6)))
    >>> sorted(kept.steps())
    [2, 3, 4, 5]
    """

    top: int = 1
    last: int = 0
    best: tuple[int, float] | None = None
    others: tuple[tuple[int, float], ...] = ()
    last_points: tuple[tuple[int, float], ...] = ()

    def add(self, step: int, value: float, new_best: bool, mode: str) -> Kept:
        """The kept points after the point (``step``, ``value``); ``new_best``: it is the
        new best as ``Monitor.improves`` decided (min_delta and baseline included)."""
        if not math.isfinite(value) or (self.best is None and not new_best):
            return self  # nothing is kept before there is a best
        point = (step, value)
        candidates = list(self.others)
        best = self.best
        if new_best:
            if best is not None:
                candidates.append(best)
            best = point
        else:
            candidates.append(point)
        sign = 1.0 if mode == "min" else -1.0
        ranked = sorted(candidates, key=lambda p: (sign * p[1], p[0]))[: max(self.top - 1, 0)]
        last = (*self.last_points, point)[-self.last :] if self.last else ()
        return dataclasses.replace(self, best=best, others=tuple(ranked), last_points=last)

    def steps(self) -> set[int]:
        """The steps whose files are kept."""
        kept = {p[0] for p in (*self.others, *self.last_points)}
        return kept | ({self.best[0]} if self.best else set())

    @property
    def files(self) -> bool:
        """Whether points are kept as files of their own (else only ``best.weights.h5``)."""
        return self.top > 1 or self.last > 0
