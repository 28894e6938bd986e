"""``history.csv`` as training goes: one row per evaluation point (see
``keepbest.rundir.history`` for the format and for reading it without TensorFlow).

Each row has ``epoch`` (1-based) and ``step`` (the global optimizer step), every value
logged at that point (Keras' running means, the measured ``epoch_end_*`` and ``val_*``),
``best_saved`` and ``seconds`` since the previous point. The whole file is rewritten
atomically at each row: it is small, and no reader ever sees half a row.

Example:

    >>> from keepbest.callbacks.history import HistoryCSV
    >>> history = HistoryCSV(run_dir / "history.csv")        # doctest: +SKIP
    >>> history.add({"epoch": 1, "step": 23, "val_loss": 0.3, "best_saved": 1.0})  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from keepbest.rundir.history import write_history


class HistoryCSV:
    """The rows so far, written to ``path`` after each one (unless ``writes`` is False:
    a non-chief worker keeps them in memory only)."""

    def __init__(self, path: Path, rows: list[dict[str, float]] | None = None, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.rows = list(rows or [])

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.rewrite()

    def rewrite(self) -> None:
        """Write all rows (also after a resume, which drops rows of unsaved points)."""
        if self.writes:
            write_history(self.path, self.rows)
