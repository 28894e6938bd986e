"""The best checkpoint on disk and its record, ``best.json``, kept consistent through kills.

A new best is committed in four durable steps, so that at every instant one record matches
the weights file that is there:

1. the weights go to a temporary file, which is fsync'ed and hashed;
2. the new record goes to ``best.json.pending`` (atomically);
3. the temporary file replaces ``best.weights.h5``;
4. ``best.json.pending`` replaces ``best.json``.

A kill between 3 and 4 leaves the new weights with the old ``best.json``; the pending
record, whose sha256 matches the weights, is then the true one. ``read_record`` applies
that rule, and ``recover`` makes it permanent. This module needs no TensorFlow.

Example:

    >>> from keepbest.rundir.record import read_record
    >>> record = read_record("runs/digits-mlp")          # doctest: +SKIP
    >>> record.epoch, record.monitor, record.value        # doctest: +SKIP
    (12, 'val_loss', 0.0893)
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError, model_validator

from keepbest.atomic import (
    failure_text,
    fsync_dir,
    sha256_file,
    sync_and_hash,
    temp_path_for,
    write_json_atomic,
)
from keepbest.errors import CheckpointWriteError, CorruptFileError, NoBestCheckpointError
from keepbest.rundir.layout import (
    AVERAGE_FILE,
    KEPT_DIR,
    PENDING_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    kept_file,
)


class KeptFile(BaseModel):
    """A point whose weights are kept in a file of its own (``checkpoint.keep_top``,
    ``checkpoint.average``)."""

    epoch: int
    step: int
    value: float
    checkpoint: str  # relative to the run dir: checkpoints/step-<step>.weights.h5
    sha256: str


class AverageRecord(BaseModel):
    """The averaged model (``checkpoint.average``), measured like every point."""

    of: str  # top_k | last_k
    steps: list[int]  # the points averaged
    value: float
    better: bool  # it beats the best (and ``checkpoint`` is kept)
    checkpoint: str | None = None  # average.weights.h5 when better
    sha256: str | None = None
    verified_value: float | None = None


class BestRecord(BaseModel):
    """What ``best.json`` says about the best checkpoint (all paths relative)."""

    epoch: int  # 1-based: the epoch the saved weights' last step fell in
    step: int | None = None  # the global optimizer step of the saved weights (older runs: None)
    monitor: str
    mode: str
    value: float
    checkpoint: str
    sha256: str
    verified_value: float | None = None
    verified_at: str | None = None
    saved_at: str
    versions: dict[str, str]
    notes: list[str] = []  # e.g. a resume that could not be bit-exact (a factory's data)
    # checkpoint.keep_top > 1: the kept points ranked, the best first; the latest points
    # when an average of the last k is asked for
    top: list[KeptFile] = []
    last: list[KeptFile] = []
    average: AverageRecord | None = None

    @model_validator(mode="after")
    def _possible(self) -> BestRecord:
        """What a record must be on its own (``run_problem`` checks it against the run):
        counts from 1, finite values, and files named as keepbest names them, inside the
        run dir (a forged ``../`` never reaches a read)."""
        import math

        if self.epoch < 1 or (self.step is not None and self.step < 1):
            raise ValueError(f"epoch {self.epoch}, step {self.step}: both count from 1")
        values = [self.value, self.verified_value]
        if not all(v is None or math.isfinite(v) for v in values):
            raise ValueError(f"value {self.value}: a best is a finite number")
        if self.checkpoint != WEIGHTS_FILE:
            raise ValueError(f"checkpoint {self.checkpoint!r}: expected {WEIGHTS_FILE!r}")
        for kept in (*self.top, *self.last):
            if kept.step < 1 or kept.epoch < 1 or kept.checkpoint != kept_file(kept.step):
                raise ValueError(
                    f"kept point {kept.checkpoint!r} (step {kept.step}): expected "
                    f"{kept_file(max(kept.step, 1))!r}"
                )
        average = self.average
        if average is not None and average.checkpoint not in (None, AVERAGE_FILE):
            raise ValueError(f"average {average.checkpoint!r}: expected {AVERAGE_FILE!r}")
        return self

    def kept_files(self) -> dict[str, KeptFile]:
        """Every kept point's file, by relative path."""
        return {kept.checkpoint: kept for kept in (*self.top, *self.last)}

    @property
    def newest_step(self) -> int | None:
        """The step of the newest point this record was committed for."""
        steps = [kept.step for kept in (*self.top, *self.last)]
        return max([*steps, self.step or 0]) if steps else self.step

    @property
    def verified(self) -> bool:
        return self.verified_value is not None


