"""``history.csv``: one row per evaluation point (each epoch end, or every N steps).
Reading it needs no TensorFlow.

Columns are ``epoch`` (1-based) and ``step`` (the global optimizer step), every logged
value (Keras' running means such as ``loss``, the measured values ``epoch_end_*`` and
``val_*``), ``best_saved`` and ``seconds`` since the previous point (runs trained before
keepbest had ``every_steps`` have no ``step`` column).
``keepbest.callbacks.history.HistoryCSV`` writes it during training.

Example:

    >>> from keepbest.rundir.history import read_history
    >>> read_history(run_dir / "history.csv")[-1]["val_loss"]   # doctest: +SKIP
    0.0831
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from keepbest.atomic import write_text_atomic
from keepbest.errors import CorruptFileError

_INTEGERS = ("epoch", "step")


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
    """The rows of a history.csv, numbers as floats (``epoch`` and ``step`` as ints)."""
    if not Path(path).is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [
            {
                k: (int(v) if k in _INTEGERS else float(v))
                for k, v in row.items()
                if v not in ("", None)
            }
            for row in rows
        ]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as exc:
        raise CorruptFileError(
            f"{path} is not a valid history ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
            "restore it from a backup: the resume state holds the same rows"
        ) from None


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """Rewrite the whole file atomically: it is small, and no reader sees half a row."""
    write_text_atomic(path, rows_to_csv(rows))
