"""The heart of keepbest: keep the best epoch on disk, judged on exactly the saved weights.

Like ``ModelCheckpoint(save_best_only=True)`` plus ``EarlyStopping``, with three
differences that matter:

- the monitored value is measured on the weights being saved (``keepbest.measure``): a
  training-set monitor gets an end-of-epoch evaluation pass, never Keras' running mean;
- the best weights live only on disk, written by ``keepbest.rundir.record.commit_best``
  (atomic, fsync'ed, sha256 recorded); no copy is ever held in memory;
- patience counts epochs since the best *on disk*, and a non-finite value never wins.

Example:

    >>> import keras
    >>> from keepbest.callbacks.best import BestCheckpoint
    >>> from keepbest.measure import MeasureData
    >>> from keepbest.monitor import Monitor
    >>> best = BestCheckpoint(run_dir, Monitor("val_loss", "min"), MeasureData(val, None),
    ...                       patience=5)                                    # doctest: +SKIP
    >>> model.fit(x, y, validation_data=val, epochs=50, callbacks=[best])  # doctest: +SKIP
    >>> best.best_epoch, best.best_value                                    # doctest: +SKIP
    (17, 0.0831)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import keras

from keepbest.measure import MeasureData, measure_point
from keepbest.monitor import Monitor, StopKind, patience_exhausted, resolve_mode, stop_reason
from keepbest.rundir.record import BestRecord, commit_best


def library_versions() -> dict[str, str]:
    import tensorflow as tf

    from keepbest import __version__

    return {"keepbest": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def save_weights(model, path: Path) -> None:
    """The model's weights (not the optimizer's) as a Keras ``.weights.h5`` file."""
    keras.saving.save_weights(model, path, objects_to_skip=[model.optimizer])


class BestCheckpoint(keras.callbacks.Callback):
    """Save the best epoch durably, measured on the saved weights; stop on patience.

    ``record`` is the best already on disk (a resumed run); an epoch that reproduces it
    exactly (the replay of an epoch whose checkpoint landed before a kill) counts as saved.
    With ``writes=False`` (a non-chief worker) it takes the same decisions, writes nothing.
    """

    def __init__(
        self,
        run_dir: Path,
        monitor: Monitor,
        data: MeasureData,
        patience: int | None = None,
        start_from_epoch: int = 0,
        stop_on_nonfinite: bool = True,
        record: BestRecord | None = None,
        writes: bool = True,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.data = data
        self.patience = patience
        self.start_from_epoch = start_from_epoch
        self.stop_on_nonfinite = stop_on_nonfinite
        self.writes = writes
        self.record = record
        self.best_value = record.value if record else None
        self.best_epoch = record.epoch if record else None
        self.mode = record.mode if record else (None if monitor.mode == "auto" else monitor.mode)
        self.saved_this_epoch = False
        self.stop_kind: StopKind | None = None
        self.stop_reason: str | None = None
        self._versions = library_versions()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs.update(measure_point(self.model, self.monitor, self.data, logs))
        value = float(logs[self.monitor.log_key])
        if self.mode is None:
            self.mode = resolve_mode(self.monitor.name, self.monitor.mode, self.model)
        monitor = dataclasses.replace(self.monitor, mode=self.mode)
        number = epoch + 1
        replay = self.best_epoch == number and value == self.best_value
        self.saved_this_epoch = replay
        improved = (
            not replay
            and epoch >= self.start_from_epoch
            and monitor.improves(value, self.best_value)
        )
        if improved and self.writes:
            self.record = commit_best(
                self.run_dir,
                lambda path: save_weights(self.model, path),
                epoch=number,
                monitor=monitor.name,
                mode=monitor.mode,
                value=value,
                versions=self._versions,
            )
        if improved:
            self.best_value, self.best_epoch = value, number
            self.saved_this_epoch = True
        logs["best_saved"] = 1.0 if self.saved_this_epoch else 0.0
        self._maybe_stop(number, value)

    def _maybe_stop(self, number: int, value: float) -> None:
        waited = patience_exhausted(number, self.best_epoch, self.patience, self.start_from_epoch)
        name = self.monitor.name
        if self.stop_on_nonfinite and not math.isfinite(value):
            self.stop_kind = "nonfinite"
            self.stop_reason = stop_reason(
                "nonfinite", name, value=value, where=f"at epoch {number}"
            )
        elif waited is not None:
            self.stop_kind = "patience"
            self.stop_reason = stop_reason("patience", name, waited=waited, patience=self.patience)
        if self.stop_reason:
            self.model.stop_training = True
