"""Training progress as log lines, for people and for batch logs.

On a terminal Keras' progress bar runs and this listener adds one line when a new best is
saved. When stdout is not a terminal (a batch job's log), Keras stays silent and this
listener reports exactly one line per evaluation point with every value logged there and
the best so far. Lines go to the ``keepbest.progress`` logger at INFO; the CLI prints them.

Example:

    >>> from keepbest.callbacks.points import EvaluationPoint
    >>> from keepbest.callbacks.report import Report
    >>> point = EvaluationPoint(3, 69, "val_loss", 0.38, {"loss": 0.41, "val_loss": 0.38},
    ...                         0.38, 3, 69, True, by_steps=False)
    >>> Report(epochs=30, every_point=True).line(point)
    'epoch 3/30  loss 0.41  val_loss 0.38  best val_loss 0.38 @3 (saved)'
"""

from __future__ import annotations

import logging

from keepbest.callbacks.points import EvaluationPoint

log = logging.getLogger("keepbest.progress")


def _format(value: float) -> str:
    return f"{value:.4g}"


class Report:
    """Report a line per evaluation point (``every_point``) or only when a best is saved."""

    def __init__(self, epochs: int, every_point: bool):
        self.epochs = epochs
        self.every_point = every_point

    def __call__(self, point: EvaluationPoint) -> None:
        if self.every_point or point.saved:
            log.info("%s", self.line(point))

    def line(self, point: EvaluationPoint) -> str:
        values = ""
        if self.every_point:  # on a terminal Keras' progress bar has just shown them
            shown = (f"{k} {_format(v)}" for k, v in point.values.items() if k != "best_saved")
            values = "  ".join(shown) + "  "
        if point.best_epoch is None:
            best = f"no best {point.monitor} yet"
        else:
            at = f"@step {point.best_step}" if point.by_steps else f"@{point.best_epoch}"
            best = f"best {point.monitor} {_format(point.best_value)} {at}"
        where = f"epoch {point.epoch}/{self.epochs}"
        if point.by_steps:
            where = f"step {point.step} ({where})"
        note = " (saved)" if point.saved else ""
        return f"{where}  {values}{best}{note}"
