"""Evaluation points: the moments a run judges its weights, as seen from outside.

An evaluation point is an epoch end (or, with ``checkpoint.every_steps``, every N-th
optimizer step). At each one keepbest measures the monitor on the current weights, may
save a new best, and writes its history row; then it tells the observers a caller gave
``keepbest.train(..., observers=[...])``, on the chief only. An observer is any callable
taking an ``EvaluationPoint``; what it raises ends training and leaves ``train`` (a tuner
raises its "prune this trial" exception there).

Example:

    >>> from keepbest.callbacks.points import EvaluationPoint
    >>> seen = []
    >>> def observer(point: EvaluationPoint) -> None:
    ...     seen.append((point.step, point.value))
    >>> result = keepbest.train("exp.yaml", observers=[observer])   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras


@dataclasses.dataclass(frozen=True)
class EvaluationPoint:
    """One evaluation point, after its decision: ``value`` is the monitored value measured
    on the weights of global step ``step``; ``values`` holds every value logged there
    (Keras' running means, ``epoch_end_*``, ``val_*``)."""

    epoch: int  # 1-based: the epoch the step falls in
    step: int  # the global optimizer step of the weights judged
    monitor: str
    value: float
    values: dict[str, float]
    best_value: float | None
    best_epoch: int | None
    saved: bool  # whether this point's weights became the best checkpoint


Observer = Callable[[EvaluationPoint], Any]


class NotifyObservers(keras.callbacks.Callback):
    """Calls each observer at every evaluation point; place it after ``BestCheckpoint``
    and ``HistoryCSV``, so that an observer sees the point's saved state, and before
    ``ResumeCheckpoint``, whose stop at an epoch end would otherwise skip the point."""

    def __init__(self, best, observers: Sequence[Observer]):
        super().__init__()
        self.best = best
        self.observers = list(observers)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        point = EvaluationPoint(
            epoch=epoch + 1,
            step=int(self.model.optimizer.iterations.numpy()),
            monitor=self.best.monitor.name,
            value=float(logs[self.best.monitor.log_key]),
            values={key: float(value) for key, value in logs.items()},
            best_value=self.best.best_value,
            best_epoch=self.best.best_epoch,
            saved=self.best.saved_this_epoch,
        )
        for observer in self.observers:
            observer(point)
