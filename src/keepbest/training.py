"""``keepbest.train``: config in, verified best checkpoint out, through any interruption.

The order is what makes the promises hold:

1. everything that can be wrong with the input (config, data, builder, optimizer, loss,
   metrics, the monitor's name) is checked before the run directory is touched; a run
   another process is training is refused before TensorFlow is even imported;
2. the run directory is locked; an interrupted commit is finished or undone; a resume
   state, if any, is loaded (a changed config is refused, a finished run is not redone);
3. each epoch's best candidate is judged on the value measured on its saved weights
   (``keepbest.callbacks.best``); every epoch end writes a resume state, and a stop
   signal saves one mid-epoch (``keepbest.callbacks.resume``);
4. after training the model is reloaded from ``best.weights.h5`` (checksum first) and
   the monitored value is measured again and must equal the recorded one
   (``keepbest.measure.verify_best``).

Progress and notices go to the ``keepbest`` loggers; the CLI shows them.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml", ["train.epochs=3"])  # doctest: +SKIP
    >>> result.record.value == result.record.verified_value                     # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keepbest.cluster.distribute import may_write
from keepbest.config import ExperimentConfig, load_config, reported_against
from keepbest.config.diff import training_differences
from keepbest.data.spec import shape_text
from keepbest.errors import ConfigError, NoBestError, RunBusyError, StoppedForResume
from keepbest.rundir import guard
from keepbest.rundir.layout import RunDir
from keepbest.rundir.lock import RunLock, holder_of
from keepbest.rundir.record import BestRecord, mark_verified, read_record, read_record_or_none

if TYPE_CHECKING:
    from keepbest.callbacks.points import Observer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns; ``model`` holds the verified best weights."""

    run_dir: Path
    record: BestRecord
    history: list[dict[str, float]]
    model: object
    stop_reason: str | None
    complete_before: str | None = None  # set when the run had finished before this call
    by_steps: bool = False  # evaluated every N steps (else at epoch ends)

    def summary(self) -> str:
        r = self.record
        diff = r.verified_value - r.value
        exact = "exact" if diff == 0 else f"diff {diff:+.3g}"
        last = self.history[-1] if self.history else {}
        where = f"epoch {r.epoch} of {int(last.get('epoch', r.epoch))}"
        if self.by_steps:
            where = f"step {r.step} (epoch {r.epoch}) of {int(last.get('step', r.step))} steps"
        lines = [
            f"best {r.monitor} = {r.value:.6g} at {where}",
            f"verified after reload: {r.verified_value:.6g} ({exact})",
            f"checkpoint: {self.run_dir / r.checkpoint}",
        ]
        if self.stop_reason:
            lines.insert(1, f"stopped early: {self.stop_reason}")
        if self.complete_before:
            lines.insert(
                0, f"{self.run_dir} is complete ({self.complete_before}); nothing to train"
            )
        return "\n".join(lines)


def set_aside(run: RunDir, overwrite: bool) -> Path | None:
    """Start-over support: move an old run out of the way (or delete it if ``overwrite``)."""
    if not run.path.exists():
        return None
    _refuse_if_busy(run)
    if overwrite:
        shutil.rmtree(run.path)
        return None
    aside = run.set_aside_path()
    run.path.rename(aside)
    return aside


def check_run_dir(cfg: ExperimentConfig, restart: bool = False, overwrite: bool = False) -> RunDir:
    """The run dir ``cfg`` trains in, if training may write there (``keepbest.rundir.guard``):
    not busy, not a file, not a folder of something else, not damaged; checked at once,
    before TensorFlow is even imported."""
    if overwrite and not restart:
        raise ConfigError("--overwrite only goes with --restart")
    run = RunDir(cfg.run_dir())
    _refuse_if_busy(run)
    with reported_against(cfg):
        guard.check_run_dir(run.path, restart, overwrite, writes=may_write(cfg.distribute))
    return run


def _refuse_if_busy(run: RunDir) -> None:
    holder = holder_of(run.path)
    if holder:
        raise RunBusyError(
            f"{run.path} is in use by another training process ({holder}); "
            "wait for it to finish or stop it, or train under another name"
        )


