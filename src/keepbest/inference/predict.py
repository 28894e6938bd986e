"""``keepbest predict``: the best model's predictions for a file or a folder of images.

The input (.npz, .csv or a folder of images) holds raw values, as the training files do
(the model ``load_best`` returns applies the preprocessing itself). It is read and checked
against the run's raw input (shape, dtype, CSV columns) before the model is even loaded,
so a mismatch costs a second, not a wasted prediction pass; values far outside the range
the training inputs had (``data_spec.json``'s ``raw_range``) get a one-line warning.
Predictions go batch by batch with a progress bar and are written atomically
(``keepbest.atomic``): the output file is complete or absent.

Output, chosen by the suffix of ``--output``:

- ``.npz``: ``predictions`` (the model's outputs), for a classifier ``labels`` (class ids)
  and ``class_names``, for images ``files``;
- ``.csv``: one row per sample: the columns of a CSV input kept (``--keep``; by default
  every column the model does not take but the run's target, such as an id, so that rows
  can be matched by more than their order), ``file`` (images), ``label`` (classifiers: the
  class name, or id), then the outputs (``p_<class>`` for a classifier, ``prediction[_i]``
  otherwise) with ``precision`` significant digits (default ``CSV_PRECISION``); a kept
  column named like one the predictions write gets ``input_`` in front (``kept_names``).

Example:

    >>> from keepbest.inference.predict import predict_file
    >>> predict_file("runs/digits-mlp", "new.npz", "predictions.csv")   # doctest: +SKIP
    Predictions(count=360, path=PosixPath('predictions.csv'))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import sys
from pathlib import Path

import numpy as np

from keepbest.atomic import write_bytes_atomic, write_text_atomic
from keepbest.config.references import did_you_mean
from keepbest.data.files import csv_header, read_csv_table
from keepbest.data.sources import read_features, source_for
from keepbest.data.spec import DataSpec, Features
from keepbest.errors import DataError, InputError, KeepbestError
from keepbest.rundir.guard import check_input, check_output, shown
from keepbest.rundir.layout import RunDir

OUTPUT_SUFFIXES = (".npz", ".csv")
CSV_PRECISION = 6  # significant digits of the outputs in a .csv (an .npz keeps float32)
_LISTED_COLUMNS = 20  # columns of the input an unknown --keep lists, at most
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Predictions:
    count: int
    path: Path


def check_output_path(
    run_dir: str | Path, input_path: str | Path, output_path: str | Path, overwrite: bool = False
) -> Path:
    """``--output`` checked before any work (``keepbest.rundir.guard``): an .npz or .csv
    file, never the input nor the run's training files, never a run dir or a file inside
    one; an existing file only with ``overwrite``."""
    output = Path(output_path)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"--output: {output.name} must end in .npz or .csv")
    return check_output(
        output, "--output", overwrite=overwrite, inputs=[Path(input_path), *_data_files(run_dir)]
    )


def _data_files(run_dir: str | Path) -> list[Path]:
    """The run's own data files (never an output), as far as its config can be read."""
    try:
        data = RunDir(run_dir).read_config().data
    except KeepbestError:
        return []
    return data.files()


@dataclasses.dataclass
class PredictionJob:
    """A prediction whose output, run and input were checked (without TensorFlow)."""

    run_dir: Path
    output: Path
    features: Features
    spec: DataSpec
    batch_size: int
    kept: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # column -> texts
    precision: int = CSV_PRECISION

    def run(self) -> Predictions:
        """Load the best model, predict, write the output atomically."""
        from keepbest.inference.load import load_best

        model = load_best(self.run_dir, compile=False)
        outputs = _predict(model, self.features, self.spec, self.batch_size)
        if self.output.suffix.lower() == ".npz":
            write_bytes_atomic(self.output, _npz_bytes(outputs, self.features, self.spec))
        else:
            text = _csv_text(outputs, self.features, self.spec, self.kept, self.precision)
            write_text_atomic(self.output, text)
        return Predictions(len(outputs), self.output)