def now_text() -> str:
    """Now, as records write it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load(path: Path) -> BestRecord | None:
    try:
        return BestRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError) as exc:
        raise CorruptFileError(
            f"{path} is not a valid keepbest record ({_first_problem(exc)}); "
            "restore it from a backup or retrain"
        ) from None


def _first_problem(exc: ValueError) -> str:
    """The first problem pydantic found, with its field (not its summary line)."""
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def run_problem(
    record: BestRecord, epochs: int, reached: int | None, history: list[dict] | None
) -> str | None:
    """Why ``record`` cannot be this run's best, or None. Unfinished: an epoch beyond the
    run's ``epochs``, or more than one past the epoch its newest resume state ``reached``
    (a best may be newer than that state, never by more than an epoch). Finished, with
    the ``history`` of its final resume state (every evaluation point): a point (epoch
    and step) the run never evaluated (an empty history says nothing)."""
    where = f"epoch {record.epoch}" + (f", step {record.step}" if record.step else "")
    if not history:
        if record.epoch > epochs:
            return f"{RECORD_FILE} records {where}, but the run trains {epochs} epochs"
        if reached is not None and record.epoch > reached + 1:
            return f"{RECORD_FILE} records {where}, but the run has reached epoch {reached}"
        return None
    for point in history:
        same_step = record.step is None or point.get("step") in (None, record.step)
        if point.get("epoch") == record.epoch and same_step:
            return None
    done = history[-1] if history else {}
    return (
        f"{RECORD_FILE} records {where}, a point this run never evaluated (it ended at epoch "
        f"{done.get('epoch', 0)}, step {done.get('step', 0)})"
    )


def read_record(run_dir: str | Path) -> BestRecord:
    """The record of the run's best checkpoint; ``NoBestCheckpointError`` if there is none."""
    run_dir = Path(run_dir)
    record = _load(run_dir / RECORD_FILE)
    pending = _load(run_dir / PENDING_FILE)
    if pending is not None:
        weights = run_dir / pending.checkpoint
        if weights.is_file() and sha256_file(weights) == pending.sha256:
            return pending
    if record is None:
        raise NoBestCheckpointError(
            f"{run_dir} has no best checkpoint yet ({RECORD_FILE} is missing); "
            "train the run first, or check the path"
        )
    return record


def read_record_or_none(run_dir: str | Path) -> BestRecord | None:
    """The record of the run's best checkpoint, or None if there is none yet."""
    try:
        return read_record(run_dir)
    except NoBestCheckpointError:
        return None


def recover(run_dir: Path) -> BestRecord | None:
    """Finish or undo a commit that a kill interrupted (call while holding the run lock)."""
    pending_path = run_dir / PENDING_FILE
    if pending_path.exists():
        record = read_record_or_none(run_dir)
        if record is not None and record.sha256 == _load(pending_path).sha256:
            os.replace(pending_path, run_dir / RECORD_FILE)
        else:
            pending_path.unlink()
        fsync_dir(run_dir)
    record = read_record_or_none(run_dir)
    remove_unnamed_kept(run_dir, record)
    return record