def train(
    config: ExperimentConfig | str | Path | dict,
    overrides: Sequence[str] = (),
    restart: bool = False,
    overwrite: bool = False,
    progress_bar: bool | None = None,
    observers: Sequence[Observer] = (),
) -> TrainResult:
    """Train (or resume) the configured run and return its verified best.

    ``progress_bar``: Keras' progress bar plus a line per new best (True), or one log line
    per epoch (False); by default the bar when stdout is a terminal. ``observers`` are
    called with each ``EvaluationPoint`` (on the chief); what they raise ends training
    and propagates (``keepbest.callbacks.points``).
    """
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError("overrides apply to a config file or mapping, not a parsed config")
        cfg = config
    else:
        cfg = load_config(config, overrides)
    run = check_run_dir(cfg, restart, overwrite)  # before TensorFlow loads

    import keras

    from keepbest.callbacks.mlflow_tracking import require_mlflow, tracking
    from keepbest.callbacks.tensorboard import require_tensorboard
    from keepbest.cluster.distribute import Distribution
    from keepbest.data.pipelines import load_pipelines
    from keepbest.measure import MeasureData
    from keepbest.models import build_model, compile_args, resolve_builder
    from keepbest.signals import StopSignals

    builder = resolve_builder(cfg)
    distribution = Distribution.from_config(cfg.distribute)  # before TF makes its devices
    compiled = compile_args(cfg)
    require_tensorboard(cfg)
    require_mlflow(cfg)
    pipelines = load_pipelines(cfg)
    data = MeasureData.from_pipelines(pipelines)
    _check_every_steps(cfg, pipelines.steps_per_epoch)
    keras.utils.set_random_seed(cfg.seed)
    with distribution.scope():  # a builder that fails here leaves no trace on disk
        model = build_model(cfg, pipelines.spec, builder)
        compiled.apply(model)
    _preflight(cfg, model, data, pipelines)
    chief = distribution.is_chief
    if restart and chief:
        aside = set_aside(run, overwrite)
        if aside:
            log.info("moved the previous run to %s", aside)
    if progress_bar is None:
        progress_bar = sys.stdout.isatty()
    lock = RunLock(run.path) if chief else contextlib.nullcontext()
    lost = distribution.lost_workers_reported(cfg.distribute.heartbeat_timeout)
    with (
        lock,
        StopSignals(cfg.resume.signals) as stop,
        tracking(cfg, run, chief) as tracker,
        lost,
    ):
        observers = [*tracker.observers, *observers]  # MLflow first: it logs pruned points
        result = _train_locked(
            cfg, run, model, pipelines, data, stop, distribution, progress_bar, observers
        )
        tracker.finish(result.record)
        return result


def _check_every_steps(cfg: ExperimentConfig, steps_per_epoch: int) -> None:
    """``every_steps`` must leave at least one evaluation point in the run."""
    every, total = cfg.checkpoint.every_steps, cfg.train.epochs * steps_per_epoch
    if every is not None and every > total:
        with reported_against(cfg):
            raise ConfigError(
                f"checkpoint.every_steps: {every} is more than the run's {total} steps "
                f"({cfg.train.epochs} epochs of {steps_per_epoch}), so nothing would ever be "
                f"evaluated; use at most {total}, or more train.epochs"
            )


def _preflight(cfg: ExperimentConfig, model, data, pipelines) -> None:
    """What the built model and one batch tell before the run dir is touched: a model
    ``load_best`` could never load, targets that do not fit the loss or the model's
    outputs, a model that fails on the data, a monitor it does not log."""
    from keepbest.data.labels import targets_problems
    from keepbest.data.pipelines import labels_key
    from keepbest.inference.load import unloadable_architecture
    from keepbest.rundir.layout import architecture_json

    architecture = architecture_json(model)
    problem = unloadable_architecture(architecture) if architecture else None
    try:
        output_shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):  # a subclassed model: not known
        output_shape = None
    errors, warnings = targets_problems(
        pipelines.spec,
        pipelines.float_targets,
        str(cfg.loss),
        output_shape,
        labels_key(cfg),
        cfg.model.builder,
    )
    if problem:
        errors.insert(0, f"model.builder: {cfg.model.builder}: {problem}")
    with reported_against(cfg):
        if errors:
            raise ConfigError(errors)
    for line in warnings:
        log.warning("%s: %s", cfg.origin, line)
    _check_monitor_is_logged(cfg, model, data, pipelines)