def prepare_prediction(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int | None = None,
    overwrite: bool = False,
    keep: list[str] | None = None,
    precision: int | None = None,
) -> PredictionJob:
    """Everything ``predict_file`` checks before it loads the model (no TensorFlow): the
    output, the run's record and spec, the columns to keep, the input read and fitted to
    the run's inputs. ``keep``: the columns of a CSV input to copy into the output (None:
    every column the model does not take but the run's target); ``precision``:
    significant digits of a .csv output's numbers (None: ``CSV_PRECISION``)."""
    from keepbest.inference.load import read_spec
    from keepbest.rundir.record import read_record

    run = RunDir(run_dir)
    input_path = Path(check_input(input_path, "--input", folder=True))  # no pipe or device
    output = check_output_path(run_dir, input_path, output_path, overwrite)
    is_csv = input_path.suffix.lower() == ".csv" and not input_path.is_dir()
    _check_options(input_path, output, is_csv, keep, precision)
    read_record(run.path)
    cfg, spec = run.read_config(), read_spec(run.path)
    delimiter = source_for(cfg).delimiter
    columns = _kept_columns(cfg, spec, input_path, delimiter, keep) if is_csv else []
    if output.suffix.lower() == ".npz":
        columns = []  # an .npz holds the predictions; its rows are the input's, in order
    features = read_features(cfg, spec, input_path)
    if len(features.x) == 0:
        raise DataError(
            f"--input: {shown(input_path)} holds no samples (0 rows); nothing to predict"
        )
    if features.names is None:
        problem = range_problem(features.x, spec)
        if problem:
            log.warning("--input: %s: %s", input_path.name, problem)
    kept = _read_columns(input_path, delimiter, columns, len(features.x)) if columns else {}
    return PredictionJob(
        run.path,
        output,
        features,
        spec,
        batch_size or cfg.data.batch_size,
        kept,
        CSV_PRECISION if precision is None else precision,
    )


def _check_options(
    input_path: Path, output: Path, is_csv: bool, keep: list[str] | None, precision: int | None
) -> None:
    """--keep needs a CSV input and a CSV output; --precision a CSV output."""
    to_csv = output.suffix.lower() == ".csv"
    if keep and not is_csv:
        raise InputError(
            f"--keep: copies columns of a .csv --input; {shown(input_path)} is not one"
        )
    if keep and not to_csv:
        raise InputError(f"--keep: copies columns into a .csv --output, not {output.name}")
    if precision is not None and not to_csv:
        raise InputError(
            f"--precision: sets the digits of a .csv --output; {output.name} keeps full floats"
        )


def _kept_columns(
    cfg, spec: DataSpec, path: Path, delimiter: str, keep: list[str] | None
) -> list[str]:
    """The columns of the CSV at ``path`` to copy into the output: ``keep``, each checked
    against the file's header, or by default those the model does not take but the target."""
    header = csv_header(path, delimiter, "--input")
    if keep is None:
        taken = set(spec.feature_names or header) | {getattr(cfg.data, "target", None)}
        return [name for name in header if name not in taken]
    listed = ", ".join(header[:_LISTED_COLUMNS])
    if len(header) > _LISTED_COLUMNS:
        listed += f" and {len(header) - _LISTED_COLUMNS} more"
    for name in keep:
        if name not in header:
            raise InputError(
                f"--keep: {path.name} has no column {name!r}; its columns are {listed}"
                f"{did_you_mean(name, header)}"
            )
    return list(dict.fromkeys(keep))


def _read_columns(path: Path, delimiter: str, columns: list[str], count: int) -> dict:
    """The text of ``columns`` of the CSV at ``path``, one per data row (``count`` rows)."""
    header, body = read_csv_table(path, delimiter, "--input")
    kept = {}
    for name in columns:
        index = header.index(name)
        if hasattr(body, "text"):
            texts = ["" if text is None else text for text in body.text(index)]
        else:
            texts = [row[index] if index < len(row) else "" for _, row in body]
        if len(texts) != count:  # the input changed between the two reads
            raise DataError(f"--input: {path.name} changed while it was read; run again")
        kept[name] = texts
    return kept


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int | None = None,
    overwrite: bool = False,
    keep: list[str] | None = None,
    precision: int | None = None,
) -> Predictions:
    """Predict every sample of ``input_path`` with the run's best model; write them to
    ``output_path`` (.npz or .csv), replacing an existing file only with ``overwrite``;
    ``keep`` and ``precision`` as ``prepare_prediction`` takes them."""
    job = prepare_prediction(
        run_dir, input_path, output_path, batch_size, overwrite, keep, precision
    )
    return job.run()