def chosen(record: BestRecord, which: str = "better") -> str:
    """Which model ``which`` means for this run: ``best``, or ``average`` (the averaged
    model, when ``checkpoint.average`` kept one). ``better``: the average if it beat the
    best, else the best."""
    average = record.average
    kept = average is not None and average.better
    if which == "average" and not kept:
        why = "has no averaged model"
        if average is not None:
            why = (
                f"kept no averaged model (it measured {average.value:.6g}, not better than "
                f"the best's {record.value:.6g})"
            )
        raise NoBestCheckpointError(
            f"the run {why}; load which='best' (or 'better'), or train with checkpoint.average"
        )
    if which not in ("best", "average", "better"):
        raise ValueError(f"which: expected 'best', 'average' or 'better', got {which!r}")
    return "average" if which != "best" and kept else "best"


def chosen_value(record: BestRecord) -> float | None:
    """The verified value of the model ``load_best`` returns (``chosen``): the kept
    average's, or the best's."""
    if chosen(record) == "average":
        return record.average.verified_value
    return record.verified_value


def average_text(record: BestRecord) -> str:
    """``average of the 3 best points (steps 96, 84, 72): val_loss 0.2626 vs best 0.2347;
    the best is used`` (one line for show, evaluate, summaries)."""
    average = record.average
    which = "best" if average.of == "top_k" else "latest"
    steps = ", ".join(str(step) for step in average.steps)
    used = "the average is used (average.weights.h5)" if average.better else "the best is used"
    return (
        f"average of the {len(average.steps)} {which} points (steps {steps}): "
        f"{record.monitor} {average.value:.8g} vs best {record.value:.8g}; {used}"
    )


def verify_checksum(run_dir: Path, record: BestRecord, which: str = "best") -> Path:
    """The checkpoint's path (the best's, or the kept average's), after checking that
    its sha256 matches the record."""
    if which == "average":
        return _checked(run_dir / record.average.checkpoint, record.average.sha256)
    return _checked(run_dir / record.checkpoint, record.sha256)


