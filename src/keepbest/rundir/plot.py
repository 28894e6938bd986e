"""``keepbest plot``: a run's learning curves, one panel per metric, the best point marked.

The x axis is the epoch, or, for a run evaluated every N steps (``checkpoint.every_steps``),
the global optimizer step of each evaluation.

For a training-set metric both numbers keepbest logs are drawn: Keras' running mean
(``loss``, averaged over the epoch's batches, mostly *before* their updates) dashed, and
the end-of-epoch value (``epoch_end_loss``, measured on the weights the epoch ended with,
the ones a checkpoint saves) solid. Where they part is where a checkpoint chosen by the
running mean would keep the wrong weights. The star is the recorded best on the curve it
was judged on.

A panel whose values span decades (a loss falling from 20 to 0.05) is drawn on a log
scale, so the region around the best stays readable, with enough labeled ticks in plain
numbers to read values off (``log_tick_subs``: 0.1, 0.15, 0.2, 0.3, ... 2 for 0.07..2.3);
one that cannot be (values at or below zero) and is dominated by a few early values is
zoomed to the rest, and its title says how many points lie above.

matplotlib draws with its Agg backend (a PNG file, no display needed, no global state).

Example:

    >>> from keepbest.rundir.plot import plot_run
    >>> plot_run("runs/seed-case", "docs/plot-seed-case.png")   # doctest: +SKIP
    PosixPath('docs/plot-seed-case.png')
"""

from __future__ import annotations

import math
from pathlib import Path

from keepbest.atomic import atomic_path
from keepbest.errors import KeepbestError, NoBestCheckpointError
from keepbest.monitor import EPOCH_END_PREFIX
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import BestRecord, read_record_or_none

_NOT_METRICS = ("epoch", "step", "best_saved", "seconds")
_VALIDATION = "val_"
_DECADES_FOR_LOG = 20.0  # max / min of a panel's values from which it gets a log scale
_ZOOM_RATIO = 10.0  # zoom when the whole range is this many times the lower 80%'s


