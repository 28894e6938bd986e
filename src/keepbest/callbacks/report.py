"""Training progress as log lines, for people and for batch logs.

On a terminal Keras' progress bar runs and this callback adds one line when a new best is
saved. When stdout is not a terminal (a batch job's log), Keras stays silent and this
callback reports exactly one line per epoch with every logged value and the best so far.
Lines go to the ``keepbest.progress`` logger at INFO; the CLI prints them on stdout.

Example:

    >>> from keepbest.callbacks.report import EpochReport
    >>> model.fit(..., verbose=0, callbacks=[best, EpochReport(best, epochs=30)])  # doctest: +SKIP
    epoch 3/30  loss 0.4123  val_loss 0.3811  best val_loss 0.3811 @3 (saved)
"""

from __future__ import annotations

import logging

import keras

from keepbest.callbacks.best import BestCheckpoint

log = logging.getLogger("keepbest.progress")


def _format(value: float) -> str:
    return f"{value:.4g}"


class EpochReport(keras.callbacks.Callback):
    """Report a line per epoch (``every_epoch``) or only when a best is saved."""

    def __init__(self, best: BestCheckpoint, epochs: int, every_epoch: bool):
        super().__init__()
        self.best = best
        self.epochs = epochs
        self.every_epoch = every_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        saved = self.best.saved_this_epoch
        if not (self.every_epoch or saved):
            return
        logs = logs or {}
        values = ""
        if self.every_epoch:  # on a terminal Keras' progress bar has just shown them
            shown = (f"{k} {_format(v)}" for k, v in logs.items() if k != "best_saved")
            values = "  ".join(shown) + "  "
        name = self.best.monitor.name
        if self.best.best_epoch is None:
            best = f"no best {name} yet"
        else:
            best = f"best {name} {_format(self.best.best_value)} @{self.best.best_epoch}"
        note = " (saved)" if saved else ""
        log.info("epoch %d/%d  %s%s%s", epoch + 1, self.epochs, values, best, note)
