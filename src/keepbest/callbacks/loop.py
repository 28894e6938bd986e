"""The one Keras callback keepbest puts in ``fit``: Keras' hooks turned into keepbest's
moments, in a fixed order.

- **Evaluation points** (epoch ends, or every N global steps: ``keepbest.monitor.Schedule``):
  the weights are measured and judged (``BestCheckpoint.judge``: maybe a new best on
  disk), the history row is written, the listeners (progress report, TensorBoard,
  observers) hear of it; an early stop decided there saves a resume state and leaves
  ``fit`` at once, mid-epoch if that is where it falls.
- **Resume points**, between any two steps: a resume state when the cadence says it is
  due (``callbacks.resume.Cadence``), and always on a stop request (a signal), which then
  leaves ``fit``. With several workers, stops and states happen at epoch ends and
  evaluation points only, where all workers are at the same step and can agree.

Everything is checked in ``on_train_batch_begin``, before the next step, rather than
after each step: Keras runs batch-end hooks synchronously when any callback has one.

Example:

    >>> from keepbest.callbacks.loop import TrainingLoop
    >>> loop = TrainingLoop(best=best, history=history, resume=resume, stop=stop,
    ...                     steps_per_epoch=23, listeners=[report])   # doctest: +SKIP
    >>> model.fit(stream, steps_per_epoch=23, epochs=30, callbacks=[loop])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keepbest.callbacks.best import BestCheckpoint
from keepbest.callbacks.history import HistoryCSV
from keepbest.callbacks.points import EvaluationPoint
from keepbest.callbacks.resume import ResumeWriter
from keepbest.cluster.distribute import Distribution
from keepbest.rundir.resume_store import Progress
from keepbest.signals import StopRequested, StopSignals

log = logging.getLogger(__name__)

_SYNC_SHARE = 0.01  # several workers: what the stop/state agreements may cost
_MAX_STOP_WAIT = 30.0  # seconds from a signal to the stop, at most (about)
_WARM_UP_STEPS = 5  # the first steps of a process trace and warm up: not timed
_CALIBRATION_STEPS = 20  # steps timed to choose K


class EarlyStop(Exception):
    """Raised inside ``fit`` right after the evaluation point that decided to stop (the
    resume state is saved); ``train`` goes on to verify the best."""


class TrainingLoop(keras.callbacks.Callback):
    def __init__(
        self,
        *,
        best: BestCheckpoint,
        history: HistoryCSV,
        resume: ResumeWriter,
        stop: StopSignals,
        steps_per_epoch: int,
        distribution: Distribution | None = None,
        listeners: Sequence[Callable[[EvaluationPoint], object]] = (),
        first_batch: int = 0,
        metric_values: dict[str, np.ndarray] | None = None,
        fingerprint: Callable[[int], str] | None = None,
        sync_every: int | None = None,
    ):
        """``first_batch`` and ``metric_values`` describe a mid-epoch resume: the batches
        of the first epoch already done, and Keras' metric accumulators at that point.
        ``fingerprint(step)`` fingerprints the batch a run resumed at ``step`` sees first.
        ``sync_every``: with several workers, agree every N steps (None: calibrate)."""
        super().__init__()
        self.best = best
        self.history = history
        self.resume = resume
        self.stop = stop
        self.schedule = best.schedule
        self.steps_per_epoch = steps_per_epoch
        self.distribution = distribution or Distribution()
        self.listeners = list(listeners)
        self.fingerprint = fingerprint
        self._offset = first_batch
        self._metric_values = metric_values
        self._epoch = 0
        # A resumed run starts where its state was written, after that step's point.
        self._last_point = self._last_state = resume.last_step
        self._sync_every = sync_every  # several workers: sync every K steps
        self._sync_anchor = 0
        self._calibration: tuple[int, float] | None = None
        self._since = time.perf_counter()
        self._announced = False

    # ----------------------------------------------------------------- Keras' hooks

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._metric_values is not None:
            # fit() has just reset the metrics; continue the interrupted epoch's means.
            self.distribution.assign_metrics(self.model, self._metric_values)
            self._metric_values = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        done = self._offset + batch  # steps of this epoch already taken
        if done == 0:
            return  # an epoch boundary: the previous epoch's end dealt with it
        step = self._epoch * self.steps_per_epoch + done
        progress = Progress(epoch=self._epoch, batch=done)
        if self.schedule.is_point(step) and step != self._last_point:
            self._evaluate(step, done, self._running_means())
            self._sync(step, progress)
        elif self._sync_due(step):
            self._sync(step, progress)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        self._offset = 0
        step = (epoch + 1) * self.steps_per_epoch
        if not self.schedule.by_steps or self.schedule.is_point(step):
            self._evaluate(step, self.steps_per_epoch, logs)
        self._sync(step, Progress(epoch=epoch + 1, batch=0))

    # ----------------------------------------------------------------- called by train()

    def finish(self, epochs: int) -> None:
        """The end of training: the last state marks the run complete."""
        step = epochs * self.steps_per_epoch
        if self._last_state != step:
            self._save(step, Progress(epoch=epochs, batch=0))

    # ----------------------------------------------------------------- the moments

    def _evaluate(self, step: int, done: int, values: dict[str, float]) -> None:
        epoch = self._epoch + 1
        verdict = self.best.judge(self.model, epoch, step, values)
        now = time.perf_counter()
        row = {"epoch": epoch, "step": step}
        row.update({key: float(value) for key, value in values.items()})
        row["seconds"] = round(now - self._since, 3)
        self._since = now
        self.history.add(row)
        self._last_point = step
        point = EvaluationPoint(
            epoch=epoch,
            step=step,
            monitor=self.best.monitor.name,
            value=verdict.value,
            values={key: float(value) for key, value in values.items()},
            best_value=self.best.best_value,
            best_epoch=self.best.best_epoch,
            best_step=self.best.best_step,
            saved=verdict.saved,
            by_steps=self.schedule.by_steps,
        )
        for listener in self.listeners:
            listener(point)
        if verdict.stop_kind is not None:
            if done == self.steps_per_epoch:
                progress = Progress(epoch=epoch, batch=0)
            else:
                progress = Progress(epoch=epoch - 1, batch=done)
            self._save(step, progress, stop_kind=verdict.stop_kind)
            raise EarlyStop(verdict.stop_reason)

    def _sync(self, step: int, progress: Progress) -> None:
        """At a moment every worker reaches at the same step: stop if any worker was
        signalled, write a state if the chief's cadence wants one (one collective with
        several workers; local checks with one)."""
        stop, save = self.distribution.agree(self.stop.requested, self.resume.due(step))
        if stop:
            self._stop_for_resume(step, progress, by_another=not self.stop.requested)
        if save:
            self._save(step, progress)

    def _sync_due(self, step: int) -> bool:
        """Whether to sync before this step: every step in one process (a local check);
        with several workers every K steps, K chosen once so that the collective costs
        about 1% of the training time (and a stop waits at most about 30 s)."""
        if not self.distribution.multi_worker:
            return True
        if self._sync_every is not None:
            return (step - self._sync_anchor) % self._sync_every == 0
        started = self._calibration
        if started is None or step - started[0] < _CALIBRATION_STEPS:
            if started is None and step - self.resume.last_step >= _WARM_UP_STEPS:
                self._calibration = (step, time.perf_counter())
            return False
        step_time = (time.perf_counter() - started[1]) / (step - started[0])
        began = time.perf_counter()
        self.distribution.agree(0.0)
        collective = time.perf_counter() - began
        every = math.ceil(collective / (_SYNC_SHARE * step_time))
        every = max(1, min(every, math.floor(_MAX_STOP_WAIT / step_time)))
        chief = 1.0 if self.resume.writes else 0.0  # every worker takes the chief's K
        self._sync_every = max(1, round(self.distribution.agree(chief * every)[0]))
        self._sync_anchor = step
        log.info(
            "workers agree every %d steps (a step %.3g s, an agreement %.3g s)",
            self._sync_every,
            step_time,
            collective,
        )
        return True

    def _stop_for_resume(self, step: int, progress: Progress, by_another: bool = False) -> None:
        if not by_another:
            self._announce_stop()
        if self._last_state != step:
            self._save(step, progress)
        by = "another worker's signal" if by_another else self.stop.received[0]
        where = (
            f"in epoch {progress.epoch + 1} after batch {progress.batch} of {self.steps_per_epoch}"
            if progress.batch
            else f"after epoch {progress.epoch}"
        )
        raise StopRequested(f"stopped by {by} at step {step} ({where})")

    def _save(self, step: int, progress: Progress, stop_kind: str | None = None) -> None:
        """Write a state (the chief); every worker must call it: a mid-epoch state gathers
        every replica's metric accumulators."""
        started = self.resume.clock()  # what the state costs, all of it, for the cadence
        metrics = self.distribution.read_metrics(self.model) if progress.batch else None
        self._last_state = step  # on every worker, so that all take the same path
        if not self.resume.writes:
            return
        next_batch = self.fingerprint(step) if self.fingerprint else None
        self.resume.save(
            self.model,
            progress,
            step,
            stop_kind=stop_kind,
            next_batch=next_batch,
            best=self.best.so_far(),
            metrics=metrics,
            started=started,
        )

    def _running_means(self) -> dict[str, float]:
        """Keras' running means of the training metrics so far in this epoch."""
        return {
            name: float(np.asarray(value))
            for name, value in self.model.get_metrics_result().items()
        }

    def _announce_stop(self) -> None:
        if self._announced:
            return
        self._announced = True
        log.warning(
            "%s received: saving the resume state, then stopping (Ctrl-C again stops at once)",
            self.stop.received[0],
        )
