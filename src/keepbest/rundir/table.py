"""``keepbest summary``: one table over all the runs under a folder, best first.

Made for sweeps: the "swept" columns are the config keys whose values differ between the
runs (found by comparing their saved configs, so any set of runs works, not only those
of one ``keepbest sweep``). Reads records and statuses only; needs no TensorFlow.

Example:

    >>> from keepbest.rundir.table import summarize
    >>> rows = summarize("runs/digits-sweep")       # doctest: +SKIP
    >>> rows[0].name, rows[0].value, rows[0].status  # doctest: +SKIP
    ('learning_rate=0.003', 0.0712, 'done')
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from keepbest.config.diff import FREE_KEYS, flatten_config
from keepbest.errors import InputError
from keepbest.rundir.layout import CONFIG_FILE, RunDir
from keepbest.rundir.status import run_status


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    name: str  # the run dir, relative to the summarized folder
    swept: dict[str, Any]
    status: str
    monitor: str | None
    mode: str | None
    best_epoch: int | None
    value: float | None
    verified: bool
    detail: str


def find_runs(folder: Path) -> list[Path]:
    """Run dirs at any depth below ``folder`` (runs set aside by --restart excluded)."""
    return sorted(
        path.parent
        for path in folder.rglob(CONFIG_FILE)
        if not RunDir.is_set_aside(path.parent) and RunDir(path.parent).has_run()
    )


def summarize(folder: str | Path) -> list[SummaryRow]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"RUNS_DIR: folder not found: {folder}")
    runs = find_runs(folder)
    configs = {run: flatten_config(RunDir(run).read_config()) for run in runs}
    keys = sorted({key for flat in configs.values() for key in flat} - set(FREE_KEYS))
    swept = [k for k in keys if len({repr(flat.get(k)) for flat in configs.values()}) > 1]
    rows = []
    for run in runs:
        status = run_status(run)
        record = status.record
        rows.append(
            SummaryRow(
                name=str(run.relative_to(folder)) if run != folder else run.name,
                swept={key: configs[run].get(key) for key in swept},
                status=status.state,
                monitor=record.monitor if record else None,
                mode=record.mode if record else None,
                best_epoch=record.epoch if record else None,
                value=record.value if record else None,
                verified=bool(record and record.verified),
                detail=status.detail,
            )
        )
    return sorted(rows, key=_rank)


def _rank(row: SummaryRow) -> tuple:
    """Best first: by value in the monitor's direction; runs without a best last."""
    if row.value is None or not math.isfinite(row.value):
        return (1, 0.0, row.name)
    return (0, row.value if row.mode == "min" else -row.value, row.name)


def format_table(rows: list[SummaryRow]) -> str:
    if not rows:
        return "no runs found"
    swept = list(rows[0].swept)
    header = ["run", *swept, "best epoch", "monitor", "value", "verified", "status"]
    body = [
        [
            row.name,
            *(_cell(row.swept[key]) for key in swept),
            _cell(row.best_epoch),
            row.monitor or "-",
            _cell(row.value),
            "yes" if row.verified else "no",
            row.status,
        ]
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
