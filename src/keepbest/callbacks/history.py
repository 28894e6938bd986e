"""The callback that writes ``history.csv`` (see ``keepbest.rundir.history``) as training goes.

Place it after callbacks that add logs (``BestCheckpoint`` adds ``epoch_end_*`` and
``best_saved``); it adds ``seconds``, the epoch's wall time.

Example:

    >>> from keepbest.callbacks.history import HistoryCSV
    >>> model.fit(..., callbacks=[best, HistoryCSV(run_dir / "history.csv")])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

import keras

from keepbest.rundir.history import write_history


class HistoryCSV(keras.callbacks.Callback):
    """Append each epoch's logs to ``path``; place it after callbacks that add logs."""

    def __init__(self, path: Path, rows: list[dict[str, float]] | None = None, writes: bool = True):
        """``writes=False`` keeps the rows in memory only (a non-chief worker)."""
        super().__init__()
        self.path = Path(path)
        self.writes = writes
        self.rows = list(rows or [])
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        row["seconds"] = round(time.perf_counter() - self._started, 3)
        self.rows.append(row)
        self.rewrite()

    def rewrite(self) -> None:
        """Write all rows (also after a resume, which drops rows of unfinished epochs)."""
        if self.writes:
            write_history(self.path, self.rows)
