"""``keepbest summary``: the runs under a folder, ranked best first within each monitor.

Made for sweeps: the "swept" columns are the config keys whose values differ between the
runs (found by comparing their saved configs, so any set of runs works, not only those
of one ``keepbest sweep``). Runs judged by different monitors or modes (``val_loss``
(min) and ``val_accuracy`` (max)) are never ranked against each other: each monitor gets
its own table, best first. Paths are shown relative to the summarized folder. By default
a table fits the given width: the swept keys that vary within it, by their last name
(``learning_rate``), long values shortened, as many columns as fit (the narrowest first),
and the ones that do not fit listed below it; ``width=None`` (``--wide``) shows every
swept key in full. Reads records and statuses only; needs no TensorFlow.

Example:

    >>> from keepbest.rundir.table import SummaryRow, format_table
    >>> rows = [SummaryRow("lr=0.1", {"optimizer.learning_rate": 0.1}, "done", "val_loss",
    ...                    "min", 4, 0.25, True, "done")]
    >>> print(format_table(rows, width=None))
    val_loss (min), best first:
    run     optimizer.learning_rate  best epoch  value  verified  status
    lr=0.1  0.1                      4           0.25   yes       done
"""

from __future__ import annotations

import dataclasses
import math
import os
from itertools import groupby
from pathlib import Path
from typing import Any

from keepbest.config.diff import FREE_KEYS, flatten_config
from keepbest.errors import InputError, KeepbestError
from keepbest.rundir.layout import CONFIG_FILE, RunDir
from keepbest.rundir.status import run_status

_MAX_CELL = 24  # characters of a swept value or a run's name in the narrow table
_GAP = "  "


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    name: str  # the run dir, relative to the summarized folder
    swept: dict[str, Any]  # paths relative to the summarized folder
    status: str
    monitor: str | None  # the best's, or the configured one if there is no best yet
    mode: str | None  # min or max (None: not known before the first best)
    best_epoch: int | None
    value: float | None
    verified: bool
    detail: str
    best_step: int | None = None  # the global step of the best (step-evaluated runs)


def find_runs(folder: Path) -> list[Path]:
    """Run dirs at any depth below ``folder`` (runs set aside by --restart excluded)."""
    return sorted(
        path.parent
        for path in folder.rglob(CONFIG_FILE)
        if not RunDir.is_set_aside(path.parent) and RunDir(path.parent).has_run()
    )


def _relative(value: Any, folder: Path) -> Any:
    """An absolute path (a config's data.path, ...) relative to the summarized folder."""
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return os.path.relpath(value, folder)
        except ValueError:  # another drive (Windows)
            return value
    return value


def summarize(folder: str | Path) -> list[SummaryRow]:
    """Every run under ``folder``: grouped by monitor and mode, best first in each."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"RUNS_DIR: folder not found: {folder}")
    runs = find_runs(folder)
    configs, monitors, by_steps = {}, {}, {}
    for run in runs:
        try:
            cfg = RunDir(run).read_config()
        except KeepbestError:  # its status says what is wrong
            configs[run], monitors[run] = {}, (None, None)
            continue
        configs[run] = flatten_config(cfg)
        by_steps[run] = cfg.checkpoint.every_steps is not None
        mode = cfg.checkpoint.mode
        monitors[run] = (cfg.checkpoint.monitor, None if mode == "auto" else mode)
    keys = sorted({key for flat in configs.values() for key in flat} - set(FREE_KEYS))
    swept = [k for k in keys if len({repr(flat.get(k)) for flat in configs.values()}) > 1]
    absolute = folder.resolve()
    rows = []
    for run in runs:
        status = run_status(run)
        record = status.record
        monitor, mode = (record.monitor, record.mode) if record else monitors[run]
        rows.append(
            SummaryRow(
                name=str(run.relative_to(folder)) if run != folder else run.name,
                swept={key: _relative(configs[run].get(key), absolute) for key in swept},
                status=status.state,
                monitor=monitor,
                mode=mode,
                best_epoch=record.epoch if record else None,
                value=record.value if record else None,
                best_step=record.step if record and by_steps.get(run) else None,
                verified=bool(record and record.verified),
                detail=status.detail,
            )
        )
    return _ranked(rows)


def _ranked(rows: list[SummaryRow]) -> list[SummaryRow]:
    """Rows by monitor group (the group with most runs first), best first within each.

    A run without a best (its mode still ``auto``) joins the group of its monitor when
    there is exactly one."""
    modes: dict[str | None, set] = {}
    for row in rows:
        if row.mode is not None:
            modes.setdefault(row.monitor, set()).add(row.mode)
    resolved = []
    for row in rows:
        known = modes.get(row.monitor, set())
        if row.mode is None and len(known) == 1:
            row = dataclasses.replace(row, mode=next(iter(known)))
        resolved.append(row)
    sizes: dict[tuple, int] = {}
    for row in resolved:
        sizes[group_of(row)] = sizes.get(group_of(row), 0) + 1
    order = sorted(sizes, key=lambda group: (-sizes[group], str(group)))
    return sorted(resolved, key=lambda row: (order.index(group_of(row)), *_rank(row)))


def group_of(row: SummaryRow) -> tuple[str | None, str | None]:
    """What ranks comparably: the monitor and its mode."""
    return (row.monitor, row.mode)


def _rank(row: SummaryRow) -> tuple:
    """Best first: by value in the monitor's direction; runs without a best last."""
    if row.value is None or not math.isfinite(row.value) or row.mode is None:
        return (1, 0.0, row.name)
    return (0, row.value if row.mode == "min" else -row.value, row.name)


