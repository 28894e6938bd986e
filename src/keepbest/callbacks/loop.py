"""The one Keras callback keepbest puts in ``fit``: Keras' hooks turned into keepbest's
moments, in a fixed order.

- **Evaluation points** (epoch ends, or every N global steps: ``keepbest.monitor.Schedule``):
  the weights are measured and judged (``BestCheckpoint.judge``: maybe a new best on
  disk), the history row is written, the listeners (progress report, TensorBoard,
  observers) hear of it; an early stop decided there saves a resume state and ends
  ``fit`` (``model.stop_training``; no step is trained after it, mid-epoch included).
- **Resume points**, between any two steps: a resume state when the cadence says it is
  due (``callbacks.resume.Cadence``), and always on a stop request (a signal), which then
  leaves ``fit``. With several workers, stops and states happen at epoch ends and
  evaluation points only, where all workers are at the same step and can agree.

Everything is checked in ``on_train_batch_begin``, before the next step, rather than
after each step: Keras runs batch-end hooks synchronously when any callback has one.

``step`` wraps fit's train function (``keepbest.callbacks.keep_best`` installs it): it
skips the batches of a resumed epoch that were trained before the state (consumed, not
trained: ``fit`` starts that epoch from its beginning), trains nothing after an early
stop, and, without a ``fingerprint`` function, takes the batch a state's resumed run
must see first from fit's own iterator (a state due at a step is then written just
before the next step, with that batch's fingerprint).

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
from keepbest.callbacks.resume import ResumeWriter, restore_callback_states
from keepbest.cluster.distribute import Distribution
from keepbest.data.fingerprint import SCRIPT_FIX, batch_fingerprint, inexact_resume
from keepbest.monitor import stop_reason
from keepbest.rundir.resume_store import Progress
from keepbest.signals import StopRequested, StopSignals

log = logging.getLogger(__name__)

_SYNC_SHARE = 0.01  # several workers: what the stop/state agreements may cost
_MAX_STOP_WAIT = 30.0  # seconds from a signal to the stop, at most (about)
_WARM_UP_STEPS = 5  # the first steps of a process trace and warm up: not timed
_CALIBRATION_STEPS = 20  # steps timed to choose K


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
        expect_next: str | None = None,
    ):
        """``first_batch`` and ``metric_values`` describe a mid-epoch resume: the batches
        of the first epoch already done (skipped by ``step``), and Keras' metric
        accumulators at that point. ``fingerprint(step)`` fingerprints the batch a run
        resumed at ``step`` sees first; None: ``step`` fingerprints the batch fit gives
        it, and ``expect_next`` is the fingerprint a resumed run's first batch must have.
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
        self._skip_until = first_batch  # batches of the resumed epoch already trained
        self._skip = 0  # batches the next call of ``step`` consumes untrained
        self._metric_values = metric_values
        self._epoch = 0
        self.halted = False  # an early stop was decided: no step trains any more
        self.stop_reason: str | None = None
        self._pending: tuple | None = None  # a state due, written at the next step
        self._stop_message: str | None = None  # raised once that state is written
        self._expect_next = expect_next
        self.notes: list[str] | None = None  # the run's notes (shared with best, resume)
        # A resumed run starts where its state was written, after that step's point.
        self._last_point = self._last_state = resume.last_step
        self._sync_every = sync_every  # several workers: sync every K steps
        self._sync_anchor = 0
        self._calibration: tuple[int, float] | None = None
        self._since = time.perf_counter()
        self._announced = False
        self._batch = -1  # the batch of this epoch fit last began
        self.total_epochs: int | None = None  # fit's epochs (set when fit begins)
        self.callbacks: list = []  # the user's callbacks in the same fit
        self.callback_states: list[dict] = []  # theirs as of the state resumed from

    # ----------------------------------------------------------------- Keras' hooks

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._batch = epoch, -1
        if self.callback_states:  # their on_train_begin has reset them: now put them back
            restore_callback_states(self.callbacks, self.callback_states)
            self.callback_states = []
        if self._metric_values is not None and self._metrics_built():
            # fit() has just reset the metrics; continue the interrupted epoch's means.
            self.distribution.assign_metrics(self.model, self._metric_values)
            self._metric_values = None
        # else Keras builds them in the first step: ``step`` builds them on its batch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._batch = batch
        if self.halted:
            return
        if batch < self._skip_until:  # trained before the state this run resumed from
            self._skip = min(self._skip_until - batch, self._steps_per_call())
            return
        self._skip, self._skip_until = 0, 0
        done = batch  # steps of this epoch already taken
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
        if self.halted or self._stopped_mid_epoch():
            return
        logs = logs if logs is not None else {}
        step = (epoch + 1) * self.steps_per_epoch
        if not self.schedule.by_steps or self.schedule.is_point(step):
            self._evaluate(step, self.steps_per_epoch, logs)
        # The last epoch's state is written here, always: after fit, Keras may change the
        # weights (an optimizer's use_ema puts its averages in), and a state must not
        # depend on whether the cadence happened to want one at this epoch end.
        last = self.total_epochs is not None and epoch + 1 >= self.total_epochs
        self._sync(step, Progress(epoch=epoch + 1, batch=0), force=last)

    # ----------------------------------------------------------------- called by train()

    def finish(self, epochs: int) -> None:
        """The end of ``fit``: a state due is written now (without a next batch), and the
        last state marks where training ended (all ``epochs``, or where another callback
        stopped it); the attempt ended cleanly."""
        self._flush()
        if not self.halted:
            self._last_state_at_the_end(epochs)
        self.resume.end_attempt("finished")

    def _last_state_at_the_end(self, epochs: int) -> None:
        step = (self._epoch + 1) * self.steps_per_epoch
        if self._epoch + 1 >= epochs:
            step = epochs * self.steps_per_epoch
        progress = Progress(epoch=step // self.steps_per_epoch, batch=0)
        if self.model.stop_training:  # another callback stopped fit: the run ends here
            if self._stopped_mid_epoch():
                done = self._batch + 1
                step = self._epoch * self.steps_per_epoch + done
                progress = Progress(epoch=self._epoch, batch=done)
            where = f"at step {step}"
            self.stop_reason = stop_reason("callback", self.best.monitor.name, where=where)
            self._save(step, progress, stop_kind="callback", now=True)
            return
        if self._last_state != step:
            self._save(step, progress, now=True)

    def _stopped_mid_epoch(self) -> bool:
        """Whether another callback ended fit within an epoch (``model.stop_training``
        after a batch): that epoch's end is no evaluation point."""
        done = self._batch + 1
        return (
            bool(self.model.stop_training) and not self.halted and 0 < done < self.steps_per_epoch
        )

    # ----------------------------------------------------------------- fit's train function

    def step(self, train_function, iterator):
        """One call of fit's train function, through keepbest: skipped batches are
        consumed untrained, nothing trains after an early stop, and a state due is
        written with the fingerprint of the batch that comes next."""
        if self.halted:
            return self._metric_logs()
        if self._skip:
            for _ in range(self._skip):
                self._assign_metrics(next(iterator))
            self._skip = 0
            return self._metric_logs()
        if self._pending is None and self._expect_next is None and self._metric_values is None:
            return train_function(iterator)
        batch = next(iterator)  # the next batch, taken here to fingerprint it, then trained
        self._assign_metrics(batch)
        fingerprint = batch_fingerprint(batch)
        if self._expect_next is not None:
            if fingerprint != self._expect_next:
                self.inexact()
            self._expect_next = None
        if self._pending is not None:
            self._flush(next_batch=fingerprint)
        if self._stop_message is not None:
            self.resume.end_attempt("stopped")
            raise StopRequested(self._stop_message)
        return train_function([batch])

    def peeks(self) -> bool:
        """Whether ``step`` takes batches from fit's iterator itself (no fingerprint
        function, one step per call of the train function)."""
        return self.fingerprint is None and self._steps_per_call() == 1

    def _assign_metrics(self, batch) -> None:
        """A mid-epoch resume whose metrics Keras had not built when the epoch began:
        build them on ``batch`` (no training), then put the interrupted epoch's back."""
        if self._metric_values is None:
            return
        from keepbest.rundir.resume_store import build_metrics

        build_metrics(self.model, batch)
        self.distribution.assign_metrics(self.model, self._metric_values)
        self._metric_values = None

    def _metrics_built(self) -> bool:
        built = {variable.path for variable in self.model.metrics_variables}
        return not (self._metric_values.keys() - built)

    def _steps_per_call(self) -> int:
        return int(getattr(self.model, "steps_per_execution", 1) or 1)

    def _metric_logs(self) -> dict:
        return dict(self.model.get_metrics_result())

    def inexact(self) -> None:
        """Say once, in the run's notes and the log, that this resume is not bit-exact."""
        note = inexact_resume(self.data_name, self.resume.last_step, self.data_fix)
        if self.notes is not None:
            self.notes.append(note)
        log.warning("%s", note)

    data_name = "the data given to fit"  # how the not-bit-exact note names the data
    data_fix = SCRIPT_FIX  # and how it says to make that data's order reproducible

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
            self._save(step, progress, stop_kind=verdict.stop_kind, now=True)
            self.halted, self.stop_reason = True, verdict.stop_reason
            self.model.stop_training = True

    def _sync(self, step: int, progress: Progress, force: bool = False) -> None:
        """At a moment every worker reaches at the same step: stop if any worker was
        signalled, write a state if the chief's cadence wants one, or ``force`` (one
        collective with several workers; local checks with one)."""
        due = self.resume.due(step) or (force and self.resume.writes)
        stop, save = self.distribution.agree(self.stop.requested, due)
        if stop:
            self._stop_for_resume(step, progress, by_another=not self.stop.requested)
        if save:
            self._save(step, progress, now=force)

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
        by = "another worker's signal" if by_another else self.stop.received[0]
        where = (
            f"in epoch {progress.epoch + 1} after batch {progress.batch} of {self.steps_per_epoch}"
            if progress.batch
            else f"after epoch {progress.epoch}"
        )
        message = f"stopped by {by} at step {step} ({where})"
        if self._last_state != step:
            self._save(step, progress)
        if self._pending is not None:  # written by ``step``, with the next batch's fingerprint
            self._stop_message = message
            return
        self.resume.end_attempt("stopped")
        raise StopRequested(message)

    def _flush(self, next_batch: str | None = None) -> None:
        """Write the state that is due (if any)."""
        if self._pending is not None:
            step, progress, started, metrics = self._pending
            self._pending = None
            self._write(step, progress, None, next_batch, metrics, started)

    def _save(
        self, step: int, progress: Progress, stop_kind: str | None = None, now: bool = False
    ) -> None:
        """Write a state (the chief); every worker must call it: a mid-epoch state gathers
        every replica's metric accumulators. While ``step`` takes the batches (``peeks``),
        a state that training goes on from is written just before the next step, with
        that batch's fingerprint (``now``: at once, without one)."""
        started = self.resume.clock()  # what the state costs, all of it, for the cadence
        metrics = self.distribution.read_metrics(self.model) if progress.batch else None
        self._last_state = step  # on every worker, so that all take the same path
        if not now and stop_kind is None and self.peeks():
            self._pending = (step, progress, started, metrics)
            return
        next_batch = self.fingerprint(step) if self.fingerprint else None
        self._write(step, progress, stop_kind, next_batch, metrics, started)

    def _write(self, step, progress, stop_kind, next_batch, metrics, started) -> None:
        if not self.resume.writes:
            return
        self.resume.save(
            self.model,
            progress,
            step,
            stop_kind=stop_kind,
            next_batch=next_batch,
            best=self.best.so_far(),
            metrics=metrics,
            started=started,
            kept=self.best.kept_so_far(),
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