def range_problem(x: np.ndarray, spec: DataSpec) -> str | None:
    """Why ``x`` (raw inputs) looks unlike the training inputs, or None: values far outside
    their range, values that look scaled already, or values that are not finite."""
    if spec.raw_range is None or x.size == 0:
        return None
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        return f"{bad} values are NaN or infinite; the model's outputs for them will be too"
    low, high = float(x.min()), float(x.max())
    trained_low, trained_high = spec.raw_range
    span = (trained_high - trained_low) or max(abs(trained_high), 1.0)
    trained = f"{trained_low:g}..{trained_high:g}"
    fix = "give values as the training files hold them"
    if not spec.steps.is_identity:
        fix += f" (the model preprocesses them itself: {spec.steps.describe()})"
    if low < trained_low - span / 2 or high > trained_high + span / 2:
        return (
            f"values range {low:g}..{high:g}, far outside the training inputs' {trained}; "
            f"the predictions may be wrong: {fix}"
        )
    if trained_high > 1.5 and 0 < high <= 1.0 and low >= min(trained_low, 0.0):
        return (
            f"values range {low:g}..{high:g}, but the training inputs spanned {trained}: "
            f"they look scaled already; {fix}"
        )
    return None


def _predict(model, features: Features, spec: DataSpec, batch_size: int) -> np.ndarray:
    import keras
    import tensorflow as tf

    from keepbest.data.pipelines import decode_images, undecodable_image

    total = len(features.x)
    bar = keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="sample")
    chunks = []
    for start in range(0, total, batch_size):
        batch = features.x[start : start + batch_size]
        if features.names is not None:
            try:
                batch = decode_images(tf.constant(batch), spec)
            except tf.errors.OpError as exc:  # name the very file (one at a time)
                named = undecodable_image(exc, batch, spec, "--input")
                if named is None:
                    raise
                raise named from None
        output = model.predict_on_batch(batch)
        if not isinstance(output, np.ndarray):
            raise DataError(
                "the model has several outputs; keepbest predict writes single-output models"
            )
        chunks.append(output)
        bar.update(min(start + batch_size, total))
    return np.concatenate(chunks)


def _is_classifier(outputs: np.ndarray, spec: DataSpec) -> bool:
    return spec.num_classes is not None and outputs.shape[1:] == (spec.num_classes,)


def _npz_bytes(outputs: np.ndarray, features: Features, spec: DataSpec) -> bytes:
    arrays = {"predictions": outputs}
    if _is_classifier(outputs, spec):
        arrays["labels"] = outputs.argmax(axis=1).astype("int64")
        if spec.class_names:
            arrays["class_names"] = np.array(spec.class_names)
    if features.names is not None:
        arrays["files"] = np.array(features.names)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def kept_names(kept: list[str], written: list[str]) -> list[str]:
    """The output's names of the kept input columns: their own, or with ``input_`` in front
    where the predictions write a column of that name (a kept target ``label``).

    >>> kept_names(["id", "label"], ["label", "p_cat", "p_dog"])
    ['id', 'input_label']
    """
    taken = set(written)
    names = []
    for name in kept:
        while name in taken:
            name = f"input_{name}"
        taken.add(name)
        names.append(name)
    return names


def _csv_text(
    outputs: np.ndarray,
    features: Features,
    spec: DataSpec,
    kept: dict[str, list[str]] | None = None,
    precision: int = CSV_PRECISION,
) -> str:
    flat = outputs.reshape(len(outputs), -1)
    header, first_columns = [], list((kept or {}).values())
    if features.names is not None:
        header.append("file")
        first_columns.append(features.names)
    if _is_classifier(outputs, spec):
        names = spec.class_names or [str(i) for i in range(spec.num_classes)]
        header.append("label")
        first_columns.append([names[i] for i in outputs.argmax(axis=1)])
        header += [f"p_{name}" for name in names]
    elif flat.shape[1] == 1:
        header.append("prediction")
    else:
        header += [f"prediction_{i}" for i in range(flat.shape[1])]
    header = [*kept_names(list(kept or {}), header), *header]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i, values in enumerate(flat):
        numbers = [f"{float(v):.{precision}g}" for v in values]
        writer.writerow([column[i] for column in first_columns] + numbers)
    return buffer.getvalue()
