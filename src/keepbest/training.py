"""``keepbest.train``: config in, verified best checkpoint out, through any interruption.

The order is what makes the promises hold:

1. everything that can be wrong with the input (config, data, builder, optimizer, loss,
   metrics, the monitor's name) is checked before the run directory is touched; a run
   another process is training is refused before TensorFlow is even imported;
2. ``model.fit`` runs with ``keepbest.KeepBest``, the callback any script can use
   (``keepbest.callbacks.keep_best``): it locks the run directory, finishes or undoes an
   interrupted commit, restores a resume state (a changed config is refused, a finished
   run is not redone), judges each evaluation point on the value measured on its saved
   weights, writes resume states, and, after ``fit``, reloads ``best.weights.h5``
   (checksum first) and requires the monitored value measured again to equal the
   recorded one (``keepbest.callbacks.session``). ``train`` only adds what a config
   knows: its data starts where the run resumes, its progress report, TensorBoard,
   MLflow and the observers.

Progress and notices go to the ``keepbest`` loggers; the CLI shows them.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml", ["train.epochs=3"])  # doctest: +SKIP
    >>> result.record.value == result.record.verified_value                     # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepbest.cluster.distribute import may_write
from keepbest.config import ExperimentConfig, load_config, reported_against
from keepbest.config.schema import SCRIPT
from keepbest.data.spec import shape_text
from keepbest.errors import ConfigError, KeepbestError, RunBusyError
from keepbest.rundir import guard
from keepbest.rundir.layout import RunDir
from keepbest.rundir.lock import holder_of
from keepbest.rundir.record import BestRecord, average_text

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
        if r.average is not None:
            lines.append(average_text(r))
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
    with reported_against(cfg):  # a name the file system takes, before any look at it
        run = RunDir(guard.check_run_path(cfg.run_dir()))
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
    *,
    model: Any = None,
    data: Any = None,
) -> TrainResult:
    """Train (or resume) the configured run and return its verified best.

    ``config``: a YAML file, a mapping (its relative paths start at the current
    directory) or a parsed config. ``model``: a ``keras.Model`` or a builder function
    (called like a config's builder) instead of ``model.builder``; ``data``: a
    ``(train, validation)`` pair of arrays or datasets, or a function returning one (as
    a ``python`` factory does), instead of the config's ``data`` section. The run dir
    records that they came from objects (``evaluate`` then needs ``--data``).

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
        cfg = load_config(with_objects(config, model, data), overrides)
    if model is not None or data is not None:
        cfg._objects = {"model": model, "data": data}
    run = check_run_dir(cfg, restart, overwrite)  # before TensorFlow loads

    import keras

    from keepbest.callbacks.mlflow_tracking import require_mlflow, tracking
    from keepbest.callbacks.tensorboard import require_tensorboard
    from keepbest.cluster.distribute import Distribution
    from keepbest.data.pipelines import load_pipelines
    from keepbest.keras_objects import make_callbacks
    from keepbest.measure import MeasureData
    from keepbest.models import build_model, compile_args, compile_model, resolve_builder

    builder = resolve_builder(cfg)
    distribution = Distribution.from_config(cfg.distribute)  # before TF makes its devices
    compiled = compile_args(cfg)
    user_callbacks = make_callbacks(cfg)  # checked now, before any work; fit runs them
    require_tensorboard(cfg)
    require_mlflow(cfg)
    pipelines = load_pipelines(cfg)
    measure_data = MeasureData.from_pipelines(pipelines)
    _check_every_steps(cfg, pipelines.steps_per_epoch)
    keras.utils.set_random_seed(cfg.seed)
    with distribution.scope():  # a builder that fails here leaves no trace on disk
        built = build_model(cfg, pipelines.spec, builder)
        compile_model(cfg, built, compiled)
    _preflight(cfg, built, measure_data, pipelines)
    chief = distribution.is_chief
    if restart and chief:
        aside = set_aside(run, overwrite)
        if aside:
            log.info("moved the previous run to %s", aside)
    if progress_bar is None:
        progress_bar = sys.stdout.isatty()
    lost = distribution.lost_workers_reported(cfg.distribute.heartbeat_timeout)
    with tracking(cfg, run, chief) as tracker, lost:
        listeners = _listeners(cfg, run, progress_bar, [*tracker.observers, *observers])
        result = _fit(
            cfg,
            built,
            pipelines,
            measure_data,
            distribution,
            progress_bar,
            listeners,
            user_callbacks,
        )
        tracker.finish(result.record)
        return result


def with_objects(config: str | Path | dict, model: Any, data: Any) -> str | Path | dict:
    """A config whose model or data come as objects: ``model.builder``/``data.source``
    become ``script`` (a config that also names them is refused)."""
    if model is None and data is None:
        return config
    if not isinstance(config, dict):
        from keepbest.config import read_yaml_file

        config = read_yaml_file(Path(config), "config file") or {}
        if not isinstance(config, dict):
            return config  # load_config says what is wrong with it
    raw = dict(config)
    for given, key, value in ((model, "model", {"builder": SCRIPT}), (data, "data", None)):
        if given is None:
            continue
        if key in raw:
            raise ConfigError(
                f"config: {key}: given twice, in the config and as {key}=...; remove one"
            )
        raw[key] = value if value is not None else {"source": SCRIPT}
    return raw


def _listeners(cfg: ExperimentConfig, run: RunDir, progress_bar: bool, observers) -> list:
    from keepbest.callbacks.report import Report
    from keepbest.callbacks.tensorboard import TensorBoardLog

    listeners: list = [Report(cfg.train.epochs, every_point=not progress_bar)]
    if cfg.logging.tensorboard:
        listeners.append(TensorBoardLog(run.path))
    return listeners + list(observers)  # MLflow first among observers: it logs pruned points


def _fit(
    cfg, model, pipelines, data, distribution, progress_bar, listeners, user_callbacks
) -> TrainResult:
    """``fit`` with ``KeepBest``: config -> data -> model -> the callback -> verified."""
    import keras

    from keepbest.callbacks.keep_best import KeepBest
    from keepbest.callbacks.session import RunSetup
    from keepbest.data.fingerprint import FACTORY_FIX
    from keepbest.data.pipelines import batch_fingerprint
    from keepbest.measure import uses_ema

    steps = pipelines.steps_per_epoch

    def fingerprint(step: int) -> str:
        return batch_fingerprint(pipelines.train_stream(step))

    setup = RunSetup(
        cfg=cfg,
        spec=pipelines.spec,
        data=data,
        steps_per_epoch=steps,
        distribution=distribution,
        fingerprint=fingerprint,
        data_name=data_name(cfg),
        data_fix=FACTORY_FIX,
        listeners=listeners,
        callbacks=user_callbacks,
    )
    best = KeepBest.for_run(setup)
    chief = distribution.is_chief
    try:
        session = best.open(model)
        callbacks: list = [best, *user_callbacks]  # theirs after keepbest's
        if progress_bar and chief:  # Keras' bar ends each epoch's line before the report's
            callbacks.insert(0, keras.callbacks.ProgbarLogger())
        schedule = cfg.checkpoint.schedule()
        # At epoch ends Keras' own validation pass serves the evaluation points; with
        # every_steps, or use_ema (the averages are judged, not the weights fit validates),
        # the points measure validation themselves, and Keras must not.
        model.fit(
            # the resumed epoch's batches trained before its state are placeholders that
            # the callback consumes untrained (nothing read for them)
            pipelines.train_stream(session.start_epoch * steps, session.first_batch),
            steps_per_epoch=steps,
            epochs=cfg.train.epochs,
            validation_data=None if schedule.by_steps or uses_ema(model) else pipelines.validation,
            callbacks=callbacks,
            verbose=1 if progress_bar and chief else 0,
            shuffle=False,  # the stream is already shuffled per (seed, epoch)
        )
    except KeepbestError:
        raise
    except Exception as exc:  # an image that cannot be decoded is named (bad input: exit 2)
        named = pipelines.undecodable(exc, then="then run the same command to resume")
        if named is None:
            raise
        with reported_against(cfg):
            raise named from None
    finally:
        best.close()
    return TrainResult(
        cfg.run_dir(),
        best.record,
        best.history,
        model,
        best.stop_reason,
        best.complete_before,
        schedule.by_steps,
    )


def data_name(cfg: ExperimentConfig) -> str:
    """The run's data as the not-bit-exact note names it."""
    factory = getattr(cfg.data, "factory", None)
    if factory:
        return factory
    return "data=" if cfg.data.source == SCRIPT else f"data source {cfg.data.source}"


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
    from keepbest.rundir.layout import architecture_json, unloadable_architecture

    architecture = architecture_json(model)
    problem = unloadable_architecture(architecture) if architecture else None
    try:
        output_shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):  # a subclassed model: not known
        output_shape = None
    errors, warnings = targets_problems(
        pipelines.spec,
        pipelines.float_targets,
        loss_name(cfg, model),
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
    from keepbest.monitor import Monitor, resolve_mode

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
                f"of data with loss {loss_name(cfg, model)} ({one_line(exc)}); check that its "
                f"input and output fit the data (inputs {shape_text(pipelines.spec.input_shape)}, "
                f"{_targets_text(pipelines)})"
            ) from None
    if monitor.metric not in logged:
        prefix = "val_" if monitor.on_validation else ""
        with reported_against(cfg):
            raise MonitorError(
                f"checkpoint.monitor: {monitor.name!r} is not logged by this run; it logs "
                f"{', '.join(prefix + name for name in logged)}"
            )
    with reported_against(cfg):
        resolve_mode(monitor.name, monitor.mode, model)  # a direction known before work


def loss_name(cfg: ExperimentConfig, model=None) -> str:
    """The run's loss by name (the compiled model's for a builder that compiles)."""
    from keepbest.config.schema import spec_name

    if model is not None and cfg.compiled_by_model:
        loss = model.loss
        return str(getattr(loss, "__name__", None) or getattr(loss, "name", loss))
    return spec_name(cfg.loss)


def _targets_text(pipelines) -> str:
    spec = pipelines.spec
    if spec.num_classes is not None:
        return f"targets class ids 0 to {spec.num_classes - 1}"
    return f"targets {shape_text(tuple(spec.target_shape))}"
