"""``keepbest evaluate``: measure the best model again, on the run's data or on a file.

Without a file, the monitored value is measured again exactly as training measured it
(the validation pass, or the end-of-epoch pass over the training data for a training-set
monitor) and compared with the value ``best.json`` records, so a run dir copied to
another machine proves that it still holds the model it claims. Every compiled metric is
reported alongside. With a file (``--data``), in the run's data format (the raw values
its training files hold, e.g. the bundled digits file itself), the compiled metrics are
measured on that file instead, preprocessed by the very pipeline training used.

Sample weights count as in training (``keepbest.data.weights``): the run's own data
carries its weights (the training pass its class weights too); a file is measured with
the sample weights it holds under the run's ``data.weight_key`` or ``data.weight_column``
(equally weighted if it has none), never with class weights, as Keras' ``evaluate``.

Example:

    >>> from keepbest.inference.evaluate import evaluate_run
    >>> result = evaluate_run("runs/digits-mlp")          # doctest: +SKIP
    >>> result.reproduces, result.results["validation"].metrics["accuracy"]  # doctest: +SKIP
    (True, 0.9805)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from keepbest.errors import ConfigError, DataError, VerificationError
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import BestRecord, average_text, chosen, read_record

# The end-of-epoch pass over the training data, as training measured a training monitor.
TRAINING_END_OF_EPOCH = "training (end of epoch)"


@dataclasses.dataclass(frozen=True)
class DataResult:
    samples: int | None  # None for a factory's tf.data.Dataset of unknown length
    metrics: dict[str, float]  # every compiled metric, by the name Keras logs


@dataclasses.dataclass
class Evaluation:
    run_dir: Path
    record: BestRecord
    results: dict[str, DataResult]  # "validation", "training (end of epoch)" or a file
    measured: float | None = None  # the monitored value measured as in training
    tolerance: float = 0.0
    by_steps: bool = False  # the run was evaluated every N steps

    @property
    def which(self) -> str:
        """The model evaluated: ``best``, or ``average`` when ``checkpoint.average`` kept
        an averaged model that beat the best (what ``load_best`` returns)."""
        return chosen(self.record)

    @property
    def recorded(self) -> float:
        """The recorded value of the model evaluated."""
        r = self.record
        return r.average.value if self.which == "average" else r.value

    @property
    def reproduces(self) -> bool | None:
        """Whether ``measured`` equals the recorded value (None when evaluating a file)."""
        if self.measured is None:
            return None
        from keepbest.measure import values_match

        return values_match(self.measured, self.recorded, self.tolerance)

    def check_reproduced(self) -> None:
        """``VerificationError`` if the monitored value measured again differs from the
        recorded one (beyond the run's tolerance)."""
        if self.reproduces is False:
            r = self.record
            raise VerificationError(
                f"{r.monitor} measured again is {self.measured!r}, but {self.run_dir} records "
                f"{self.recorded!r} ({self.which}, epoch {r.epoch}, tolerance "
                f"{self.tolerance:g}); the checkpoint "
                "or the run's data changed since training"
            )

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "run_dir": str(self.run_dir),
            "epoch": r.epoch,
            "step": r.step,
            "model": self.which,  # best, or average (checkpoint.average kept one)
            "average": r.average.model_dump() if r.average else None,
            "monitor": {
                "name": r.monitor,
                "recorded": self.recorded,
                "measured": self.measured,
                "reproduces": self.reproduces,
                "tolerance": self.tolerance,
            },
            "results": {
                name: {"samples": result.samples, "metrics": result.metrics}
                for name, result in self.results.items()
            },
        }

    def table(self) -> str:
        r = self.record
        best = f"best epoch {r.epoch}"
        if self.by_steps and r.step is not None:
            best = f"best step {r.step} (epoch {r.epoch})"
        lines = [f"{self.run_dir}: {best}, {r.monitor} recorded {r.value:.8g}"]
        if r.average is not None:
            lines.append(average_text(r))
        if self.measured is not None:
            diff = self.measured - self.recorded
            how = "exact" if diff == 0 else f"diff {diff:+.3g}, tolerance {self.tolerance:g}"
            which = f" of the {self.which}" if r.average is not None else ""
            lines.append(f"{r.monitor}{which} measured again: {self.measured:.8g} ({how})")
        header = ["metric"] + [
            f"{name} ({result.samples})" if result.samples is not None else name
            for name, result in self.results.items()
        ]
        metrics = dict.fromkeys(m for result in self.results.values() for m in result.metrics)
        metrics = sorted(metrics, key=lambda name: name != "loss")  # loss first
        rows = [header] + [
            [metric] + [_number(result.metrics.get(metric)) for result in self.results.values()]
            for metric in metrics
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines.append("")
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


# The sources whose runs are evaluated on one .npz (arrays as the run's x and y keys).
_NPZ_RUNS = ("digits", "npz", "script")


def check_data_file(run_dir: str | Path, data_file: str | Path) -> Path:
    """``--data`` checked before it is opened (and before TensorFlow loads): a regular
    file or a folder (``keepbest.rundir.guard.check_input``), of the kind the run reads:
    a folder of class folders for an ``image_dir`` run, a file for any other, an .npz for
    a run trained on arrays. ``InputError`` names what the run takes."""
    from keepbest.rundir.guard import check_input, shown

    source = RunDir(run_dir).read_config().data.source
    path = check_input(data_file, "--data", folder=True)
    folder_run = source == "image_dir"
    either = source in ("npy", "parquet")  # a folder of .npy arrays or of Parquet files too
    if path.is_dir() != folder_run and not either:
        wanted = "a folder with one subfolder of images per class" if folder_run else "a file"
        raise DataError(
            f"--data: {shown(path)} is a {'folder' if path.is_dir() else 'file'}, but "
            f"{shown(Path(run_dir))} was trained on data.source: {source}; give {wanted}"
        )
    if source in _NPZ_RUNS and path.suffix.lower() != ".npz":
        raise DataError(
            f"--data: {shown(path)} is not an .npz, but {shown(Path(run_dir))} was trained on "
            f"data.source: {source}; give an .npz holding the arrays the run's data holds"
        )
    return path


def evaluate_run(run_dir: str | Path, data_file: str | Path | None = None) -> Evaluation:
    """Measure the run's best model on its own data (and check the monitored value), or on
    ``data_file`` in the run's data format."""
    from keepbest.data.pipelines import fixed_order, load_pipelines, undecodable_image
    from keepbest.data.sources import read_like_run
    from keepbest.inference.load import load_best, read_spec
    from keepbest.measure import MeasureData, evaluate_metrics, tolerance
    from keepbest.monitor import Monitor

    run = RunDir(run_dir)
    record = read_record(run.path)
    if data_file is not None:
        check_data_file(run.path, data_file)
        cfg, spec = run.read_config(), read_spec(run.path)
        arrays = read_like_run(cfg, spec, Path(data_file))
        model = load_best(run.path, raw_inputs=False)  # the pipeline preprocesses
        try:
            metrics = evaluate_metrics(model, fixed_order(arrays, spec, cfg.data.batch_size))
        except Exception as exc:  # an image that cannot be decoded is named
            images = arrays.x if spec.image_size is not None else ()
            named = undecodable_image(exc, images, spec, "--data")
            if named is None:
                raise
            raise named from None
        results = {str(data_file): DataResult(len(arrays), metrics)}
        by_steps = cfg.checkpoint.every_steps is not None
        return Evaluation(run.path, record, results, by_steps=by_steps)

    try:
        cfg = run.read_config(check_files=True)
    except ConfigError as exc:
        raise DataError(
            [*exc.problems, "the run's data is not on this machine; evaluate a file: --data FILE"]
        ) from None
    pipelines = load_pipelines(cfg)
    model = load_best(run.path, raw_inputs=False)  # the pipeline preprocesses
    monitor = Monitor(record.monitor, record.mode)
    data = MeasureData.from_pipelines(pipelines)
    results: dict[str, DataResult] = {}

    def measured(dataset) -> dict[str, float]:
        try:
            return evaluate_metrics(model, dataset)
        except Exception as exc:  # an image that cannot be decoded is named
            named = pipelines.undecodable(exc)
            if named is None:
                raise
            raise named from None

    if not monitor.on_validation:  # the very batches training measured
        results[TRAINING_END_OF_EPOCH] = DataResult(
            pipelines.num_train_eval, measured(data.train_eval)
        )
    if data.validation is not None:
        results["validation"] = DataResult(pipelines.num_validation, measured(data.validation))
    source = results["validation" if monitor.on_validation else TRAINING_END_OF_EPOCH]
    allowed = tolerance(cfg.checkpoint.verify_tolerance)
    by_steps = cfg.checkpoint.every_steps is not None
    return Evaluation(run.path, record, results, source.metrics[monitor.metric], allowed, by_steps)
