"""Atomic, durable file writes: a reader sees the old complete file or the new one.

Keras opens its save targets with mode ``"w"``, truncating the previous file in place, so
a job killed mid-save loses the old best. Here every file is written to a temporary name
in the same folder, flushed and fsync'ed, renamed over the target with ``os.replace``
(atomic on POSIX), and the folder is fsync'ed so that the rename itself survives a crash.

A write the operating system refuses (no space, read-only, file too large, a folder where
the file goes) is a ``WriteError`` (exit 6) naming the path and the cause in one line
(``os_error_text``), and its temporary file is gone.

Example:

    >>> from keepbest.atomic import atomic_path, write_json_atomic
    >>> with atomic_path(run_dir / "best.weights.h5") as tmp:   # doctest: +SKIP
    ...     model.save_weights(tmp)          # tmp keeps the ".weights.h5" suffix
    >>> write_json_atomic(run_dir / "best.json", {"epoch": 3})  # doctest: +SKIP
    >>> os_error_text(OSError(28, "No space left on device", "p.csv"))
    'No space left on device'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from keepbest.errors import WriteError, one_line

TEMP_PREFIX = ".tmp-"
_CHUNK = 8 * 1024 * 1024
_HASH_ASIDE = 1024 * 1024  # HashingWriter hashes chunks this large in its helper thread


def os_error_text(exc: BaseException) -> str:
    """The cause of an ``OSError`` in a few words, whoever raised it (Python, h5py, zipfile,
    Keras): the text of its errno (also of an OSError it was raised from), else its first
    line. HDF5's own messages span lines and repeat the path; this is one short line."""
    seen = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        number = getattr(error, "errno", None) if isinstance(error, OSError) else None
        if isinstance(number, int) and number > 0:
            return os.strerror(number)
        error = error.__cause__ or error.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def caused_by_os_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` or was raised from one."""
    seen = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def failure_text(exc: BaseException) -> str:
    """One short line for why something failed: the OS's cause, else the exception's
    type and the line of its message that says what is wrong."""
    if caused_by_os_error(exc):
        return os_error_text(exc)
    text = one_line(exc)
    return type(exc).__name__ if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


def write_failed(
    target: Path, exc: BaseException, outcome: str = "nothing there was changed"
) -> WriteError:
    """The one-line ``WriteError`` for a failed write of ``target``."""
    return WriteError(f"cannot write {target}: {os_error_text(exc)}; {outcome}")


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
    """The file's sha256; with ``fsync`` also make it durable, in the same open.

    The fsync runs in a helper thread while the hash reads the page cache (hashlib and
    fsync both release the GIL), so the pair costs about the longer one, not the sum.
    """
    with open(path, "rb") as handle:
        if not fsync:
            return _sha256_of(handle)
        with ThreadPoolExecutor(max_workers=1) as helper:
            synced = helper.submit(os.fsync, handle.fileno())
            digest = _sha256_of(handle)
            synced.result()
        return digest


def _sha256_of(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sync_and_hash(path: Path) -> str:
    """fsync a finished file and return its sha256, in one pass over the page cache."""
    return sha256_file(path, fsync=True)


class HashingWriter:
    """A new file written front to back whose sha256 is computed on the way to disk.

    No second pass reads the file back: each chunk goes to a helper thread for hashing
    (hashlib releases the GIL), so hashing one chunk overlaps writing it and producing the
    next. It cannot seek, so ``zipfile`` streams into it (data descriptors instead of
    seeking back to patch headers). ``close`` waits for the hash and fsyncs; ``hexdigest``
    is then the sha256 of exactly the bytes on disk.

    Example:

        >>> with HashingWriter(tmp) as out:                        # doctest: +SKIP
        ...     with zipfile.ZipFile(out, "w") as archive: ...
        >>> out.hexdigest() == sha256_file(tmp)                     # doctest: +SKIP
        True
    """

    def __init__(self, path: Path):
        self._handle = open(path, "xb")  # noqa: SIM115 (closed by close())
        self._digest = hashlib.sha256()
        self._helper = ThreadPoolExecutor(max_workers=1)
        self._hashing: Future | None = None
        self._position = 0
        self._done = False

    def write(self, data) -> int:
        # The helper hashes after this returns: keep bytes that nobody can change. A
        # read-only buffer (bytes; a view of a variable's memory, see variable_memory) is
        # kept as it is, a writable one (the caller may reuse it) is copied.
        chunk = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if not isinstance(chunk, bytes) and not chunk.readonly:
            chunk = bytes(chunk)
        if self._hashing is not None:
            self._hashing.result()  # one chunk at a time, in order
            self._hashing = None
        if len(chunk) >= _HASH_ASIDE:
            self._hashing = self._helper.submit(self._digest.update, chunk)
        else:  # a hand-off to the helper would cost more than hashing a small chunk
            self._digest.update(chunk)
        self._handle.write(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("HashingWriter only appends")

    def flush(self) -> None:
        self._handle.flush()

    def close(self, sync: bool = True) -> None:
        """Finish the hash and (``sync``) flush and fsync the file; safe to call twice."""
        if self._done:
            return
        self._done = True
        try:
            if self._hashing is not None:
                self._hashing.result()
            if sync:
                self._handle.flush()
                os.fsync(self._handle.fileno())
        finally:
            self._helper.shutdown()
            self._handle.close()

    def hexdigest(self) -> str:
        if not self._done:
            raise RuntimeError("the sha256 is known once the file is closed")
        return self._digest.hexdigest()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(sync=kind is None)  # a failed write's temp file is deleted, not synced


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it durably replaces ``target``.

    The caller's writer must have closed the file when the block ends. On any error the
    temporary file is removed and ``target`` is untouched; an error of the operating
    system (here or in the caller's writer) becomes a ``WriteError`` naming ``target``.
    """
    tmp = temp_path_for(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        _discard(tmp)
        if isinstance(exc, Exception) and caused_by_os_error(exc):
            raise write_failed(target, exc) from exc
        raise
    try:
        fsync_dir(target.parent)
    except OSError as exc:
        raise write_failed(target, exc, "it may not survive a crash") from exc


def _discard(tmp: Path) -> None:
    """Remove a temporary file or folder that a failed write left (if it can be)."""
    with contextlib.suppress(OSError):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()


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
