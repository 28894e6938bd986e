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
- ``.csv``: one row per sample: ``file`` (images), ``label`` (classifiers: the class name,
  or id), then the outputs (``p_<class>`` for a classifier, ``prediction[_i]`` otherwise).

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
from keepbest.data.sources import read_features
from keepbest.data.spec import DataSpec, Features
from keepbest.errors import DataError, InputError
from keepbest.rundir.layout import RunDir

OUTPUT_SUFFIXES = (".npz", ".csv")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Predictions:
    count: int
    path: Path


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int | None = None,
) -> Predictions:
    """Predict every sample of ``input_path`` with the run's best model; write them to
    ``output_path`` (.npz or .csv)."""
    from keepbest.inference.load import load_best, read_spec

    run, output = RunDir(run_dir), Path(output_path)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"--output: {output.name} must end in .npz or .csv")
    if not output.parent.is_dir():
        raise InputError(f"--output: the folder {output.parent} does not exist")
    cfg, spec = run.read_config(), read_spec(run.path)
    features = read_features(cfg, spec, Path(input_path))
    if features.names is None:
        problem = range_problem(features.x, spec)
        if problem:
            log.warning("--input: %s: %s", Path(input_path).name, problem)
    model = load_best(run.path, compile=False)
    outputs = _predict(model, features, spec, batch_size or cfg.data.batch_size)
    if output.suffix.lower() == ".npz":
        write_bytes_atomic(output, _npz_bytes(outputs, features, spec))
    else:
        write_text_atomic(output, _csv_text(outputs, features, spec))
    return Predictions(len(outputs), output)


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

    from keepbest.data.pipelines import decode_images

    total = len(features.x)
    bar = keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="sample")
    chunks = []
    for start in range(0, total, batch_size):
        batch = features.x[start : start + batch_size]
        if features.names is not None:
            try:
                batch = decode_images(tf.constant(batch), spec)
            except tf.errors.InvalidArgumentError as exc:
                names = features.names[start : start + batch_size]
                raise DataError(
                    f"--input: cannot decode an image among {names[0]} ... {names[-1]} "
                    f"({exc.message.splitlines()[0]})"
                ) from None
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


def _csv_text(outputs: np.ndarray, features: Features, spec: DataSpec) -> str:
    flat = outputs.reshape(len(outputs), -1)
    header, first_columns = [], []
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i, values in enumerate(flat):
        writer.writerow([column[i] for column in first_columns] + [repr(float(v)) for v in values])
    return buffer.getvalue()
