"""The best checkpoint's file: written, committed, checked and loaded, in one place.

- ``save_best``: the model's weights (never the optimizer's) as a Keras ``.weights.h5``
  file, written a slice at a time from the variables' own memory (``keepbest.weights_h5``),
  committed durably with its record (``keepbest.rundir.record.commit_best``: temp file,
  fsync, sha256, ``best.json.pending``, renames, folder fsyncs);
- ``load_best_weights``: the file's sha256 checked against ``best.json`` first
  (``keepbest.rundir.record.verify_checksum``), then read into a built model a slice at a
  time; every failure is one line naming the file and the fix;
- ``library_versions``: what ``best.json`` records of the libraries that wrote it.

The file is what plain ``model.load_weights`` reads, too. The record and its four-step
commit need no TensorFlow and live in ``keepbest.rundir.record``.

Example:

    >>> from keepbest.checkpoint import load_best_weights, save_best
    >>> record = save_best(run_dir, model, epoch=3, step=69, monitor="val_loss",
    ...                    mode="min", value=0.0831)          # doctest: +SKIP
    >>> load_best_weights(model, run_dir, record).name        # doctest: +SKIP
    'best.weights.h5'
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from keepbest import weights_h5
from keepbest.errors import CorruptFileError
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import BestRecord, commit_best, commit_kept, verify_checksum
from keepbest.version import __version__

# Keras' message when a saved variable does not fit the rebuilt model's variable.
_SHAPE_MISMATCH = re.compile(
    r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))"
    r"\. Target variable: <Variable path=([^,]+),"
)


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"keepbest": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _skipped(model) -> list:
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else []


def save_weights(model, path: Path) -> None:
    """The model's weights (not the optimizer's) as a Keras ``.weights.h5`` file, written a
    slice at a time (``keepbest.weights_h5``)."""
    weights_h5.save(model, path, skip=_skipped(model))


def save_best(
    run_dir: Path,
    model,
    *,
    epoch: int,
    step: int,
    monitor: str,
    mode: str,
    value: float,
    versions: dict[str, str] | None = None,
    notes: Sequence[str] = (),
) -> BestRecord:
    """Durably replace the run's best checkpoint with ``model``'s weights; its record."""
    return commit_best(
        Path(run_dir),
        lambda path: save_weights(model, path),
        epoch=epoch,
        step=step,
        monitor=monitor,
        mode=mode,
        value=value,
        versions=versions or library_versions(),
        notes=notes,
    )


def save_kept(
    run_dir: Path, model, record: BestRecord, new_file: str | None, new_best: bool, dropped
) -> BestRecord:
    """Commit a point that joins the kept points (``rundir.record.commit_kept``): its
    weights in ``new_file``, then ``record``, then the ``dropped`` files deleted."""
    return commit_kept(
        Path(run_dir),
        (lambda path: save_weights(model, path)) if new_file else None,
        record,
        new_file,
        new_best,
        list(dropped),
    )


def load_best_weights(model, run_dir: str | Path, record: BestRecord, weights: Path | None = None):
    """Load the run's best checkpoint into ``model`` (a built model of the run's
    architecture) and return its path. Its checksum is checked first, unless ``weights``
    is the path already checked. Every failure is one line naming the file and the fix."""
    run = RunDir(run_dir)
    weights = weights or verify_checksum(run.path, record)
    try:
        with warnings.catch_warnings(record=True) as noted:
            warnings.simplefilter("always")
            weights_h5.load(model, weights, skip=_skipped(model))
    except OSError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CorruptFileError(
            f"{weights} cannot be read as a weights file ({first}): restore the run dir "
            "from a backup, or retrain"
        ) from None
    except ValueError as exc:
        source = run.model_file.name if run.model_file.is_file() else "the model's builder"
        raise CorruptFileError(
            f"{weights} does not fit the architecture rebuilt from {source}: "
            f"{_weights_problem(exc)}; the architecture changed since training: "
            "restore the original, or retrain"
        ) from None
    for note in noted:  # Keras' warnings only matter if loading worked; else ours says it
        warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
    return weights


def _weights_problem(exc: Exception) -> str:
    """The first concrete mismatch in Keras' (long, multi-line) load_weights error."""
    text = str(exc).strip()
    shapes = _SHAPE_MISMATCH.search(text)
    if shapes:
        model_shape, file_shape, variable = shapes.groups()
        return f"{variable} is {model_shape} in the model but {file_shape} in the file"
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    if lines[0].startswith("A total of") and len(lines) > 1:
        return lines[1]
    return lines[0]
