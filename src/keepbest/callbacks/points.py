"""Evaluation points: the moments a run judges its weights, as the rest of keepbest and
its callers see them.

An evaluation point is an epoch end, or, with ``checkpoint.every_steps: N``, every N-th
global optimizer step wherever it falls (``keepbest.monitor.Schedule``). At each one the
training loop (``keepbest.callbacks.loop``) measures and judges the weights
(``callbacks.best``), writes the history row, and hands an ``EvaluationPoint`` to each
listener: the progress report, TensorBoard, and the observers a caller gave
``keepbest.train(..., observers=[...])`` (on the chief only). An observer is any
callable taking an ``EvaluationPoint``; what it raises ends training and leaves
``train`` (a tuner raises its "prune this trial" exception there).

Example:

    >>> from keepbest.callbacks.points import EvaluationPoint
    >>> point = EvaluationPoint(epoch=2, step=500, monitor="val_loss", value=0.3,
    ...                         values={"val_loss": 0.3}, best_value=0.3, best_epoch=2,
    ...                         best_step=500, saved=True)
    >>> point.where, point.best_where
    ('step 500', 'step 500')
    >>> seen = []
    >>> result = keepbest.train("exp.yaml", observers=[seen.append])   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class EvaluationPoint:
    """One evaluation point, after its decision: ``value`` is the monitored value measured
    on the weights of global step ``step``; ``values`` holds every value logged there
    (Keras' running means, ``epoch_end_*``, ``val_*``, ``best_saved``)."""

    epoch: int  # 1-based: the epoch the step falls in
    step: int  # the global optimizer step of the weights judged
    monitor: str
    value: float
    values: dict[str, float]
    best_value: float | None
    best_epoch: int | None
    best_step: int | None
    saved: bool  # whether this point's weights are the best checkpoint
    by_steps: bool = True  # every_steps mode (else: one point per epoch end)

    @property
    def where(self) -> str:
        return f"step {self.step}" if self.by_steps else f"epoch {self.epoch}"

    @property
    def best_where(self) -> str | None:
        if self.best_epoch is None:
            return None
        return f"step {self.best_step}" if self.by_steps else f"epoch {self.best_epoch}"


Observer = Callable[[EvaluationPoint], Any]
