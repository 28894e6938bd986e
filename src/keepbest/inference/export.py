"""``keepbest export``: the best model as a self-contained artifact for serving.

Two formats, both loadable without keepbest installed:

- ``keras``: one ``.keras`` file (architecture and weights), for
  ``keras.saving.load_model(path)`` (safe_mode on, as by default);
- ``savedmodel``: a TensorFlow SavedModel folder made by ``model.export``, for TF Serving
  or ``tf.saved_model.load(path).serve(x)``.

What is exported is the model ``load_best`` returns: the trained model behind its
source's preprocessing (stock Keras layers, see ``keepbest.data.preprocessing``), so the
artifact takes the raw values of the training files: the bundled digits' 0..16 pixels as
``(n, 8, 8)``, or decoded images (any height and width, values 0..255) for an
``image_dir`` run; decoding the image files is the caller's part. It is exported
uncompiled (inference only: compile it to train further). Before the artifact takes its
place, it is loaded back the way a server would and must give the same predictions as
the verified best model on a probe batch of raw values; it is written to a temporary name
and renamed into place, so ``--out`` never holds a half-written export. Where ``--out``
may be is ``keepbest.rundir.guard``'s rule: never a run dir or anything inside one, an
existing file or SavedModel only with ``--overwrite``.

Example:

    >>> from keepbest.inference.export import export_model
    >>> export_model("runs/digits-mlp", "digits.keras", "keras").max_difference  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from keepbest.atomic import (
    caused_by_os_error,
    failure_text,
    fsync_dir,
    temp_path_for,
    write_failed,
)
from keepbest.data.spec import DataSpec
from keepbest.errors import InputError, KeepbestError
from keepbest.rundir.guard import check_output
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import BestRecord, chosen, read_record

ExportFormat = Literal["keras", "savedmodel"]
FORMATS: tuple[ExportFormat, ...] = ("keras", "savedmodel")
_PROBE_SAMPLES = 16
_RTOL, _ATOL = 1e-5, 1e-6  # a traced SavedModel graph may round differently from eager


@dataclasses.dataclass(frozen=True)
class Export:
    path: Path
    format: ExportFormat
    record: BestRecord
    size: int  # bytes (a SavedModel folder's files summed)
    max_difference: float  # between the reloaded artifact's and the model's predictions

    def summary(self) -> str:
        r = self.record
        size = (
            f"{self.size / 1024:.1f} KB" if self.size < 1024**2 else f"{self.size / 1024**2:.1f} MB"
        )
        what = f"the best model (epoch {r.epoch}, {r.monitor} {r.value:.6g})"
        if chosen(r) == "average":
            what = (
                f"the averaged model ({r.monitor} {r.average.value:.6g}; the best "
                f"{r.value:.6g} at epoch {r.epoch})"
            )
        return (
            f"exported {what} to {self.path} "
            f"({self.format}, {size}); reloaded, it predicts the same "
            f"(max difference {self.max_difference:.2g})"
        )


def export_model(
    run_dir: str | Path, out: str | Path, format: ExportFormat = "keras", overwrite: bool = False
) -> Export:
    """Write the run's best model to ``out`` in ``format``, checked by reloading it."""
    from keepbest.inference.load import load_best, read_spec

    out = check_target(out, format, overwrite)
    run = RunDir(run_dir)
    record = read_record(run.path)
    model = load_best(run.path, compile=False)
    probe = probe_batch(read_spec(run.path))
    expected = np.asarray(model.predict_on_batch(probe))
    tmp = temp_path_for(out)
    try:
        try:
            if format == "keras":
                model.save(tmp)
            else:
                model.export(tmp, format="tf_saved_model", verbose=False)
        except Exception as exc:
            if caused_by_os_error(exc):
                raise write_failed(out, exc) from exc
            raise KeepbestError(
                f"the best model cannot be exported as {format} ({failure_text(exc)}); "
                f"nothing was written to {out}"
            ) from exc
        try:
            predicted = np.asarray(_reload(tmp, format)(probe))
        except Exception as exc:
            raise KeepbestError(
                f"the exported {format} model cannot be loaded back as a server would load "
                f"it ({failure_text(exc)}); nothing was written to {out}"
            ) from exc
        difference = float(np.max(np.abs(predicted - expected)))
        if not np.allclose(predicted, expected, rtol=_RTOL, atol=_ATOL):
            raise KeepbestError(
                f"the exported {format} model predicts differently from the best model "
                f"(max difference {difference:.3g}); nothing was written to {out}"
            )
        try:
            _sync(tmp)
            _move_into_place(tmp, out)
        except OSError as exc:
            raise write_failed(out, exc) from exc
    finally:
        _remove(tmp)
    return Export(out, format, record, _size(out), difference)


def probe_batch(spec: DataSpec) -> np.ndarray:
    """Random raw inputs within the training inputs' range (images at the training size)."""
    sizes = iter(spec.image_size or ())
    shape = tuple(next(sizes, 1) if d is None else d for d in spec.raw_shape)
    low, high = spec.raw_range or (0.0, 1.0)
    rng = np.random.default_rng(0)
    return rng.uniform(low, high, (_PROBE_SAMPLES, *shape)).astype("float32")


def check_target(out: str | Path, format: ExportFormat, overwrite: bool) -> Path:
    """``--out`` checked before any work (``keepbest.rundir.guard``): a ``.keras`` file, or a
    folder for a SavedModel; an existing one is replaced only with ``overwrite`` (a folder
    only if it is a SavedModel), and never a run dir or anything inside one."""
    out = Path(out)
    if format not in FORMATS:
        raise InputError(f"--format: {format!r} is not one of {', '.join(FORMATS)}")
    if format == "keras" and out.suffix != ".keras":
        raise InputError(f"--out: {out.name} must end in .keras for --format keras")
    return check_output(
        out,
        "--out",
        overwrite=overwrite,
        folder=format == "savedmodel",
        replaceable=("a SavedModel", _is_savedmodel),
    )


def _is_savedmodel(folder: Path) -> bool:
    """A SavedModel folder (an earlier export), or an empty folder."""
    return (folder / "saved_model.pb").is_file() or not any(folder.iterdir())


def _reload(path: Path, format: ExportFormat):
    """The artifact loaded as a server would load it: a function of a batch."""
    if format == "keras":
        import keras

        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return model.predict_on_batch
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda batch: loaded.serve(batch)  # holds `loaded`: its variables must live


def _sync(path: Path) -> None:
    """fsync a file, or every file and folder of a SavedModel, before the rename."""
    paths = [path] if path.is_file() else [*path.rglob("*"), path]
    for item in paths:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old folder (or a file where a folder goes) is renamed
    aside first, then deleted."""
    aside = None
    if out.exists() and (out.is_dir() or tmp.is_dir()):
        aside = temp_path_for(out)
        os.replace(out, aside)
    try:
        os.replace(tmp, out)
    except OSError:
        if aside is not None:  # the old export goes back where it was
            os.replace(aside, out)
        raise
    fsync_dir(out.parent)
    if aside is not None:
        _remove(aside)


def _remove(path: Path) -> None:
    """Delete a temporary file or folder (a failure to is not worth hiding the outcome)."""
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
