"""The heart of keepbest: keep the best epoch on disk, judged on exactly the saved weights.

Like ``ModelCheckpoint(save_best_only=True)`` plus ``EarlyStopping``, with three
differences that matter:

- the monitored value is measured on the weights being saved (see ``keepbest.monitor``):
  a training-set monitor gets an end-of-epoch evaluation pass, never Keras' running mean;
- the best weights live only on disk, written by ``keepbest.record.commit_best``
  (atomic, fsync'ed, sha256 recorded); no copy is ever held in memory;
- patience counts epochs since the best *on disk*, and a non-finite value never wins.

Example:

    >>> import keras
    >>> from keepbest.best_checkpoint import BestCheckpoint
    >>> from keepbest.monitor import Monitor
    >>> best = BestCheckpoint(run_dir, Monitor("val_loss", "min"), patience=5)  # doctest: +SKIP
    >>> model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[best])     # doctest: +SKIP
    >>> best.best_epoch, best.best_value                                          # doctest: +SKIP
    (17, 0.0831)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import keras

from keepbest.errors import MonitorError
from keepbest.monitor import EPOCH_END_PREFIX, Monitor, evaluate_metrics, resolve_mode
from keepbest.record import BestRecord, commit_best


def library_versions() -> dict[str, str]:
    import tensorflow as tf

    from keepbest import __version__

    return {"keepbest": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def patience_exhausted(
    epochs_done: int, best_epoch: int | None, patience: int | None, start_from_epoch: int
) -> int | None:
    """Epochs without improvement if that reaches ``patience``, else None."""
    if patience is None or epochs_done <= start_from_epoch:
        return None
    since = best_epoch if best_epoch is not None else start_from_epoch
    waited = epochs_done - since
    return waited if waited >= patience else None


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
        train_eval_data: Any = None,
        patience: int | None = None,
        start_from_epoch: int = 0,
        stop_on_nonfinite: bool = True,
        record: BestRecord | None = None,
        writes: bool = True,
    ):
        super().__init__()
        if not monitor.on_validation and train_eval_data is None:
            raise ValueError(f"monitor {monitor.name!r} needs train_eval_data")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.train_eval_data = train_eval_data
        self.patience = patience
        self.start_from_epoch = start_from_epoch
        self.stop_on_nonfinite = stop_on_nonfinite
        self.writes = writes
        self.record = record
        self.best_value = record.value if record else None
        self.best_epoch = record.epoch if record else None
        self.mode = record.mode if record else (None if monitor.mode == "auto" else monitor.mode)
        self.saved_this_epoch = False
        self.stop_kind: str | None = None  # "nonfinite" or "patience"
        self.stop_reason: str | None = None
        self._versions = library_versions()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        if not self.monitor.on_validation:
            measured = evaluate_metrics(self.model, self.train_eval_data)
            logs.update({EPOCH_END_PREFIX + name: value for name, value in measured.items()})
        if self.monitor.log_key not in logs:
            available = sorted(k for k in logs if not k.startswith(EPOCH_END_PREFIX))
            raise MonitorError(
                f"checkpoint.monitor: {self.monitor.name!r} is not logged by this run; "
                f"it logs {', '.join(available)}"
            )
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
                lambda path: keras.saving.save_weights(
                    self.model, path, objects_to_skip=[self.model.optimizer]
                ),
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
        if self.stop_on_nonfinite and not math.isfinite(value):
            self.stop_kind = "nonfinite"
            self.stop_reason = f"{self.monitor.name} is {value} at epoch {number}"
        elif waited is not None:
            self.stop_kind = "patience"
            self.stop_reason = (
                f"no improvement of {self.monitor.name} for {waited} epochs "
                f"(patience {self.patience})"
            )
        if self.stop_reason:
            self.model.stop_training = True