def _checked(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise CorruptFileError(
            f"{path} is missing although {RECORD_FILE} names it; the run dir is incomplete"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise CorruptFileError(
            f"{path} does not match the sha256 in {RECORD_FILE} (file {actual[:12]}..., "
            f"record {expected[:12]}...): the checkpoint is corrupt or was replaced"
        )
    return path


def commit_best(
    run_dir: Path,
    write_weights: Callable[[Path], None],
    *,
    epoch: int,
    step: int,
    monitor: str,
    mode: str,
    value: float,
    versions: dict[str, str],
    notes: Sequence[str] = (),
) -> BestRecord:
    """Durably replace the best checkpoint and its record (see the module docstring)."""
    target = run_dir / WEIGHTS_FILE
    tmp = temp_path_for(target)
    weights_in_place = False
    try:
        write_weights(tmp)
        record = BestRecord(
            epoch=epoch,
            step=step,
            monitor=monitor,
            mode=mode,
            value=value,
            checkpoint=WEIGHTS_FILE,
            sha256=sync_and_hash(tmp),
            saved_at=now_text(),
            versions=versions,
            notes=list(notes),
        )
        write_json_atomic(run_dir / PENDING_FILE, record.model_dump())
        os.replace(tmp, target)
        weights_in_place = True
        fsync_dir(run_dir)
        os.replace(run_dir / PENDING_FILE, run_dir / RECORD_FILE)
        fsync_dir(run_dir)
    except Exception as exc:
        if not weights_in_place:  # else the pending record is the truth (read_record)
            for leftover in (tmp, run_dir / PENDING_FILE):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        previous = "the previous best is intact" if target.exists() else "no best was saved before"
        raise CheckpointWriteError(
            f"could not save the best checkpoint of step {step} (epoch {epoch}) to {target} "
            f"({failure_text(exc)}); {previous}; run the same command to resume once it can "
            "be written"
        ) from exc
    return record


def commit_kept(
    run_dir: Path,
    write_weights: Callable[[Path], None] | None,
    record: BestRecord,
    new_file: str | None,
    new_best: bool,
    dropped: Sequence[str],
) -> BestRecord:
    """Commit an evaluation point that joins the kept points (``checkpoint.keep_top``,
    ``checkpoint.average``), durably and in an order that never lets a record name a
    missing file nor a kept file go missing:

    1. its weights go to ``new_file`` (temp file, fsync, sha256, rename; a name no record
       names yet);
    2. a new best: ``best.weights.h5`` becomes a hard link to that file through the
       four-step commit (``best.json.pending`` first); otherwise ``best.json`` is
       replaced atomically;
    3. only then are the files no record names any more (``dropped``) deleted.

    ``record`` is the new record; its entries for ``new_file`` get the file's sha256.
    ``recover`` deletes a file a kill left unnamed."""
    try:
        if new_file is not None and write_weights is not None:
            target = run_dir / new_file
            target.parent.mkdir(exist_ok=True)
            tmp = temp_path_for(target)
            try:
                write_weights(tmp)
                sha = sync_and_hash(tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            fsync_dir(target.parent)
            record = _with_sha(record, new_file, sha)
        if new_best:
            best = run_dir / WEIGHTS_FILE
            linked = temp_path_for(best)
            _link_or_copy(run_dir / record.top[0].checkpoint, linked)
            try:
                write_json_atomic(run_dir / PENDING_FILE, record.model_dump())
                os.replace(linked, best)
            finally:
                with contextlib.suppress(OSError):
                    linked.unlink()
            fsync_dir(run_dir)
            os.replace(run_dir / PENDING_FILE, run_dir / RECORD_FILE)
        else:
            write_json_atomic(run_dir / RECORD_FILE, record.model_dump())
        fsync_dir(run_dir)
    except Exception as exc:
        raise CheckpointWriteError(
            f"could not save the checkpoint of step {record.newest_step} in {run_dir} "
            f"({failure_text(exc)}); the kept checkpoints and their record are intact; run "
            "the same command to resume once it can be written"
        ) from exc
    for name in dropped:  # no record names them any more
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
    if dropped:
        with contextlib.suppress(OSError):
            fsync_dir(run_dir / Path(dropped[0]).parent)
    return record


def _with_sha(record: BestRecord, checkpoint: str, sha: str) -> BestRecord:
    def fill(kept: list[KeptFile]) -> list[KeptFile]:
        return [
            k.model_copy(update={"sha256": sha}) if k.checkpoint == checkpoint else k for k in kept
        ]

    update = {"top": fill(record.top), "last": fill(record.last)}
    if record.top and record.top[0].checkpoint == checkpoint:
        update["sha256"] = sha
    return record.model_copy(update=update)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` holds ``source``'s bytes: a hard link (no bytes written), or a copy
    fsync'ed where the file system has no links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        with open(target, "rb+") as copied:
            os.fsync(copied.fileno())


def remove_unnamed_kept(run_dir: Path, record: BestRecord | None) -> list[Path]:
    """Delete the kept-point files no record names (a kill between writing a file and
    its record, or between a record and the deletions it allowed)."""
    folder = run_dir / KEPT_DIR
    if not folder.is_dir():
        return []
    named = set(record.kept_files()) if record is not None else set()
    removed = []
    for path in folder.iterdir():
        if f"{KEPT_DIR}/{path.name}" not in named:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def commit_average(run_dir: Path, weights: Path | None, record: BestRecord) -> BestRecord:
    """The averaged model's file (when it is kept) in place, then the record that names
    it (a file no record names is never read: ``average.weights.h5`` stays a candidate
    until ``best.json`` says it is the better one)."""
    from keepbest.rundir.layout import AVERAGE_FILE

    target = run_dir / AVERAGE_FILE
    try:
        if weights is not None:
            os.replace(weights, target)
        else:
            target.unlink(missing_ok=True)
        fsync_dir(run_dir)
        write_json_atomic(run_dir / RECORD_FILE, record.model_dump())
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not save the averaged model in {run_dir} ({failure_text(exc)}); the best "
            "checkpoint is intact; run the same command to average again"
        ) from exc
    return record


def mark_verified(run_dir: Path, record: BestRecord, verified_value: float) -> BestRecord:
    updated = record.model_copy(
        update={"verified_value": verified_value, "verified_at": now_text()}
    )
    write_json_atomic(run_dir / RECORD_FILE, updated.model_dump())
    return updated