def _check_monitor_is_logged(cfg: ExperimentConfig, model, data, pipelines) -> None:
    """Evaluate one batch to learn the metric names this model logs, so that a monitor
    that only a run would show to be missing (a metric Keras names differently) is
    refused before the run dir is touched; a model or loss that fails on the data fails
    here, as one line that names the builder."""
    from keepbest.errors import MonitorError, one_line
    from keepbest.measure import evaluate_metrics
    from keepbest.monitor import Monitor

    monitor = Monitor(cfg.checkpoint.monitor, cfg.checkpoint.mode)
    try:
        logged = evaluate_metrics(model, data.for_monitor(monitor).take(1))
    except Exception as exc:
        named = pipelines.undecodable(exc)
        with reported_against(cfg):
            if named is not None:
                raise named from None
            raise ConfigError(
                f"model.builder: the model {cfg.model.builder} builds fails on the first batch "
                f"of data with loss {cfg.loss} ({one_line(exc)}); check that its input "
                f"and output fit the data (inputs {shape_text(pipelines.spec.input_shape)}, "
                f"{_targets_text(pipelines)})"
            ) from None
    if monitor.metric not in logged:
        prefix = "val_" if monitor.on_validation else ""
        with reported_against(cfg):
            raise MonitorError(
                f"checkpoint.monitor: {monitor.name!r} is not logged by this run; it logs "
                f"{', '.join(prefix + name for name in logged)}"
            )


def _targets_text(pipelines) -> str:
    spec = pipelines.spec
    if spec.num_classes is not None:
        return f"targets class ids 0 to {spec.num_classes - 1}"
    return f"targets {shape_text(tuple(spec.target_shape))}"