def plot_run(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Draw the run's history.csv to ``out`` (default: ``curves.png`` in the run dir, which
    is replaced); an existing ``out`` is replaced only with ``overwrite``, and never a file
    of a run (``keepbest.rundir.guard``)."""
    from keepbest.rundir.guard import check_output
    from keepbest.rundir.history import read_history

    run = RunDir(run_dir)
    if not (run.looks_like_run() or run.history_file.is_file()):
        raise NoBestCheckpointError(
            f"{run.path} is not a keepbest run dir (no {run.history_file.name}, "
            f"{run.config_file.name} or best checkpoint): give the run's folder, e.g. runs/NAME"
        )
    out = Path(out) if out is not None else run.plot_file
    check_output(out, "--out", overwrite=overwrite, own=run.plot_file)
    rows = read_history(run.history_file)
    if not rows:
        raise KeepbestError(
            f"{run.history_file} has no finished epoch yet; plot once an epoch has finished"
        )
    record = read_record_or_none(run.path)
    by_steps = _by_steps(run)
    figure = curves_figure(rows, record, run.path.name, by_steps=by_steps)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return out


def _by_steps(run: RunDir) -> bool:
    """Whether the run was evaluated every N steps (its config says so)."""
    try:
        return run.read_config().checkpoint.every_steps is not None
    except KeepbestError:  # no readable config: a plot by epoch is still a plot
        return False


def metric_names(rows: list[dict[str, float]]) -> list[str]:
    """The metrics in a history, loss first: ``val_loss`` and ``epoch_end_loss`` are loss."""
    columns = dict.fromkeys(key for row in rows for key in row if key not in _NOT_METRICS)
    names = dict.fromkeys(
        key.removeprefix(_VALIDATION).removeprefix(EPOCH_END_PREFIX) for key in columns
    )
    return sorted(names, key=lambda name: name != "loss")


def _series(
    rows: list[dict[str, float]], key: str, x: str = "epoch"
) -> tuple[list[int], list[float]]:
    points = [(row[x], row[key]) for row in rows if key in row and x in row]
    return [int(at) for at, _ in points], [value for _, value in points]


def _best_at(record: BestRecord, by_steps: bool) -> int:
    return record.step if by_steps and record.step is not None else record.epoch


def curves_figure(
    rows: list[dict[str, float]], record: BestRecord | None, name: str, by_steps: bool = False
):
    """A matplotlib Figure of ``rows`` (history.csv): a panel per metric, titled ``name``;
    ``by_steps``: the x axis is the global step of each evaluation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics = metric_names(rows)
    columns = min(2, len(metrics))
    lines = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(6.4 * columns, 4.2 * lines + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(lines, columns, index + 1)
        _draw_metric(axes, rows, metric, record, by_steps)
        scale = _fit_y_axis(axes, _values(rows, metric))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("step" if by_steps else "epoch")
        axes.set_title(metric + scale)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    title = f"{name}: no best checkpoint yet"
    if record is not None:
        verified = ", verified after reload" if record.verified else ""
        where = f"epoch {record.epoch}"
        if by_steps and record.step is not None:
            where = f"step {record.step} (epoch {record.epoch})"
        title = f"{name}: best {record.monitor} = {record.value:.4g} at {where}{verified}"
    figure.suptitle(title)
    return figure


def _values(rows: list[dict[str, float]], metric: str) -> list[float]:
    """Every finite value drawn in ``metric``'s panel."""
    keys = (metric, EPOCH_END_PREFIX + metric, _VALIDATION + metric)
    values = [row[key] for row in rows for key in keys if key in row]
    return [value for value in values if math.isfinite(value)]


def _fit_y_axis(axes, values: list[float]) -> str:
    """Log scale when the values span decades; else zoom past a few dominating outliers.
    Returns what the panel's title adds (e.g. `` (log scale)``)."""
    if len(values) < 3:
        return ""
    low, high = min(values), max(values)
    if low > 0 and high / low >= _DECADES_FOR_LOG:
        axes.set_yscale("log")
        _readable_log_ticks(axes, high / low)
        return " (log scale)"
    ordered = sorted(values)
    typical = ordered[int(0.8 * (len(ordered) - 1))]  # the 80th percentile
    if typical > low and high - low > _ZOOM_RATIO * (typical - low):
        margin = 0.1 * (typical - low)
        axes.set_ylim(low - margin, typical + margin)
        above = sum(value > typical + margin for value in values)
        return f" (zoomed: {above} points above)"
    return ""


def log_tick_subs(ratio: float) -> tuple[float, ...]:
    """Where a log axis whose values span ``ratio`` (max / min) gets labeled ticks, as
    multiples of each power of 10: several per decade when it spans few decades (matplotlib's
    default labels the powers of 10 only: two labels for 0.07..2.3), fewer when it spans many.

    >>> log_tick_subs(33), log_tick_subs(500), log_tick_subs(1e5), log_tick_subs(1e9)
    ((1.0, 1.5, 2.0, 3.0, 5.0, 7.0), (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))
    """
    decades = math.log10(ratio)
    if decades < 2:
        return (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    if decades < 3.5:
        return (1.0, 2.0, 5.0)
    return (1.0, 3.0) if decades < 6 else (1.0,)


def _readable_log_ticks(axes, ratio: float) -> None:
    """Labeled ticks at ``log_tick_subs`` in plain numbers (0.2, 0.5, 1, 2, not 10^-1),
    unlabeled minor ticks at the other multiples."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.yaxis.set_major_locator(LogLocator(base=10, subs=log_tick_subs(ratio), numticks=30))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _draw_metric(
    axes, rows: list[dict[str, float]], metric: str, record: BestRecord | None, by_steps: bool
):
    x = "step" if by_steps else "epoch"
    running = _series(rows, metric, x)
    end_of_epoch = _series(rows, EPOCH_END_PREFIX + metric, x)
    measured = "measured at each evaluation" if by_steps else "end of epoch"
    if end_of_epoch[0]:
        axes.plot(*running, "--", color="tab:blue", alpha=0.7, label="training: Keras running mean")
        axes.plot(*end_of_epoch, "-", color="tab:blue", label=f"training: {measured}")
    elif running[0]:
        axes.plot(*running, "-", color="tab:blue", label="training: Keras running mean")
    validation = _series(rows, _VALIDATION + metric, x)
    if validation[0]:
        axes.plot(*validation, "-", color="tab:orange", label="validation")
    if record is None:
        return
    at = _best_at(record, by_steps)
    axes.axvline(at, color="gray", linestyle=":", label=f"best {x} {at}")
    if record.monitor.removeprefix(_VALIDATION) != metric:
        return
    axes.plot(
        [at],
        [record.value],
        "*",
        color="crimson",
        markersize=14,
        label=f"keepbest's best: {record.value:.4g} at {x} {at}",
    )
    if record.monitor == metric and running[0] and end_of_epoch[0]:
        _mark_running_mean_pick(axes, running, end_of_epoch, at, record.mode, x)


def _mark_running_mean_pick(axes, running, end_of_epoch, best_at: int, mode: str, x: str) -> None:
    """Where a checkpoint judged by Keras' running mean would land, and what its weights
    really score (the value measured at that point)."""
    pick = min if mode == "min" else max
    epoch, value = pick(zip(*running, strict=True), key=lambda point: point[1])
    if epoch == best_at:
        return
    actual = dict(zip(*end_of_epoch, strict=True)).get(epoch)
    axes.plot(
        [epoch],
        [value],
        "o",
        color="black",
        fillstyle="none",
        markersize=10,
        label=f"Keras' running-mean pick: {x} {epoch}",
    )
    if actual is not None:
        axes.annotate(
            f"its weights: {actual:.4g}",
            xy=(epoch, actual),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
        axes.plot([epoch, epoch], [value, actual], color="black", linewidth=0.8, alpha=0.6)
