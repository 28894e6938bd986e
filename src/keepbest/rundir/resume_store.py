"""The resume state: everything needed to continue a run bit for bit, kept durably.

A state is a pair of files in ``run_dir/resume/``, named by the global step:

- ``state-<step>.npz``: every model variable (weights, non-trainable statistics and each
  random layer's SeedGenerator state), every optimizer variable (``iterations``
  included) and, for a mid-epoch stop, the metric accumulators; one ``.npy`` member per
  variable, streamed into an uncompressed zip one variable at a time, a large one a
  slice at a time (no full copy of the model, nor of its largest variable, in memory),
  and hashed on the way to disk (no second pass reads it back). Plain file I/O, so a
  full disk is a clean ``OSError``: HDF5 left in a failed write can crash the process at
  exit;
- ``state-<step>.json``: the manifest, written last and atomically: progress (epoch and
  batch), why training stopped, history so far, and the sha256 of the ``.npz``.

A state exists only once its manifest does, and the manifest's checksum is checked on
read, so a reader sees a complete state or none. The previous state is kept until the
next one is complete, so a corrupt newest state falls back to it (and says so).

Beside the states, ``resume/attempts.json`` records every training attempt (``Attempt``):
when it started and from which step, written atomically as it starts; how far it got
(the newest state's step) and, for a clean end (finished, or stopped by a signal with
its state saved), how it ended, written at its end or, if it died (kill -9, a lost
node), at the next attempt's start. An attempt without a clean end died; one that also
left no newer state died without progress. The cadence learns the time between
failures from it (``callbacks.resume.Failures``), ``keepbest show`` counts them.

Example:

    >>> from keepbest.rundir.resume_store import ResumeStore
    >>> store = ResumeStore(run_dir)                      # doctest: +SKIP
    >>> store.save(model, Progress(epoch=3, batch=0), history_rows)  # doctest: +SKIP
    >>> store.latest().progress                            # doctest: +SKIP
    Progress(epoch=3, batch=0)
    >>> log = AttemptLog(attempts=[
    ...     Attempt(started_at="2026-12-06T04:00:00.000+00:00", from_step=0, reached_step=40),
    ...     Attempt(started_at="2026-12-06T04:00:09.000+00:00", from_step=40, reached_step=40),
    ...     Attempt(started_at="2026-12-06T04:00:15.500+00:00", from_step=40)])
    >>> log.lives(now=datetime(2026, 12, 6, 4, 0, 20, tzinfo=timezone.utc))
    [(9.0, True, True), (6.5, True, False), (4.5, True, False)]
    >>> log.counts(newest_step=40, running=False)  # the last one left no newer state
    (3, 2)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator

from keepbest.atomic import (
    HashingWriter,
    failure_text,
    fsync_dir,
    sha256_file,
    temp_path_for,
    write_json_atomic,
)
from keepbest.errors import CheckpointWriteError, CorruptFileError
from keepbest.rundir.layout import RunDir

log = logging.getLogger(__name__)
_STATE_NAME = re.compile(r"^state-(\d{12})\.json$")
READ_BYTES = 1024 * 1024  # the most a large .npy member is read at a time (into a slice)


class Progress(BaseModel):
    """Where training stands: ``epoch`` is 0-based and in progress; ``batch`` of its
    steps are done (0 at an epoch boundary)."""

    epoch: int
    batch: int = 0


class BestSoFar(BaseModel):
    """The best checkpoint as training knew it when a state was written."""

    epoch: int
    step: int | None = None
    value: float


class StateManifest(BaseModel):
    progress: Progress
    global_step: int
    stop_kind: str | None = None  # why training stopped here, if it did
    history: list[dict[str, int | float]]
    weights_file: str
    sha256: str
    signature: list[str]  # variable paths and shapes, checked before restoring
    metric_paths: list[str] = []  # Keras metric accumulators saved by a mid-epoch stop
    write_seconds: float | None = None  # how long writing the .npz took (for the cadence)
    next_batch: str | None = None  # fingerprint of the batch a resumed run must see first
    notes: list[str] = []  # carried from state to state, e.g. a resume that was not exact
    best: BestSoFar | None = None  # the best as of this state (best.json may be newer)
    # checkpoint.keep_top / average: the kept points as of this state, (step, value) each
    kept: dict[str, list[list[float]]] | None = None
    # the user's callbacks' counters (``callbacks.resume.callback_states``)
    callbacks: list[dict[str, Any]] = []
    saved_at: str | None = None  # UTC, ISO 8601


@dataclasses.dataclass
class ResumeState:
    manifest: StateManifest
    weights_path: Path
    note: str | None = None  # e.g. "fell back to the previous state because ..."

    @property
    def progress(self) -> Progress:
        return self.manifest.progress

    @property
    def history(self) -> list[dict[str, float]]:
        return self.manifest.history


def _variable_groups(model) -> dict[str, list]:
    return {"model": list(model.variables), "optimizer": list(model.optimizer.variables)}


def _write_npy(member, variable) -> None:
    """``variable`` as a .npy file, its rows taken from ``host_chunks``: a view of the
    variable's memory, or slices; never a host copy of all of it."""
    from keepbest.variable_memory import host_chunks

    shape = tuple(variable.shape)
    if not shape:
        np.lib.format.write_array(member, np.asarray(variable))
        return
    for start, _, rows in host_chunks(variable):
        if start == 0:  # the header: the shape of all of it, the dtype of its rows
            header = {
                "descr": np.lib.format.dtype_to_descr(rows.dtype),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(member, header)
        member.write(memoryview(np.ascontiguousarray(rows)).cast("B"))


def _signature(groups: dict[str, list]) -> list[str]:
    return [
        f"{group}/{variable.path}:{tuple(variable.shape)}"
        for group in ("model", "optimizer")
        for variable in groups[group]
    ]


_AUTO_NUMBER = re.compile(r"_\d+(?=[/:])")
_SCOPES = re.compile(r"^(optimizer)/(?:[^:]*/)?([^/:]+):")


def _unnumbered(signature: list[str]) -> list[str]:
    """A signature without Keras' automatic name numbers (``dense_6`` is ``dense``) and
    name scopes (an optimizer's variables are scoped by where it was first built: in a
    training step, or by a restore before one): the same model built again in one
    process (a notebook cell run twice) gets new numbers, and variables are restored by
    position, their names and shapes checked."""
    return [_SCOPES.sub(r"\1/\2:", _AUTO_NUMBER.sub("", line)) for line in signature]


ATTEMPTS_KEPT = 200  # attempts listed in attempts.json; older ones are only counted


class Attempt(BaseModel):
    """One training attempt: a process (or a ``fit``) that resumed or started the run."""

    started_at: str  # UTC, ISO 8601 with milliseconds
    from_step: int = Field(ge=0)  # the step of the state it resumed from (0: the start)
    # the newest state's step once it ended: at its clean end, else at the next start
    reached_step: int | None = Field(None, ge=0)
    # a clean end, everything it trained in a state; None: it died, or it is running
    ended: Literal["finished", "stopped"] | None = None
    ended_at: str | None = None

    @field_validator("started_at", "ended_at")
    @classmethod
    def _a_time(cls, value: str | None) -> str | None:
        if value is not None and _seconds(value) is None:
            raise ValueError(f"{value!r} is not an ISO 8601 time with its time zone")
        return value

    def progressed(self, newest_step: int | None = None) -> bool:
        """Whether it left a newer state than it started from (``newest_step``: the
        newest state's step, for the last attempt, whose end nobody recorded)."""
        reached = self.reached_step if self.reached_step is not None else newest_step
        return reached is not None and reached > self.from_step


class AttemptLog(BaseModel):
    """``resume/attempts.json``: the latest attempts, oldest first, and the number of
    older ones (and of those that died without progress) no longer listed."""

    earlier: int = Field(0, ge=0)
    earlier_without_progress: int = Field(0, ge=0)
    attempts: list[Attempt] = []

    def lives(self, now: datetime) -> list[tuple[float, bool, bool]]:
        """Each listed attempt as (seconds it lasted, died, progressed), for
        ``callbacks.resume.Failures``. An attempt without a clean end lasted until the
        next one started (``now`` for the last): its restart's start-up counts in."""
        lives = []
        for index, attempt in enumerate(self.attempts):
            began = _seconds(attempt.started_at)
            if attempt.ended_at is not None:
                until = _seconds(attempt.ended_at)
            elif index + 1 < len(self.attempts):
                until = _seconds(self.attempts[index + 1].started_at)
            else:
                until = now.timestamp()
            died = attempt.ended is None
            lives.append((round(max(0.0, until - began), 3), died, attempt.progressed()))
        return lives

    def counts(self, newest_step: int | None, running: bool) -> tuple[int, int]:
        """(attempts, attempts that died without progress). The last attempt is judged by
        the newest state (``newest_step``) unless it is ``running``."""
        without = self.earlier_without_progress
        for index, attempt in enumerate(self.attempts):
            last = index == len(self.attempts) - 1
            if attempt.ended is not None or (last and running):
                continue
            without += not attempt.progressed(newest_step if last else None)
        return self.earlier + len(self.attempts), without


def _seconds(text: str) -> float | None:
    """An ISO 8601 time with its zone as POSIX seconds, or None."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _now_text(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")


def read_attempts(run_dir: Path) -> AttemptLog:
    """The run's attempts (none if it has no record; a damaged record is ignored, with a
    warning: it only tunes the cadence and ``show``)."""
    path = RunDir(run_dir).attempts_file
    try:
        return AttemptLog.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return AttemptLog()
    except (ValidationError, ValueError, OSError) as exc:
        log.warning("%s is unreadable (%s); it is started anew", path, str(exc).splitlines()[0])
        return AttemptLog()


class ResumeStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.folder = RunDir(run_dir).resume_dir

    def begin_attempt(self, from_step: int) -> list[tuple[float, bool, bool]]:
        """Record a new attempt resuming from ``from_step`` (the previous one, if it did
        not end cleanly, reached that step: the newest state); return the earlier ones'
        lives (``AttemptLog.lives``), oldest first."""
        now = datetime.now(timezone.utc)
        record = read_attempts(self.run_dir)
        if record.attempts and record.attempts[-1].reached_step is None:
            record.attempts[-1].reached_step = from_step
        lives = record.lives(now)
        record.attempts.append(Attempt(started_at=_now_text(now), from_step=from_step))
        while len(record.attempts) > ATTEMPTS_KEPT:
            dropped = record.attempts.pop(0)
            record.earlier += 1
            record.earlier_without_progress += dropped.ended is None and not dropped.progressed()
        self._write_attempts(record)
        return lives

    def end_attempt(self, reached_step: int, how: Literal["finished", "stopped"]) -> None:
        """Record the clean end of the attempt begun last (all it trained is in a state at
        ``reached_step``)."""
        record = read_attempts(self.run_dir)
        if not record.attempts:
            return
        last = record.attempts[-1]
        last.reached_step, last.ended, last.ended_at = reached_step, how, _now_text()
        self._write_attempts(record)

    def _write_attempts(self, record: AttemptLog) -> None:
        self.folder.mkdir(exist_ok=True)
        write_json_atomic(RunDir(self.run_dir).attempts_file, record.model_dump())

    def _manifests(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _STATE_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def save(
        self,
        model,
        progress: Progress,
        global_step: int,
        history: list[dict[str, float]],
        stop_kind: str | None = None,
        next_batch: str | None = None,
        notes: Sequence[str] = (),
        best: BestSoFar | None = None,
        metrics: dict[str, np.ndarray] | None = None,
        callbacks: list[dict[str, Any]] | None = None,
        kept: dict[str, list[list[float]]] | None = None,
    ) -> StateManifest:
        """Write a complete new state, then drop all but it and its predecessor.

        ``metrics``: Keras' metric accumulators of a mid-epoch state, by variable path (as
        ``Distribution.read_metrics`` reads them); by default read from the model."""
        started = time.monotonic()
        stem = f"state-{global_step:012d}"
        weights = self.folder / f"{stem}.npz"
        tmp = temp_path_for(weights)
        groups: dict[str, list] = _variable_groups(model)
        if progress.batch > 0:
            if metrics is None:
                metrics = {v.path: np.asarray(v) for v in model.metrics_variables}
            groups["metrics"] = list(metrics.values())
        try:
            self.folder.mkdir(exist_ok=True)
            with (
                HashingWriter(tmp) as out,
                zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
            ):
                for group, variables in groups.items():
                    for index, variable in enumerate(variables):
                        name = f"{group}/{index:06d}.npy"
                        with archive.open(name, "w", force_zip64=True) as member:
                            _write_npy(member, variable)
            manifest = StateManifest(
                progress=progress,
                global_step=global_step,
                stop_kind=stop_kind,
                history=history,
                weights_file=weights.name,
                sha256=out.hexdigest(),
                signature=_signature(groups),
                metric_paths=list(metrics) if progress.batch > 0 else [],
                write_seconds=round(time.monotonic() - started, 6),
                next_batch=next_batch,
                notes=list(notes),
                best=best,
                callbacks=callbacks or [],
                kept=kept,
                saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            tmp.replace(weights)
            fsync_dir(self.folder)
            write_json_atomic(self.folder / f"{stem}.json", manifest.model_dump())
        except Exception as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise CheckpointWriteError(
                f"could not write the resume state {weights} ({failure_text(exc)}); "
                "the best checkpoint and the previous resume state are intact"
            ) from exc
        with contextlib.suppress(OSError):  # old states that stay are harmless
            self._prune(keep=2)
        return manifest

    def _prune(self, keep: int) -> None:
        """Delete old states (manifest first, so no manifest outlives its weights) and
        weights files whose manifest was never written."""
        manifests = self._manifests()
        kept = {path.with_suffix(".npz").name for _, path in manifests[:keep]}
        for _, path in manifests[keep:]:
            path.unlink(missing_ok=True)
            path.with_suffix(".npz").unlink(missing_ok=True)
        for leftover in self.folder.glob("state-*.npz"):
            if leftover.name not in kept:
                leftover.unlink(missing_ok=True)

    def latest(self) -> ResumeState | None:
        """The newest complete state whose checksum matches; older ones are fallbacks."""
        problems: list[str] = []
        for step, path in self._manifests():
            try:
                manifest = StateManifest.model_validate_json(path.read_bytes())
            except (ValidationError, ValueError, OSError) as exc:
                problems.append(f"{path} is unreadable ({str(exc).splitlines()[0]})")
                continue
            forged = _not_its_own(manifest, step, path)
            if forged:
                problems.append(f"{path} {forged}")
                continue
            weights = self.folder / manifest.weights_file
            if not weights.is_file() or sha256_file(weights) != manifest.sha256:
                problems.append(f"{weights} does not match the checksum in {path.name}")
                continue
            note = None
            if problems:
                note = f"{'; '.join(problems)}: resuming from the previous state {path.name}"
                log.warning(note)
            return ResumeState(manifest, weights, note)
        if problems:
            raise CorruptFileError(
                f"{'; '.join(problems)}, and no older complete state is kept: "
                "start over with --restart"
            )
        return None


def _not_its_own(manifest: StateManifest, step: int, path: Path) -> str | None:
    """Why a manifest does not describe the state its name says (a forged or damaged
    file: its weights elsewhere than its own ``.npz`` beside it, another step, negative
    progress), or None."""
    if manifest.weights_file != path.with_suffix(".npz").name:
        return f"names {manifest.weights_file!r}, not its own {path.with_suffix('.npz').name}"
    if manifest.global_step != step:
        return f"says step {manifest.global_step}, not {step} as its name"
    progress = manifest.progress
    if progress.epoch < 0 or progress.batch < 0 or (progress.epoch, progress.batch) == (0, 0):
        return f"holds impossible progress (epoch {progress.epoch}, batch {progress.batch})"
    return None


def restore(model, state: ResumeState) -> dict[str, np.ndarray] | None:
    """Load model and optimizer variables into a built, compiled model.

    Returns the metric accumulators of a mid-epoch state, by variable path: Keras resets
    its metrics when ``fit`` starts, so the caller assigns them at the epoch's beginning.
    """
    model.optimizer.build(model.trainable_variables)
    groups = _variable_groups(model)
    if _unnumbered(_signature(groups)) != _unnumbered(state.manifest.signature):
        raise CorruptFileError(
            f"{state.weights_path} was saved from a different model or optimizer "
            "(variables differ); the config or the builder's code changed: use --restart"
        )
    with zipfile.ZipFile(state.weights_path) as archive:
        for group, variables in groups.items():
            for index, variable in enumerate(variables):
                with archive.open(f"{group}/{index:06d}.npy") as member:
                    _read_npy_into(member, variable)
        metrics = {}
        for index, path in enumerate(state.manifest.metric_paths):
            with archive.open(f"metrics/{index:06d}.npy") as member:
                metrics[path] = np.lib.format.read_array(member, allow_pickle=False)
    return metrics or None


def _read_npy_into(member, variable) -> None:
    """Assign the .npy file ``member`` to ``variable``: a large one a row slice at a time,
    in place (``variable_memory.assign_in_slices``), never whole in host memory."""
    from keepbest.variable_memory import assign_in_slices, fits_in_place, is_large

    version = np.lib.format.read_magic(member)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read_header(member)
    if fortran_order or not is_large(shape, dtype.itemsize) or not fits_in_place(variable, shape):
        member.seek(0)  # small (or mirrored): numpy reads it whole
        variable.assign(np.lib.format.read_array(member, allow_pickle=False))
        return

    def read_rows(view, start, stop):
        # A zip member's readinto reads into a temporary bytes object first: at most
        # READ_BYTES at a time, so that temporary stays small beside the slice.
        into, done = memoryview(view).cast("B"), 0
        while done < into.nbytes:
            got = member.readinto(into[done : done + READ_BYTES])
            if not got:
                raise CorruptFileError(f"{member.name} in a resume state ends early")
            done += got

    assign_in_slices(variable, shape, dtype, read_rows)


def build_metrics(model, batch) -> None:
    """Create Keras' compiled-metric variables now (Keras makes them at the first train
    step), so that a mid-epoch resume can load their accumulators before that step."""
    x, y = batch[:2]
    model.compute_metrics(x, y, model(x, training=False))
