"""``history.csv``: one row per completed epoch, rewritten atomically as training goes.

Columns are ``epoch`` (1-based), every logged value (Keras' running means such as
``loss``, the end-of-epoch values ``epoch_end_*``, ``val_*``), ``best_saved`` and
``seconds``. The whole file is rewritten at each epoch end: it is small, and a reader
never sees half a row.

Example:

    >>> from keepbest.history import HistoryCSV, read_history
    >>> model.fit(..., callbacks=[HistoryCSV(run_dir / "history.csv")])   # doctest: +SKIP
    >>> read_history(run_dir / "history.csv")[-1]["val_loss"]               # doctest: +SKIP
    0.0831
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import keras

from keepbest.atomic import write_text_atomic


def rows_to_csv(rows: list[dict[str, float]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a history.csv, numbers as floats (``epoch`` as int)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
        for row in rows
    ]


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
            write_text_atomic(self.path, rows_to_csv(self.rows))
