"""``keepbest.train``: config in, verified best checkpoint out.

The order is what makes the promises hold: everything that can be wrong with the input
(config, data, builder, optimizer, loss, metrics) is checked before the run directory is
touched; the best checkpoint is chosen on the end-of-epoch value; after training the
model is reloaded from ``best.weights.h5`` (checksum first) and the monitored value is
measured again and must equal the recorded one.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml", ["train.epochs=3"])  # doctest: +SKIP
    >>> result.record.value == result.record.verified_value                     # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from keepbest.config import ExperimentConfig, load_config
from keepbest.errors import ConfigError, NoBestError, VerificationError
from keepbest.record import BestRecord, mark_verified, read_record, verify_checksum
from keepbest.run_dir import RunDir


@dataclasses.dataclass
class TrainResult:
    """What a finished ``train`` call returns; ``model`` holds the verified best weights."""

    run_dir: Path
    record: BestRecord
    history: list[dict[str, float]]
    model: object
    stop_reason: str | None

    def summary(self) -> str:
        r = self.record
        exact = (
            "exact" if r.verified_value == r.value else f"diff {r.verified_value - r.value:+.3g}"
        )
        lines = [
            f"best {r.monitor} = {r.value:.6g} at epoch {r.epoch} of {len(self.history)}",
            f"verified after reload: {r.verified_value:.6g} ({exact})",
            f"checkpoint: {self.run_dir / r.checkpoint}",
        ]
        if self.stop_reason:
            lines.insert(1, f"stopped early: {self.stop_reason}")
        return "\n".join(lines)


def default_tolerance() -> float:
    """Exact on CPU (evaluate is bit-reproducible there); relative 1e-5 with a GPU."""
    import tensorflow as tf

    return 1e-5 if tf.config.list_physical_devices("GPU") else 0.0


def values_match(measured: float, recorded: float, tolerance: float) -> bool:
    if tolerance == 0.0:
        return measured == recorded
    return math.isclose(measured, recorded, rel_tol=tolerance, abs_tol=tolerance)


def train(
    config: ExperimentConfig | str | Path | dict, overrides: Sequence[str] = ()
) -> TrainResult:
    """Train the configured model and return its verified best (see the module docstring)."""
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides)
    if isinstance(config, ExperimentConfig) and overrides:
        raise ConfigError("overrides apply to a config file or mapping, not a parsed config")

    import keras

    from keepbest.best_checkpoint import BestCheckpoint
    from keepbest.data import load_pipelines
    from keepbest.history import HistoryCSV
    from keepbest.models import build_model, compile_args, resolve_builder
    from keepbest.monitor import Monitor, measure
    from keepbest.progress import EpochReport

    builder = resolve_builder(cfg)
    compiled = compile_args(cfg)
    pipelines = load_pipelines(cfg)
    run = RunDir(cfg.run_dir())
    if run.has_run():
        raise ConfigError(
            f"{run.path} already holds a run; choose another name (--set name=...) "
            "or remove the folder"
        )

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, pipelines.spec, builder)
    compiled.apply(model)
    run.write_setup(cfg, pipelines.spec, model)

    ck = cfg.checkpoint
    monitor = Monitor(ck.monitor, ck.mode, ck.min_delta, ck.baseline)
    best = BestCheckpoint(
        run.path,
        monitor,
        train_eval_data=pipelines.train_eval,
        patience=ck.patience,
        start_from_epoch=ck.start_from_epoch,
        stop_on_nonfinite=ck.stop_on_nonfinite,
    )
    history = HistoryCSV(run.history_file)
    interactive = sys.stdout.isatty()
    model.fit(
        pipelines.train_stream(0),
        steps_per_epoch=pipelines.steps_per_epoch,
        epochs=cfg.train.epochs,
        validation_data=pipelines.validation,
        callbacks=[best, history, EpochReport(best, cfg.train.epochs, not interactive)],
        verbose=1 if interactive else 0,
        shuffle=False,  # the stream is already shuffled per (seed, epoch)
    )

    if best.best_epoch is None:
        raise NoBestError(
            f"no epoch qualified as best {monitor.name} "
            f"({best.stop_reason or 'none was finite and beat the baseline'}); "
            "nothing was saved: check the learning rate, or checkpoint.baseline"
        )
    record = read_record(run.path)
    model.load_weights(verify_checksum(run.path, record), objects_to_skip=[model.optimizer])
    measured = measure(model, monitor, pipelines.validation, pipelines.train_eval)
    tolerance = ck.verify_tolerance if ck.verify_tolerance is not None else default_tolerance()
    if not values_match(measured, record.value, tolerance):
        raise VerificationError(
            f"{run.weights_file} reloaded gives {monitor.name} = {measured!r}, but "
            f"{run.record_file.name} records {record.value!r} (epoch {record.epoch}, "
            f"tolerance {tolerance}); the checkpoint does not reproduce its value"
        )
    record = mark_verified(run.path, record, measured)
    return TrainResult(run.path, record, history.rows, model, best.stop_reason)
