"""Atomic, durable file writes: a reader sees the old complete file or the new one.

Keras opens its save targets with mode ``"w"``, truncating the previous file in place, so
a job killed mid-save loses the old best. Here every file is written to a temporary name
in the same folder, flushed and fsync'ed, renamed over the target with ``os.replace``
(atomic on POSIX), and the folder is fsync'ed so that the rename itself survives a crash.

Example:

    >>> from keepbest.atomic import atomic_path, write_json_atomic
    >>> with atomic_path(run_dir / "best.weights.h5") as tmp:   # doctest: +SKIP
    ...     model.save_weights(tmp)          # tmp keeps the ".weights.h5" suffix
    >>> write_json_atomic(run_dir / "best.json", {"epoch": 3})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"
_CHUNK = 8 * 1024 * 1024


def fsync_dir(folder: Path) -> None:
    """Make renames and creations inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(target: Path) -> Path:
    """A hidden, unique name beside ``target`` that keeps its full suffix (Keras checks it)."""
    return target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.{target.name}")


def sha256_file(path: Path, fsync: bool = False) -> str:
    """The file's sha256; with ``fsync`` also make it durable, in the same open."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def sync_and_hash(path: Path) -> str:
    """fsync a finished file and return its sha256, in one pass over the page cache."""
    return sha256_file(path, fsync=True)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it durably replaces ``target``.

    The caller's writer must have closed the file when the block ends. On any error the
    temporary file is removed and ``target`` is untouched.
    """
    tmp = temp_path_for(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: Path, payload: Any) -> None:
    write_text_atomic(target, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporaries left by a process killed mid-write (call under the run lock)."""
    removed = []
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed.append(leftover)
    return removed
