"""The heart of keepbest: keep the best weights on disk, judged on exactly the saved weights.

Like ``ModelCheckpoint(save_best_only=True)`` plus ``EarlyStopping``, with three
differences that matter:

- the monitored value is measured on the weights being saved (``keepbest.measure``): a
  training-set monitor gets an evaluation pass over the training data, never Keras'
  running mean;
- the best weights live only on disk, written by ``keepbest.checkpoint.save_best``
  (atomic, fsync'ed, sha256 recorded); no copy is ever held in memory;
- patience counts evaluation points since the best *on disk*, and a non-finite value
  never wins.

``judge`` is called at each evaluation point (``keepbest.callbacks.loop`` decides when);
it needs no Keras callback machinery of its own.

Example:

    >>> from keepbest.callbacks.best import BestCheckpoint
    >>> from keepbest.monitor import Monitor, Schedule
    >>> best = BestCheckpoint(run_dir, Monitor("val_loss", "min"), data, Schedule(),
    ...                       patience=5)                                 # doctest: +SKIP
    >>> verdict = best.judge(model, epoch=3, step=69, logs=logs)           # doctest: +SKIP
    >>> verdict.saved, best.best_epoch, best.best_value                   # doctest: +SKIP
    (True, 3, 0.0831)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from keepbest.checkpoint import library_versions, save_best, save_kept
from keepbest.measure import MeasureData, deployed_weights, measure_point
from keepbest.monitor import (
    Kept,
    Monitor,
    Schedule,
    StopKind,
    patience_exhausted,
    resolve_mode,
    stop_reason,
)
from keepbest.rundir.layout import WEIGHTS_FILE, kept_file
from keepbest.rundir.record import BestRecord, KeptFile, now_text
from keepbest.rundir.resume_store import BestSoFar


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What an evaluation point decided."""

    value: float  # the monitored value measured on the current weights
    saved: bool  # these weights are the best checkpoint (now, or already: a replay)
    stop_kind: StopKind | None = None
    stop_reason: str | None = None