def _heading(group: tuple[str | None, str | None]) -> str:
    monitor, mode = group
    if monitor is None:
        return "runs whose config cannot be read:"
    if mode is None:
        return f"{monitor} (mode not known yet), no best yet:"
    return f"{monitor} ({mode}), best first:"


def format_table(rows: list[SummaryRow], width: int | None = 80) -> str:
    """The rows as text, one table per monitor group; ``width=None`` shows everything."""
    if not rows:
        return "no runs found"
    tables = []
    for group, members in groupby(rows, key=group_of):
        tables.append(_heading(group) + "\n" + _table(list(members), width))
    return "\n\n".join(tables)


def _shorten(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, keeping its end (a path's file name)."""
    if limit is None or len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :]


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part (``learning_rate``), unless that is ambiguous."""
    last = [key.rpartition(".")[2] for key in keys]
    return {
        key: name if last.count(name) == 1 else key for key, name in zip(keys, last, strict=True)
    }


def _table(rows: list[SummaryRow], width: int | None) -> str:
    """One group's table. Narrow (``width``): the swept keys that vary within the group,
    by short names, as many as fit, long values shortened; wide: every swept key."""
    limit = None if width is None else _MAX_CELL
    fixed_head = ["run", "best epoch", "value", "verified", "status"]
    if any(row.best_step is not None for row in rows):
        fixed_head[1] = "best at"
    fixed = [
        [
            _shorten(row.name, None if limit is None else 2 * limit),
            _cell(row.best_epoch) if row.best_step is None else f"step {row.best_step}",
            _cell(row.value),
            "yes" if row.verified else "no",
            row.status,
        ]
        for row in rows
    ]
    keys = list(rows[0].swept)
    if width is not None:
        keys = [key for key in keys if len({repr(row.swept[key]) for row in rows}) > 1]
    names = _short_names(keys) if width is not None else {key: key for key in keys}
    columns = {
        key: [names[key], *(_shorten(_cell(row.swept[key]), limit) for row in rows)] for key in keys
    }
    widths = [max(len(line[i]) for line in [fixed_head, *fixed]) for i in range(len(fixed_head))]
    used = sum(widths) + len(_GAP) * (len(widths) - 1)
    shown, hidden = [], []
    column_widths = {key: max(len(cell) for cell in cells) for key, cells in columns.items()}
    for key in sorted(columns, key=column_widths.get):  # as many columns as fit
        if width is None or used + len(_GAP) + column_widths[key] <= width:
            shown.append(key)
            used += len(_GAP) + column_widths[key]
        else:
            hidden.append(key)
    shown = [key for key in columns if key in shown]  # in the keys' order
    header = [fixed_head[0], *(names[key] for key in shown), *fixed_head[1:]]
    body = [
        [line[0], *(columns[key][i + 1] for key in shown), *line[1:]]
        for i, line in enumerate(fixed)
    ]
    all_widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    text = "\n".join(
        _GAP.join(cell.ljust(w) for cell, w in zip(line, all_widths, strict=True)).rstrip()
        for line in [header, *body]
    )
    if hidden:
        count = f"{len(hidden)} more swept key" + ("s" if len(hidden) > 1 else "")
        note = f"(--wide also shows {count}: {', '.join(hidden)})"
        text += "\n" + (note if len(note) <= width else note[: width - 2] + "…)")
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