def _train_locked(
    cfg, run: RunDir, model, pipelines, data, stop, distribution, progress_bar, observers
) -> TrainResult:
    import keras

    from keepbest.callbacks.best import BestCheckpoint
    from keepbest.callbacks.history import HistoryCSV
    from keepbest.callbacks.loop import EarlyStop, TrainingLoop
    from keepbest.callbacks.report import Report
    from keepbest.callbacks.resume import Cadence, ResumeWriter
    from keepbest.callbacks.tensorboard import TensorBoardLog
    from keepbest.cluster.slurm import requeue_self, should_requeue
    from keepbest.data.pipelines import batch_fingerprint
    from keepbest.monitor import Monitor
    from keepbest.rundir.record import recover
    from keepbest.rundir.resume_store import ResumeStore, build_metrics, restore
    from keepbest.rundir.status import completion
    from keepbest.signals import StopRequested

    chief = distribution.is_chief
    if chief:
        run.remove_stale_temps()
        record = recover(run.path)
    distribution.barrier()  # the others read what the chief just recovered
    if not chief:
        record = read_record_or_none(run.path)
    store = ResumeStore(run.path)
    state = store.latest()
    differences = training_differences(run.read_config(), cfg) if run.has_run() else []
    if differences:
        with reported_against(cfg):
            raise ConfigError(
                [f"{run.path} was trained with another config; these differ:"]
                + [f"  {line}" for line in differences]
                + ["use the original config, or start over with --restart"]
            )
    ck = cfg.checkpoint
    monitor = Monitor(ck.monitor, ck.mode, ck.min_delta, ck.baseline)
    schedule = ck.schedule()

    finished = completion(cfg, state, record) if state else None
    if finished:
        if record is None:
            raise NoBestError(f"{run.path} finished ({finished}) without any best checkpoint")
        model, record = _verify(model, run, record, monitor, data, cfg, chief)
        stop_reason = finished if state.manifest.stop_kind else None
        return TrainResult(
            run.path, record, state.history, model, stop_reason, finished, schedule.by_steps
        )

    if chief:
        run.write_setup(cfg, pipelines.spec, model)
    steps = pipelines.steps_per_epoch

    def fingerprint(step: int) -> str:
        return batch_fingerprint(pipelines.train_stream(step))

    start_epoch, first_batch, metric_values, rows, notes = 0, 0, None, [], []
    if state:
        metric_values = restore(model, state)
        if metric_values:
            build_metrics(model, next(iter(pipelines.train_eval)))
        start_epoch, first_batch = state.progress.epoch, state.progress.batch
        rows, notes = state.history, list(state.manifest.notes)
        best_so_far = "no best yet"
        if record:
            at = f"step {record.step}" if schedule.by_steps else f"epoch {record.epoch}"
            best_so_far = f"best {record.monitor} {record.value:.6g} at {at}"
        where = f"epoch {start_epoch + 1}" + (f", batch {first_batch + 1}" if first_batch else "")
        log.info("resuming at %s, %s", where, best_so_far)
        if state.manifest.next_batch and state.manifest.next_batch != fingerprint(
            state.manifest.global_step
        ):
            notes.append(_inexact_resume(cfg, state.manifest.global_step))
            log.warning("%s", notes[-1])

    best = BestCheckpoint(
        run.path,
        monitor,
        data,
        schedule,
        patience=ck.patience,
        stop_on_nonfinite=ck.stop_on_nonfinite,
        record=record,
        so_far=state.manifest.best if state else None,
        writes=chief,
    )
    history = HistoryCSV(run.history_file, rows, writes=chief)
    if state:
        history.rewrite()
    resume = ResumeWriter(
        store,
        history,
        Cadence(cfg.resume.every_steps, cfg.resume.every_seconds, cfg.resume.max_overhead),
        start_step=start_epoch * steps + first_batch,
        last_cost=state.manifest.write_seconds if state else None,
        writes=chief,
    )
    resume.notes = best.notes = notes  # one list: what a state and best.json remember
    listeners = []
    if chief:
        listeners.append(Report(cfg.train.epochs, every_point=not progress_bar))
        if cfg.logging.tensorboard:
            listeners.append(TensorBoardLog(run.path))
        listeners += list(observers)
    loop = TrainingLoop(
        best=best,
        history=history,
        resume=resume,
        stop=stop,
        steps_per_epoch=steps,
        distribution=distribution,
        listeners=listeners,
        first_batch=first_batch,
        metric_values=metric_values,
        fingerprint=fingerprint,
        sync_every=cfg.distribute.sync_every_steps,
    )
    callbacks = [loop]
    if progress_bar and chief:  # Keras' bar ends each epoch's line before the report's
        callbacks.insert(0, keras.callbacks.ProgbarLogger())
    # At epoch ends Keras' own validation pass serves the epoch-end evaluation points;
    # with every_steps the points measure validation themselves, and Keras must not.
    validation = None if schedule.by_steps else pipelines.validation

    def fit(first_epoch: int, last_epoch: int, start_batch: int, steps_per_epoch: int) -> None:
        model.fit(
            pipelines.train_stream(start_batch),
            steps_per_epoch=steps_per_epoch,
            initial_epoch=first_epoch,
            epochs=last_epoch,
            validation_data=validation,
            callbacks=callbacks,
            verbose=1 if progress_bar and chief else 0,
            shuffle=False,  # the stream is already shuffled per (seed, epoch)
        )

    try:
        if first_batch:  # finish the interrupted epoch, then go on with whole epochs
            start = start_epoch * steps + first_batch
            fit(start_epoch, start_epoch + 1, start, steps - first_batch)
            start_epoch += 1
        if start_epoch < cfg.train.epochs:
            fit(start_epoch, cfg.train.epochs, start_epoch * steps, steps)
        loop.finish(cfg.train.epochs)
    except EarlyStop:
        pass  # the loop saved the state that says so; the best is verified below
    except StopRequested as stopped:
        note = "run the same command to resume"
        if should_requeue(cfg.resume.requeue) and chief:
            note = requeue_self()
        raise StoppedForResume(f"{stopped}; resume state saved in {store.folder}; {note}") from None
    except Exception as exc:  # an image that cannot be decoded is named (bad input: exit 2)
        named = pipelines.undecodable(exc, then="then run the same command to resume")
        if named is None:
            raise
        with reported_against(cfg):
            raise named from None

    if best.best_epoch is None:
        raise NoBestError(
            f"no {'evaluation' if schedule.by_steps else 'epoch'} qualified as best {monitor.name} "
            f"({best.stop_reason or 'none was finite and beat the baseline'}); "
            "nothing was saved: check the learning rate, or checkpoint.baseline"
        )
    distribution.barrier()  # the chief's last best checkpoint is on disk for everyone
    record = best.record if chief else read_record(run.path)
    model, record = _verify(model, run, record, monitor, data, cfg, chief)
    return TrainResult(
        run.path, record, history.rows, model, best.stop_reason, by_steps=schedule.by_steps
    )


def _inexact_resume(cfg: ExperimentConfig, step: int) -> str:
    """The one line that says a resume could not be bit-exact, and how to fix that."""
    source = getattr(cfg.data, "factory", None) or f"data source {cfg.data.source}"
    return (
        f"resumed at step {step}, but {source} gave a first batch other than the one the "
        "interrupted run would have seen next: this run is not bit-exact from here on; "
        "make the dataset deterministic (a fixed shuffle seed, "
        "reshuffle_each_iteration=False, or return arrays and let keepbest shuffle)"
    )


def _verify(model, run: RunDir, record: BestRecord, monitor, data, cfg, chief=True):
    """Reload the best checkpoint into ``model`` and check that it reproduces its value;
    the chief records the verified value in ``best.json``."""
    from keepbest.measure import tolerance, verify_best

    allowed = tolerance(cfg.checkpoint.verify_tolerance)
    measured = verify_best(model, run.path, record, monitor, data, allowed)
    if not chief:  # the chief records it; the others only report it
        record = record.model_copy(update={"verified_value": measured})
    elif record.verified_value != measured:
        record = mark_verified(run.path, record, measured)
    return model, record
