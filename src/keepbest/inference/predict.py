"""``keepbest predict``: the best model's predictions for a file or a folder of images.

The input (.npz, .csv or a folder of images) is read and checked against the model's
input (shape, dtype, CSV columns) before the model is even loaded, so a mismatch costs a
second, not a wasted prediction pass. Predictions go batch by batch with a progress bar
and are written atomically (``keepbest.atomic``): the output file is complete or absent.

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
import sys
from pathlib import Path

import numpy as np

from keepbest.atomic import write_bytes_atomic, write_text_atomic
from keepbest.data.sources import read_features
from keepbest.data.spec import DataSpec, Features
from keepbest.errors import DataError, InputError
from keepbest.rundir.layout import RunDir

OUTPUT_SUFFIXES = (".npz", ".csv")


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
    from keepbest.inference.load import load_best

    run, output = RunDir(run_dir), Path(output_path)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"--output: {output.name} must end in .npz or .csv")
    if not output.parent.is_dir():
        raise InputError(f"--output: the folder {output.parent} does not exist")
    cfg, spec = run.read_config(), run.read_spec()
    features = read_features(cfg, spec, Path(input_path))
    model = load_best(run.path, compile=False)
    outputs = _predict(model, features, spec, batch_size or cfg.data.batch_size)
    if output.suffix.lower() == ".npz":
        write_bytes_atomic(output, _npz_bytes(outputs, features, spec))
    else:
        write_text_atomic(output, _csv_text(outputs, features, spec))
    return Predictions(len(outputs), output)


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
