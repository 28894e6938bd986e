"""``keepbest.train``: config in, verified best checkpoint out, through any interruption.

The order is what makes the promises hold:

1. everything that can be wrong with the input (config, data, builder, optimizer, loss,
   metrics) is checked before the run directory is touched;
2. the run directory is locked; an interrupted commit is finished or undone; a resume
   state, if any, is loaded (a changed config is refused, a finished run is not redone);
3. each epoch's best candidate is judged on the value measured on its saved weights;
   every epoch end writes a resume state, and a stop signal saves one mid-epoch;
4. after training the model is reloaded from ``best.weights.h5`` (checksum first) and
   the monitored value is measured again and must equal the recorded one.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml", ["train.epochs=3"])  # doctest: +SKIP
    >>> result.record.value == result.record.verified_value                     # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from keepbest.config import ExperimentConfig, load_config, reported_against
from keepbest.config_diff import training_differences
from keepbest.errors import (
    ConfigError,
    NoBestCheckpointError,
    NoBestError,
    RunBusyError,
    StoppedForResume,
    VerificationError,
)
from keepbest.lock import RunLock, holder_of
from keepbest.record import BestRecord, mark_verified, read_record, recover, verify_checksum
from keepbest.run_dir import RunDir


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns; ``model`` holds the verified best weights."""

    run_dir: Path
    record: BestRecord
    history: list[dict[str, float]]
    model: object
    stop_reason: str | None
    complete_before: str | None = None  # set when the run had finished before this call

    def summary(self) -> str:
        r = self.record
        diff = r.verified_value - r.value
        exact = "exact" if diff == 0 else f"diff {diff:+.3g}"
        lines = [
            f"best {r.monitor} = {r.value:.6g} at epoch {r.epoch} of {len(self.history)}",
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


def default_tolerance() -> float:
    """Exact on CPU (evaluate is bit-reproducible there); relative 1e-5 with a GPU."""
    import tensorflow as tf

    return 1e-5 if tf.config.list_physical_devices("GPU") else 0.0


def values_match(measured: float, recorded: float, tolerance: float) -> bool:
    if tolerance == 0.0:
        return measured == recorded
    return math.isclose(measured, recorded, rel_tol=tolerance, abs_tol=tolerance)


def set_aside(run_dir: Path, overwrite: bool) -> Path | None:
    """Start-over support: move an old run out of the way (or delete it if ``overwrite``)."""
    if not run_dir.exists():
        return None
    holder = holder_of(run_dir)
    if holder:
        raise RunBusyError(f"{run_dir} is in use by another training process ({holder})")
    if overwrite:
        shutil.rmtree(run_dir)
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    run_dir.rename(aside)
    return aside


def completion(cfg: ExperimentConfig, state, record: BestRecord | None) -> str | None:
    """Why a run with this resume state is finished under ``cfg``, or None if it is not."""
    from keepbest.best_checkpoint import patience_exhausted

    progress = state.progress
    if progress.batch:
        return None
    ck = cfg.checkpoint
    if progress.epoch >= cfg.train.epochs:
        return f"all {cfg.train.epochs} epochs are done"
    if state.manifest.stop_kind == "nonfinite" and ck.stop_on_nonfinite:
        return f"{ck.monitor} became non-finite"
    best_epoch = record.epoch if record else None
    waited = patience_exhausted(progress.epoch, best_epoch, ck.patience, ck.start_from_epoch)
    if waited is not None:
        return f"no improvement of {ck.monitor} for {waited} epochs (patience {ck.patience})"
    return None


def train(
    config: ExperimentConfig | str | Path | dict,
    overrides: Sequence[str] = (),
    restart: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or resume) the configured run and return its verified best."""
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError("overrides apply to a config file or mapping, not a parsed config")
        cfg = config
    else:
        cfg = load_config(config, overrides)
    if overwrite and not restart:
        raise ConfigError("--overwrite only goes with --restart")

    import keras

    from keepbest.data import load_pipelines
    from keepbest.distribute import Distribution
    from keepbest.models import build_model, compile_args, resolve_builder
    from keepbest.signals import StopSignals
    from keepbest.tensorboard_logging import require_tensorboard

    builder = resolve_builder(cfg)
    distribution = Distribution.from_config(cfg.distribute)  # before TF makes its devices
    compiled = compile_args(cfg)
    require_tensorboard(cfg)
    pipelines = load_pipelines(cfg)
    keras.utils.set_random_seed(cfg.seed)
    with distribution.scope():  # a builder that fails here leaves no trace on disk
        model = build_model(cfg, pipelines.spec, builder)
        compiled.apply(model)
    run = RunDir(cfg.run_dir())
    chief = distribution.is_chief
    if restart and chief:
        aside = set_aside(run.path, overwrite)
        if aside:
            print(f"moved the previous run to {aside}")
    lock = RunLock(run.path) if chief else contextlib.nullcontext()
    with lock, StopSignals(cfg.resume.signals) as stop:
        return _train_locked(cfg, run, model, pipelines, stop, distribution)


def _train_locked(cfg, run: RunDir, model, pipelines, stop, distribution) -> TrainResult:
    import keras

    from keepbest.atomic import remove_stale_temps
    from keepbest.best_checkpoint import BestCheckpoint
    from keepbest.history_callback import HistoryCSV
    from keepbest.monitor import Monitor
    from keepbest.progress import EpochReport
    from keepbest.resume_checkpoint import ResumeCheckpoint
    from keepbest.resume_state import ResumeStore, build_metrics, restore
    from keepbest.signals import StopRequested
    from keepbest.slurm import requeue_self, should_requeue
    from keepbest.tensorboard_logging import tensorboard_callback

    chief = distribution.is_chief
    if chief:
        remove_stale_temps(run.path)
        record = recover(run.path)
    distribution.barrier()  # the others read what the chief just recovered
    if not chief:
        record = _read_record_or_none(run.path)
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

    finished = completion(cfg, state, record) if state else None
    if finished:
        if record is None:
            raise NoBestError(f"{run.path} finished ({finished}) without any best checkpoint")
        model, record = _verify(model, run, record, monitor, pipelines, cfg, chief)
        stop_reason = finished if state.manifest.stop_kind else None
        return TrainResult(run.path, record, state.history, model, stop_reason, finished)

    if chief:
        run.write_setup(cfg, pipelines.spec, model)
    start_epoch, first_batch, metric_values, rows = 0, 0, None, []
    if state:
        metric_values = restore(model, state)
        if metric_values:
            build_metrics(model, next(iter(pipelines.train_eval)))
        start_epoch, first_batch = state.progress.epoch, state.progress.batch
        rows = state.history
        where = f"epoch {start_epoch + 1}"
        if first_batch:
            where += f", batch {first_batch + 1}"
        best_so_far = "no best yet"
        if record:
            best_so_far = f"best {record.monitor} {record.value:.6g} at epoch {record.epoch}"
        print(f"resuming at {where}, {best_so_far}")

    best = BestCheckpoint(
        run.path,
        monitor,
        train_eval_data=train_eval_pass(pipelines, cfg),
        patience=ck.patience,
        start_from_epoch=ck.start_from_epoch,
        stop_on_nonfinite=ck.stop_on_nonfinite,
        record=record,
        writes=chief,
    )
    history = HistoryCSV(run.history_file, rows, writes=chief)
    if state:
        history.rewrite()
    steps = pipelines.steps_per_epoch
    resume = ResumeCheckpoint(
        store, stop, best, history, steps, first_batch, metric_values, distribution
    )
    interactive = sys.stdout.isatty()
    report = EpochReport(best, cfg.train.epochs, every_epoch=not interactive)
    callbacks = [best, history, resume] + ([report] if chief else [])
    if cfg.logging.tensorboard and chief:  # after `best`, to log epoch_end_* values too
        callbacks.insert(1, tensorboard_callback(run.path))
    if interactive:  # Keras' bar must end each epoch's line before EpochReport writes
        callbacks.insert(-1, keras.callbacks.ProgbarLogger())

    def fit(first_epoch: int, last_epoch: int, start_batch: int, steps_per_epoch: int) -> None:
        model.fit(
            pipelines.train_stream(start_batch),
            steps_per_epoch=steps_per_epoch,
            initial_epoch=first_epoch,
            epochs=last_epoch,
            validation_data=pipelines.validation,
            callbacks=callbacks,
            verbose=1 if interactive and chief else 0,
            shuffle=False,  # the stream is already shuffled per (seed, epoch)
        )

    try:
        if first_batch:  # finish the interrupted epoch, then go on with whole epochs
            start = start_epoch * steps + first_batch
            fit(start_epoch, start_epoch + 1, start, steps - first_batch)
            start_epoch += 1
        if start_epoch < cfg.train.epochs and not model.stop_training:
            fit(start_epoch, cfg.train.epochs, start_epoch * steps, steps)
    except StopRequested as stopped:
        note = "run the same command to resume"
        if should_requeue(cfg.resume.requeue) and chief:
            note = requeue_self()
        raise StoppedForResume(f"{stopped}; resume state saved in {store.folder}; {note}") from None

    if best.best_epoch is None:
        raise NoBestError(
            f"no epoch qualified as best {monitor.name} "
            f"({best.stop_reason or 'none was finite and beat the baseline'}); "
            "nothing was saved: check the learning rate, or checkpoint.baseline"
        )
    distribution.barrier()  # the chief's last best checkpoint is on disk for everyone
    record = best.record if chief else read_record(run.path)
    model, record = _verify(model, run, record, monitor, pipelines, cfg, chief)
    return TrainResult(run.path, record, history.rows, model, best.stop_reason)


def train_eval_pass(pipelines, cfg: ExperimentConfig):
    """The end-of-epoch pass over the training data for a training-set monitor: the first
    ``checkpoint.train_eval_steps`` batches of the fixed-order pipeline, or all of them.
    Training and verification measure the very same batches, so verification stays exact."""
    steps = cfg.checkpoint.train_eval_steps
    return pipelines.train_eval if steps is None else pipelines.train_eval.take(steps)


def _read_record_or_none(run_dir: Path) -> BestRecord | None:
    try:
        return read_record(run_dir)
    except NoBestCheckpointError:
        return None


def _verify(model, run: RunDir, record: BestRecord, monitor, pipelines, cfg, chief=True):
    """Reload the best checkpoint into ``model`` and check that it reproduces its value."""
    from keepbest.monitor import measure

    model.load_weights(verify_checksum(run.path, record), objects_to_skip=[model.optimizer])
    measured = measure(model, monitor, pipelines.validation, train_eval_pass(pipelines, cfg))
    ck = cfg.checkpoint
    tolerance = ck.verify_tolerance if ck.verify_tolerance is not None else default_tolerance()
    if not values_match(measured, record.value, tolerance):
        raise VerificationError(
            f"{run.weights_file} reloaded gives {monitor.name} = {measured!r}, but "
            f"{run.record_file.name} records {record.value!r} (epoch {record.epoch}, "
            f"tolerance {tolerance}); the checkpoint does not reproduce its value"
        )
    if not chief:  # the chief records it; the others only report it
        record = record.model_copy(update={"verified_value": measured})
    elif record.verified_value != measured:
        record = mark_verified(run.path, record, measured)
    return model, record