class BestCheckpoint:
    """Judge each evaluation point on its measured value; save a new best durably; decide
    to stop on patience or a non-finite value.

    ``record`` is the best already on disk (a resumed run); a point that reproduces it
    exactly (the replay of a point whose checkpoint landed before a kill) counts as
    saved. With ``writes=False`` (a non-chief worker) it decides the same, writes nothing.
    """

    def __init__(
        self,
        run_dir: Path,
        monitor: Monitor,
        data: MeasureData,
        schedule: Schedule,
        patience: int | None = None,
        stop_on_nonfinite: bool = True,
        record: BestRecord | None = None,
        so_far: BestSoFar | None = None,
        writes: bool = True,
        kept: Kept | None = None,
        kept_so_far: dict | None = None,
    ):
        """``record`` is the best on disk; ``so_far`` the best as of the point training
        continues from (a resume state's; None for a fresh start). A record newer than
        that (its commit landed, the state after it did not) is replayed, not written
        again."""
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.data = data
        self.schedule = schedule
        self.patience = patience
        self.stop_on_nonfinite = stop_on_nonfinite
        self.writes = writes
        self.record = record
        known = so_far
        self.best_value = known.value if known else None
        self.best_epoch = known.epoch if known else None
        self.best_step = known.step if known else None
        # checkpoint.keep_top / average: the kept points (as of the state resumed from)
        self.kept = _restored(kept or Kept(), kept_so_far)
        self._epochs: dict[int, int] = {}  # step -> epoch of the points kept by this run
        # A commit on disk that this run has not reached again yet.
        self.ahead = record if record is not None and not _same(record, known) else None
        if self.kept.files and record is not None:
            self.ahead = record if record.newest_step not in self.kept.steps() else None
        self.mode = record.mode if record else (None if monitor.mode == "auto" else monitor.mode)
        self.stop_kind: StopKind | None = None
        self.stop_reason: str | None = None
        self.notes: list[str] = list(record.notes) if record else []  # kept in best.json
        self._versions = library_versions()

    def so_far(self) -> BestSoFar | None:
        """The best as of now, for a resume state."""
        if self.best_epoch is None:
            return None
        return BestSoFar(epoch=self.best_epoch, step=self.best_step, value=self.best_value)

    def judge(self, model, epoch: int, step: int, logs: dict[str, float]) -> Verdict:
        """Measure the current weights (``epoch`` is 1-based, ``step`` the global step),
        add what was measured and ``best_saved`` to ``logs``, save a new best. The
        weights judged and saved are those a user deploys (``deployed_weights``: the
        moving averages with ``use_ema``)."""
        with deployed_weights(model) as swapped:
            return self._judge(model, epoch, step, logs, swapped)

    def _judge(self, model, epoch: int, step: int, logs: dict[str, float], swapped: bool):
        logs.update(measure_point(model, self.monitor, self.data, logs, own_pass=swapped))
        value = float(logs[self.monitor.log_key])
        if self.mode is None:
            self.mode = resolve_mode(self.monitor.name, self.monitor.mode, model)
        monitor = dataclasses.replace(self.monitor, mode=self.mode)
        ordinal = self.schedule.ordinal(epoch, step)
        improved = ordinal > self.schedule.start_from and monitor.improves(value, self.best_value)
        on_disk = False
        if self.ahead is not None and self._at(self.ahead, epoch, step):
            # The replay of the point whose checkpoint is on disk: the same value means the
            # same weights (else this resume diverged, and the point is judged afresh).
            on_disk = value == self.ahead.value
            self.ahead = None
        elif self.ahead is not None and self._past(self.ahead, epoch, step):
            self.ahead = None  # the replay never met it: judge afresh from here on
        before = self.kept
        if self.kept.files and ordinal > self.schedule.start_from:
            self.kept = self.kept.add(step, value, improved, monitor.mode)
            self._epochs[step] = epoch
        if self.kept.files:
            if self.writes and self.ahead is None and not on_disk and self.kept != before:
                self._commit_kept(model, before, epoch, step, value, improved, monitor)
        elif improved and self.writes and self.ahead is None and not on_disk:
            self.record = save_best(
                self.run_dir,
                model,
                epoch=epoch,
                step=step,
                monitor=monitor.name,
                mode=monitor.mode,
                value=value,
                versions=self._versions,
                notes=self.notes,
            )
        if improved:
            self.best_value, self.best_epoch, self.best_step = value, epoch, step
        logs["best_saved"] = 1.0 if improved else 0.0
        self._decide_stop(epoch, step, ordinal, value)
        return Verdict(value, improved, self.stop_kind, self.stop_reason)

    def _at(self, record: BestRecord, epoch: int, step: int) -> bool:
        if record.newest_step is not None:
            return record.newest_step == step
        return not self.schedule.by_steps and record.epoch == epoch  # a record without step

    def _past(self, record: BestRecord, epoch: int, step: int) -> bool:
        if record.newest_step is not None:
            return step > record.newest_step
        return epoch > record.epoch

    def kept_so_far(self) -> dict | None:
        """The kept points as of now, for a resume state."""
        if not self.kept.files:
            return None
        kept = self.kept
        return {
            "best": [list(kept.best)] if kept.best else [],
            "others": [list(p) for p in kept.others],
            "last": [list(p) for p in kept.last_points],
        }

    def _commit_kept(self, model, before: Kept, epoch, step, value, improved, monitor) -> None:
        """Write this point's file if it is kept, the new record, then drop the files of
        the points no longer kept (``checkpoint.save_kept``)."""
        known = self.record.kept_files() if self.record else {}
        by_step = {kept.step: kept for kept in known.values()}

        def entry(point: tuple[int, float]) -> KeptFile:
            at, point_value = point
            if at in by_step:
                return by_step[at]
            return KeptFile(
                epoch=self._epochs.get(at, epoch),
                step=at,
                value=point_value,
                checkpoint=kept_file(at),
                sha256="",
            )

        kept = self.kept
        top = [entry(kept.best), *(entry(p) for p in kept.others)] if kept.best else []
        last = [entry(p) for p in kept.last_points]
        new_file = kept_file(step) if step in kept.steps() and step not in by_step else None
        if improved:
            head = {"epoch": epoch, "step": step, "value": value, "sha256": ""}
        else:
            old = self.record
            head = {"epoch": old.epoch, "step": old.step, "value": old.value}
            head["sha256"] = old.sha256
        record = BestRecord(
            **head,
            monitor=monitor.name,
            mode=monitor.mode,
            checkpoint=WEIGHTS_FILE,
            saved_at=now_text(),
            versions=self._versions,
            notes=list(self.notes),
            top=top,
            last=last,
        )
        dropped = sorted({kept_file(s) for s in before.steps() - kept.steps()})
        self.record = save_kept(self.run_dir, model, record, new_file, improved, dropped)

    def best_ordinal(self) -> int | None:
        if self.best_epoch is None:
            return None
        if self.schedule.by_steps and self.best_step is None:
            return None
        return self.schedule.ordinal(self.best_epoch, self.best_step or 0)

    def _decide_stop(self, epoch: int, step: int, ordinal: int, value: float) -> None:
        name = self.monitor.name
        if self.stop_on_nonfinite and not math.isfinite(value):
            where = f"at step {step}" if self.schedule.by_steps else f"at epoch {epoch}"
            self.stop_kind = "nonfinite"
            self.stop_reason = stop_reason("nonfinite", name, value=value, where=where)
            return
        waited = patience_exhausted(
            ordinal, self.best_ordinal(), self.patience, self.schedule.start_from
        )
        if waited is not None:
            self.stop_kind = "patience"
            self.stop_reason = stop_reason(
                "patience", name, waited=waited, patience=self.patience, unit=self.schedule.unit
            )


def _restored(kept: Kept, saved: dict | None) -> Kept:
    """``kept`` with the points a resume state recorded (``kept_so_far``)."""
    if not saved:
        return kept
    point = lambda p: (int(p[0]), float(p[1]))  # noqa: E731
    return dataclasses.replace(
        kept,
        best=point(saved["best"][0]) if saved.get("best") else None,
        others=tuple(point(p) for p in saved.get("others", [])),
        last_points=tuple(point(p) for p in saved.get("last", [])),
    )


def _same(record: BestRecord, known: BestSoFar | None) -> bool:
    return known is not None and (record.epoch, record.step, record.value) == (
        known.epoch,
        known.step,
        known.value,
    )
