"""One training session in a run dir: from the locked start to the verified best.

``RunSession`` is what ``keepbest.KeepBest`` does around ``fit`` (and so what
``keepbest.train`` does, through the same callback):

1. ``open``: finish or undo a best commit a kill interrupted, find the newest resume
   state, refuse a run trained with another config or model (the differences listed),
   recognise a finished run, write the run's setup files, restore the state (model,
   optimizer, seed generators, metric accumulators, progress, the best so far) and wire
   the training loop (``callbacks.loop``: best, history, resume states, listeners);
2. ``verify``: reload ``best.weights.h5`` into the model (checksum first), measure the
   monitor again and require the recorded value (``keepbest.measure.verify_best``); the
   chief records ``verified_value`` in ``best.json``.

``RunSetup`` is what the session needs to know of the run: its config (written to
``config.yaml``, compared on resume), data spec, the measuring data and how fit's
batches are fingerprinted.

Example:

    >>> session = RunSession(run_dir, setup, model)    # doctest: +SKIP
    >>> session.open()                                 # doctest: +SKIP
    >>> session.start_epoch, session.first_batch       # doctest: +SKIP
    (4, 7)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from keepbest.callbacks.best import BestCheckpoint
from keepbest.callbacks.history import HistoryCSV
from keepbest.callbacks.loop import TrainingLoop
from keepbest.callbacks.resume import Cadence, ResumeWriter
from keepbest.checkpoint import load_best_weights
from keepbest.cluster.distribute import Distribution
from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.diff import flatten, training_differences
from keepbest.data.spec import DataSpec
from keepbest.errors import ConfigError, NoBestError, VerificationError
from keepbest.measure import FitValidation, MeasureData, tolerance, values_match, verify_best
from keepbest.monitor import Monitor
from keepbest.rundir.layout import RunDir, architecture_json
from keepbest.rundir.record import BestRecord, mark_verified, read_record, read_record_or_none
from keepbest.rundir.resume_store import ResumeState, ResumeStore, build_metrics, restore
from keepbest.rundir.status import completion
from keepbest.signals import StopSignals

log = logging.getLogger("keepbest.training")


@dataclasses.dataclass
class RunSetup:
    """What a session needs to know of the run besides the model."""

    cfg: ExperimentConfig  # written to config.yaml; a resume must match it
    spec: DataSpec
    data: MeasureData  # what the monitor is measured on
    steps_per_epoch: int
    distribution: Distribution = dataclasses.field(default_factory=Distribution)
    # the fingerprint of the first batch a run resumed at a step sees; None: the batch
    # fit hands the train function is fingerprinted (``TrainingLoop.step``)
    fingerprint: Callable[[int], str] | None = None
    data_name: str = "the data given to fit"  # for the not-bit-exact note
    data_fix: str | None = None  # how to make that data's order reproducible
    listeners: Sequence[Callable] = ()
    rerun: str = "run the same command to resume"  # what to do after a stop signal
    fresh: str = "use the original config, or start over with --restart"  # another run
    compare_architecture: bool = False  # a script's model: compare it with model.json
    # the other callbacks in fit (``train.callbacks``): their counters go into each state
    callbacks: Sequence[Any] = ()


class RunSession:
    def __init__(self, run_dir: Path, setup: RunSetup, model, stop: StopSignals):
        self.run = RunDir(run_dir)
        self.setup = setup
        self.model = model
        self.stop = stop
        self.distribution = setup.distribution
        self.chief = setup.distribution.is_chief
        ck = setup.cfg.checkpoint
        self.monitor = Monitor(ck.monitor, ck.mode, ck.min_delta, ck.baseline)
        self.schedule = ck.schedule()
        self.record: BestRecord | None = None
        self.state: ResumeState | None = None
        self.complete_before: str | None = None  # the run had finished before this session
        self.start_epoch = 0
        self.first_batch = 0
        self.loop: TrainingLoop | None = None

    # ------------------------------------------------------------------ open

    def open(self) -> None:
        """Recover, check, restore and wire; see the module docstring."""
        cfg, run = self.setup.cfg, self.run
        if self.chief:
            run.remove_stale_temps()
            from keepbest.rundir.record import recover

            self.record = recover(run.path)
        self.distribution.barrier()  # the others read what the chief just recovered
        if not self.chief:
            self.record = read_record_or_none(run.path)
        self.state = ResumeStore(run.path).latest()
        self._refuse_another_run()
        if self.state:
            self.complete_before = completion(cfg, self.state, self.record)
        if self.complete_before:
            if self.record is None:
                raise NoBestError(
                    f"{run.path} finished ({self.complete_before}) without any best checkpoint"
                )
            return
        if self.chief:
            run.write_setup(cfg, self.setup.spec, self.model)
        self._wire(self._restore())

    def _refuse_another_run(self) -> None:
        cfg, run = self.setup.cfg, self.run
        if not run.has_run():
            return
        differences = training_differences(run.read_config(), cfg)
        if self.setup.compare_architecture:
            differences += architecture_differences(run.model_file, self.model)
        if differences:
            with reported_against(cfg):
                raise ConfigError(
                    [f"{run.path} was trained with another config; these differ:"]
                    + [f"  {line}" for line in differences]
                    + [self.setup.fresh]
                )

    def _restore(self) -> tuple[dict | None, list, list[str]]:
        """Load the resume state into the model: (metric accumulators, history rows,
        notes)."""
        state = self.state
        if not state:
            return None, [], []
        metric_values = restore(self.model, state)
        built = {variable.path for variable in self.model.metrics_variables}
        train_eval = self.setup.data.train_eval
        if metric_values and metric_values.keys() - built and train_eval is not None:
            build_metrics(self.model, next(iter(train_eval)))  # else the loop's step does
        self.start_epoch, self.first_batch = state.progress.epoch, state.progress.batch
        record, at = self.record, "no best yet"
        if record:
            where = f"step {record.step}" if self.schedule.by_steps else f"epoch {record.epoch}"
            at = f"best {record.monitor} {record.value:.6g} at {where}"
        batch = f", batch {self.first_batch + 1}" if self.first_batch else ""
        log.info("resuming at epoch %d%s, %s", self.start_epoch + 1, batch, at)
        return metric_values, state.history, list(state.manifest.notes)

    def _wire(self, restored: tuple[dict | None, list, list[str]]) -> None:
        metric_values, rows, notes = restored
        setup, cfg, state = self.setup, self.setup.cfg, self.state
        ck, steps = cfg.checkpoint, setup.steps_per_epoch
        best = BestCheckpoint(
            self.run.path,
            self.monitor,
            setup.data,
            self.schedule,
            patience=ck.patience,
            stop_on_nonfinite=ck.stop_on_nonfinite,
            record=self.record,
            so_far=state.manifest.best if state else None,
            writes=self.chief,
            kept=ck.kept(),
            kept_so_far=state.manifest.kept if state else None,
        )
        history = HistoryCSV(self.run.history_file, rows, writes=self.chief)
        if state:
            history.rewrite()
        resume = ResumeWriter(
            ResumeStore(self.run.path),
            history,
            Cadence(cfg.resume.every_steps, cfg.resume.every_seconds, cfg.resume.max_overhead),
            start_step=self.start_epoch * steps + self.first_batch,
            last_cost=state.manifest.write_seconds if state else None,
            writes=self.chief,
        )
        resume.begin_attempt()  # recorded; earlier attempts' failures shape the cadence
        expected = state.manifest.next_batch if state else None
        loop = TrainingLoop(
            best=best,
            history=history,
            resume=resume,
            stop=self.stop,
            steps_per_epoch=steps,
            distribution=self.distribution,
            listeners=list(setup.listeners) if self.chief else [],
            first_batch=self.first_batch,
            metric_values=metric_values,
            fingerprint=setup.fingerprint,
            sync_every=cfg.distribute.sync_every_steps,
            expect_next=expected if setup.fingerprint is None else None,
        )
        loop.data_name = setup.data_name
        if setup.data_fix is not None:
            loop.data_fix = setup.data_fix
        loop.notes = resume.notes = best.notes = notes  # what a state and best.json remember
        resume.callbacks = loop.callbacks = list(setup.callbacks)
        loop.callback_states = list(state.manifest.callbacks) if state else []
        fingerprint = setup.fingerprint
        if expected and fingerprint is not None and expected != fingerprint(loop.resume.last_step):
            loop.inexact()
        self.loop = loop

    # ------------------------------------------------------------------ the end

    def best_record(self) -> BestRecord:
        """The best on disk once training ended (``NoBestError`` if nothing qualified)."""
        if self.complete_before:
            return self.record
        best = self.loop.best
        if best.best_epoch is None:
            by = "evaluation" if self.schedule.by_steps else "epoch"
            raise NoBestError(
                f"no {by} qualified as best {self.monitor.name} "
                f"({best.stop_reason or 'none was finite and beat the baseline'}); "
                "nothing was saved: check the learning rate, or the baseline"
            )
        self.distribution.barrier()  # the chief's last best checkpoint is on disk for all
        return best.record if self.chief else read_record(self.run.path)

    def verify(self) -> BestRecord:
        """Reload the best checkpoint into the model and check that it reproduces its
        value; the chief records the verified value in ``best.json``."""
        record = self.best_record()
        validation = self.setup.data.validation
        unseen = isinstance(validation, FitValidation) and validation.iterator is None
        if unseen and self.monitor.on_validation and record.verified:
            # A finished run fit ran no epoch of: its validation data was never seen.
            # The best was verified when it finished; load it (checksum first).
            load_best_weights(self.model, self.run.path, record)
            log.info(
                "%s: loaded the best (verified as %r when training ended); fit ran no "
                "validation pass to measure it again",
                self.run.path,
                record.verified_value,
            )
            self.record = record
            return record
        allowed = tolerance(self.setup.cfg.checkpoint.verify_tolerance)
        measured = verify_best(
            self.model, self.run.path, record, self.monitor, self.setup.data, allowed
        )
        if not self.chief:  # the chief records it; the others only report it
            record = record.model_copy(update={"verified_value": measured})
        elif record.verified_value != measured:
            record = mark_verified(self.run.path, record, measured)
        self.record = record
        average = self.setup.cfg.checkpoint.average
        if average is not None and record.average is None:
            self.record = record = self._average(record, average.of, average.k, allowed)
        return record

    def _average(self, record: BestRecord, of: str, k: int, allowed: float) -> BestRecord:
        """``checkpoint.average``: average the kept points' files (``rundir.average``),
        measure the average like every point, keep ``average.weights.h5`` if it beats the
        best, reload it and measure again; the record says which and both values. The
        model ends with the better weights."""
        from keepbest.atomic import sync_and_hash, temp_path_for
        from keepbest.rundir.average import average_files
        from keepbest.rundir.layout import AVERAGE_FILE
        from keepbest.rundir.record import AverageRecord, commit_average

        points = (record.top if of == "top_k" else record.last)[:k]
        files = [self.run.path / kept.checkpoint for kept in points]
        if len(points) < 2:
            log.warning(
                "%s: checkpoint.average: %d point(s) kept, nothing to average",
                self.run.path,
                len(points),
            )
            return record
        target = self.run.path / AVERAGE_FILE
        tmp = temp_path_for(target)
        try:
            average_files(files, tmp)
            value = _measure_file(
                self.model, self.run.path, record, tmp, self.monitor, self.setup.data
            )
            better = dataclasses.replace(self.monitor, min_delta=0.0, mode=record.mode).improves(
                value, record.value
            )
            sha = sync_and_hash(tmp) if better else None
            verified = None
            if better:
                verified = _measure_file(
                    self.model, self.run.path, record, tmp, self.monitor, self.setup.data
                )
                if not values_match(verified, value, allowed):
                    raise VerificationError(
                        f"{target} reloaded gives {self.monitor.name} = {verified!r}, but "
                        f"it measured {value!r}; the average does not reproduce its value"
                    )
            summary = AverageRecord(
                of=of,
                steps=[kept.step for kept in points],
                value=value,
                better=better,
                checkpoint=AVERAGE_FILE if better else None,
                sha256=sha,
                verified_value=verified,
            )
            updated = record.model_copy(update={"average": summary})
            if self.chief:
                commit_average(self.run.path, tmp if better else None, updated)
        finally:
            tmp.unlink(missing_ok=True)
        if not better:
            load_best_weights(self.model, self.run.path, record)
        log.info(
            "average of %d %s points: %s = %.6g (best %.6g): %s",
            len(points),
            "best" if of == "top_k" else "latest",
            self.monitor.name,
            value,
            record.value,
            f"kept as {AVERAGE_FILE}" if better else "not better, not kept",
        )
        return updated

    @property
    def stop_reason(self) -> str | None:
        if self.complete_before:
            return self.complete_before if self.state.manifest.stop_kind else None
        return self.loop.stop_reason if self.loop else None

    @property
    def history(self) -> list[dict[str, float]]:
        if self.loop is not None:
            return self.loop.history.rows
        return self.state.history if self.state else []


def _measure_file(model, run_dir: Path, record: BestRecord, path: Path, monitor, data) -> float:
    """Load a weights file into ``model`` (the one loading path, ``load_best_weights``)
    and measure the monitor on it."""
    from keepbest.measure import measure

    load_best_weights(model, run_dir, record, weights=path)
    return measure(model, monitor, data)


def architecture_differences(model_file: Path, model, most: int = 5) -> list[str]:
    """``model.json: key: old -> new`` for the first differences between a run's saved
    architecture and ``model``'s (its compile settings aside); none when either has no
    serialized architecture."""
    current = architecture_json(model)
    if current is None or not model_file.is_file():
        return []
    try:
        saved = json.loads(model_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"{model_file.name}: unreadable"]
    now = json.loads(current)
    for config in (saved, now):
        if isinstance(config, dict):
            config.pop("compile_config", None)
    old, new = flatten(saved, lists=True), flatten(now, lists=True)
    lines = [
        f"{model_file.name}: {key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if _unnumbered(old.get(key)) != _unnumbered(new.get(key))
    ]
    return lines[:most] + ([f"... and {len(lines) - most} more"] if len(lines) > most else [])


def _unnumbered(value: Any) -> Any:
    """A name without Keras' automatic number (``dense_6`` -> ``dense``): the same model
    built twice in one process (a notebook) is named anew, and is the same model."""
    return re.sub(r"_\d+$", "", value) if isinstance(value, str) else value
