"""One training process per run directory, enforced by an OS file lock.

``flock`` is released by the kernel when the holder dies, however it dies, so a crashed
run never leaves a stale lock. The lock file names the holder (pid, host, start time) so
that a second ``train`` can say who is in the way.

Example:

    >>> from keepbest.rundir.lock import RunLock
    >>> with RunLock(run_dir):            # doctest: +SKIP
    ...     train_in(run_dir)
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from keepbest.errors import RunBusyError
from keepbest.rundir.layout import LOCK_FILE


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunBusyError(
                f"{self.path.parent} is in use by another training process ({holder}); "
                "wait for it to finish or stop it, or train under another name"
            ) from None
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def holder_of(run_dir: Path) -> str | None:
    """Who holds the run's lock right now, or None if nobody does."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
    finally:
        os.close(fd)
    return None
