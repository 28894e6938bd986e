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
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from keepbest.atomic import (
    failure_text,
    fsync_dir,
    sha256_file,
    sync_and_hash,
    temp_path_for,
    write_json_atomic,
)
from keepbest.errors import CheckpointWriteError, CorruptFileError, NoBestCheckpointError
from keepbest.rundir.layout import PENDING_FILE, RECORD_FILE, WEIGHTS_FILE


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

    @property
    def verified(self) -> bool:
        return self.verified_value is not None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load(path: Path) -> BestRecord | None:
    try:
        return BestRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError) as exc:
        raise CorruptFileError(
            f"{path} is not a valid keepbest record ({str(exc).splitlines()[0]}); "
            "restore it from a backup or retrain"
        ) from None


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
    return read_record_or_none(run_dir)


def verify_checksum(run_dir: Path, record: BestRecord) -> Path:
    """The checkpoint's path, after checking that its sha256 matches the record."""
    path = run_dir / record.checkpoint
    if not path.is_file():
        raise CorruptFileError(
            f"{path} is missing although {RECORD_FILE} names it; the run dir is incomplete"
        )
    actual = sha256_file(path)
    if actual != record.sha256:
        raise CorruptFileError(
            f"{path} does not match the sha256 in {RECORD_FILE} (file {actual[:12]}..., "
            f"record {record.sha256[:12]}...): the checkpoint is corrupt or was replaced"
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
            saved_at=_now(),
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


def mark_verified(run_dir: Path, record: BestRecord, verified_value: float) -> BestRecord:
    updated = record.model_copy(update={"verified_value": verified_value, "verified_at": _now()})
    write_json_atomic(run_dir / RECORD_FILE, updated.model_dump())
    return updated
