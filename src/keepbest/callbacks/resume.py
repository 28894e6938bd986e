"""Write the resume state at every epoch end, and on a stop request after the current batch.

Place it after ``BestCheckpoint`` and ``HistoryCSV``: the state it writes at an epoch end
includes that epoch's history row and stop decision. On a stop request it saves, then
raises ``StopRequested`` to leave ``fit`` without a wasted validation pass.

Example:

    >>> from keepbest.callbacks.resume import ResumeCheckpoint
    >>> resume = ResumeCheckpoint(store, stop, best, history, steps_per_epoch=23)  # doctest: +SKIP
    >>> model.fit(..., callbacks=[best, history, resume])                        # doctest: +SKIP
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from keepbest.callbacks.best import BestCheckpoint
from keepbest.callbacks.history import HistoryCSV
from keepbest.cluster.distribute import Distribution
from keepbest.rundir.resume_store import Progress, ResumeStore
from keepbest.signals import StopRequested, StopSignals

log = logging.getLogger(__name__)


class ResumeCheckpoint(keras.callbacks.Callback):
    def __init__(
        self,
        store: ResumeStore,
        stop: StopSignals,
        best: BestCheckpoint,
        history: HistoryCSV,
        steps_per_epoch: int,
        first_batch: int = 0,
        metric_values: dict[str, np.ndarray] | None = None,
        distribution: Distribution | None = None,
    ):
        """``first_batch`` and ``metric_values`` describe a mid-epoch resume: the batches
        of the first epoch already done, and Keras' metric accumulators at that point.

        With several workers only the chief writes, and a stop request is honoured at
        the next epoch end once any worker has one (the workers must stop together)."""
        super().__init__()
        self.distribution = distribution or Distribution()
        self.store = store
        self.stop = stop
        self.best = best
        self.history = history
        self.steps_per_epoch = steps_per_epoch
        self._batch_offset = first_batch
        self._metric_values = metric_values
        self._current_epoch = 0
        self._announced = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._current_epoch = epoch
        if self._metric_values is not None:
            # fit() has just reset the metrics; continue the interrupted epoch's means.
            variables = {variable.path: variable for variable in self.model.metrics_variables}
            missing = self._metric_values.keys() - variables.keys()
            if missing:
                raise RuntimeError(f"metric variables {sorted(missing)} were not built")
            for path, value in self._metric_values.items():
                variables[path].assign(value)
            self._metric_values = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Checked before the next batch rather than after each one: Keras dispatches
        # batch-end callbacks in a background thread only when none overrides them.
        done = self._batch_offset + batch
        mid_epoch_stop = not self.distribution.multi_worker
        if mid_epoch_stop and self.stop.requested and 0 < done < self.steps_per_epoch:
            self._announce_stop()
            self._save(Progress(epoch=self._current_epoch, batch=done))
            raise StopRequested(
                f"stopped by {self.stop.received[0]} in epoch {self._current_epoch + 1} "
                f"after batch {done} of {self.steps_per_epoch}"
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._batch_offset = 0
        if self.stop.requested:
            self._announce_stop()
        self._save(Progress(epoch=epoch + 1, batch=0), stop_kind=self.best.stop_kind)
        if self.stop.requested:
            self._announce_stop()  # (the signal may have come while saving)
        if self.distribution.any(self.stop.requested):
            by = self.stop.received[0] if self.stop.requested else "another worker's signal"
            raise StopRequested(f"stopped by {by} after epoch {epoch + 1}")

    def _announce_stop(self) -> None:
        if self._announced:
            return
        self._announced = True
        log.warning(
            "%s received: saving the resume state, then stopping (Ctrl-C again stops at once)",
            self.stop.received[0],
        )

    def _save(self, progress: Progress, stop_kind: str | None = None) -> None:
        if not self.distribution.is_chief:
            return
        self.store.save(
            self.model,
            progress,
            global_step=int(self.model.optimizer.iterations.numpy()),
            history=self.history.rows,
            stop_kind=stop_kind,
        )
