"""Issue 11: what keeping the best and a resume state costs, side by side with Keras' own
callbacks on the same model and data.

Each side trains the same model on the same batches for the same epochs, in a fresh
process, and the sides alternate:

- ``keepbest.train``: the best checkpoint (durable: fsync, sha256, atomic rename) and
  resume states on the default cadence (``resume.max_overhead: 0.05``: a state only once
  the time since the last one is 20x what that one took);
- ``ModelCheckpoint(save_best_only=True, save_weights_only=True)`` alone: the best, not
  durable, and nothing to resume from;
- ``ModelCheckpoint`` + ``BackupAndRestore``: Keras' resume, a full state at every epoch
  end;
- ``OrbaxCheckpoint(save_best_only=True, save_on_background=True)`` (Keras 3.15): the
  best model and optimizer state, written in the background. It needs orbax-checkpoint
  (and so jax), which keepbest does not depend on: this side runs only if orbax is
  importable here or ``KEEPBEST_BENCH_ORBAX_PYTHON`` names a Python that has it (a bench
  extra, e.g. a venv made with ``--system-site-packages`` plus ``pip install
  orbax-checkpoint``);
- a bare ``model.fit`` (nothing saved), for reference;
- for 14M only, ``keepbest.train`` as it was before issue 22's adaptive cadence (no
  record of attempts in ``resume/attempts.json``, so no failures seen: the budget alone).
  A fresh run has seen no failure, so its decisions must be the same: the same states,
  and the same time but for the record's two small writes (at the start and the end).

The time compared is the steady state: from the start of epoch 2 (epoch 1 traces the
step functions, and keepbest writes its first resume state there, after one step, to
learn what a state costs) until ``fit`` returns (Orbax's wait for its background saves
included). keepbest's last state, written after ``fit`` at the end of training, is
timed on its own and reported beside the row.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import Row, median, run_child, scratch, seconds, within
from workloads import (
    WORKLOADS,
    bare_fit,
    bare_setup,
    epoch_clock,
    keepbest_config,
    patched,
    stamped,
)

LIMIT = 1.10  # keepbest / ModelCheckpoint alone
LEARNING_RATE = 0.05
ORBAX_PYTHON = "KEEPBEST_BENCH_ORBAX_PYTHON"
SIDES = ("keepbest", "modelcheckpoint", "backup", "orbax", "bare")
BEFORE = "before-attempts"  # keepbest without the record of attempts (issue 22)
EXTRA_SIDES = {"14M": (BEFORE,)}


def fit_and_time(clock, ends: list[float]):
    """A ``patched`` wrapper for ``keras.Model.fit``: ``clock`` first among the callbacks,
    and the moment ``fit`` returns appended to ``ends``."""

    def wrap(original):
        @functools.wraps(original)
        def fit(self, *args, callbacks=None, **kwargs):
            try:
                return original(self, *args, callbacks=[clock, *(callbacks or [])], **kwargs)
            finally:
                ends.append(time.perf_counter())

        return fit

    return wrap


def run_side(workload: str, side: str, epochs: int, root: str) -> dict:
    """Child: train one side; the steady-state seconds (epoch 2 to the end of ``fit``) and
    what was written in them."""
    import keras

    import keepbest
    import keepbest.checkpoint
    from keepbest.rundir.resume_store import ResumeStore

    load = WORKLOADS[workload]
    config = keepbest_config(load, Path(root), epochs, LEARNING_RATE)
    clock = epoch_clock()
    ends: list[float] = []
    best: list[tuple[float, float]] = []
    states: list[tuple[float, float]] = []
    record: list[tuple[float, float]] = []  # the record of attempts' writes (issue 22)
    with patched(keras.Model, "fit", fit_and_time(clock, ends)):
        if side in ("keepbest", BEFORE):
            with (
                patched(keepbest.checkpoint, "commit_best", stamped(best)),
                patched(ResumeStore, "save", stamped(states)),
                _without_attempts() if side == BEFORE else _timed_attempts(record),
            ):
                keepbest.train(config)
        else:
            _, pipes, model = bare_setup(config)
            folder = Path(root)
            best_file = str(folder / "best.weights.h5")
            callbacks = []
            if side in ("modelcheckpoint", "backup"):
                callbacks.append(
                    keras.callbacks.ModelCheckpoint(
                        best_file, monitor="val_loss", save_best_only=True, save_weights_only=True
                    )
                )
            if side == "backup":
                callbacks.append(keras.callbacks.BackupAndRestore(str(folder / "backup")))
            if side == "orbax":
                callbacks.append(
                    keras.callbacks.OrbaxCheckpoint(
                        str(folder / "orbax"),
                        monitor="val_loss",
                        save_best_only=True,
                        save_on_background=True,
                    )
                )

            backup_dir = folder / "backup"

            def kind(args, kwargs) -> str:
                path = Path(kwargs.get("filepath", args[1] if len(args) > 1 else ""))
                return "state" if backup_dir in path.parents else "best"

            saves: list[tuple[str, float, float]] = []

            def sorted_saves(original):
                @functools.wraps(original)
                def save(*args, **kwargs):
                    started = time.perf_counter()
                    try:
                        return original(*args, **kwargs)
                    finally:
                        saves.append((kind(args, kwargs), started, time.perf_counter() - started))

                return save

            owner, name = keras.Model, "save_weights"
            if side == "orbax":
                owner, name = keras.callbacks.OrbaxCheckpoint, "_save_checkpoint"
            with patched(owner, name, sorted_saves):
                bare_fit(model, pipes, epochs, callbacks)
            best = [(s, d) for k, s, d in saves if k == "best"]
            states = [(s, d) for k, s, d in saves if k == "state"]
    begin, end = clock.starts[1][0], ends[0]

    def inside(calls):
        return [d for s, d in calls if begin <= s < end]

    return {
        "seconds": end - begin,
        "best": inside(best),
        "states": inside(states),
        "last_state": [d for s, d in states if s >= end],
        "first_state": [d for s, d in states if s < begin],
        "record": [d for _, d in record],
    }


@contextlib.contextmanager
def _without_attempts():
    """keepbest as before issue 22: no attempt recorded, so no failure ever seen."""
    from keepbest.rundir.resume_store import ResumeStore

    def nothing_seen(original):
        return lambda self, from_step: []

    def no_end(original):
        return lambda self, reached_step, how: None

    with (
        patched(ResumeStore, "begin_attempt", nothing_seen),
        patched(ResumeStore, "end_attempt", no_end),
    ):
        yield


@contextlib.contextmanager
def _timed_attempts(record: list[tuple[float, float]]):
    """Time the record of attempts' two writes (at the start and at the end of fit)."""
    from keepbest.rundir.resume_store import ResumeStore

    with (
        patched(ResumeStore, "begin_attempt", stamped(record)),
        patched(ResumeStore, "end_attempt", stamped(record)),
    ):
        yield


def orbax_python() -> str | None:
    """A Python that can run the Orbax side: this one if it has orbax, else the one
    ``KEEPBEST_BENCH_ORBAX_PYTHON`` names (if it has orbax)."""
    if importlib.util.find_spec("orbax") is not None:
        return sys.executable
    other = os.environ.get(ORBAX_PYTHON)
    if other:
        check = subprocess.run(
            [other, "-c", "import orbax.checkpoint"], capture_output=True, check=False
        )
        if check.returncode == 0:
            return other
    return None


PLANS = {"14M": 24, "100M": 10}  # epochs per run


def measure(quick: bool) -> list[Row]:
    reps = 1 if quick else 2
    orbax = orbax_python()
    sides = [side for side in SIDES if side != "orbax" or orbax]
    rows: list[Row] = []
    for workload, epochs in PLANS.items():
        these = sides + list(EXTRA_SIDES.get(workload, ()))
        found: dict[str, list[dict]] = {side: [] for side in these}
        for rep in range(reps):
            for side in these if rep % 2 == 0 else these[::-1]:
                root = scratch(f"cadence-{workload}")
                try:
                    found[side].append(
                        run_child(
                            "cadence:run_side",
                            python=orbax if side == "orbax" else None,
                            workload=workload,
                            side=side,
                            epochs=epochs,
                            root=str(root),
                        )
                    )
                finally:
                    shutil.rmtree(root, ignore_errors=True)
        rows += _rows(workload, epochs, found, orbax is not None)
    return rows


def _rows(workload: str, epochs: int, found: dict[str, list[dict]], orbax: bool) -> list[Row]:
    def total(side: str) -> float:
        return median([run["seconds"] for run in found[side]])

    def count(side: str, key: str) -> int:
        return round(median([len(run[key]) for run in found[side]]))

    def each(side: str, key: str) -> str:
        values = [d for run in found[side] for d in run[key]]
        return seconds(median(values)) if values else "-"

    kept, alone, backup = total("keepbest"), total("modelcheckpoint"), total("backup")
    window = f"epochs 2-{epochs}"
    ours = (
        f"keepbest: {count('keepbest', 'best')} bests of {each('keepbest', 'best')}, "
        f"{count('keepbest', 'states')} resume states of {each('keepbest', 'states')}; "
        f"its first state (epoch 1) {each('keepbest', 'first_state')} and last (after fit) "
        f"{each('keepbest', 'last_state')} are outside"
    )
    rows = [
        Row(
            "11",
            f"{workload}: training time of {window} ({ours}), vs ModelCheckpoint(save_best_only) "
            f"alone ({count('modelcheckpoint', 'best')} bests of "
            f"{each('modelcheckpoint', 'best')}; bare fit: {seconds(total('bare'))})",
            seconds(alone),
            seconds(kept),
            kept / alone,
            f"<= {LIMIT}",
            within(kept / alone, LIMIT),
        ),
        Row(
            "11",
            f"{workload}: the same, vs ModelCheckpoint + BackupAndRestore (a state every "
            f"epoch: {count('backup', 'states')} of {each('backup', 'states')})",
            seconds(backup),
            seconds(kept),
            kept / backup,
            "< 1.00",
            kept < backup,
        ),
    ]
    if found.get(BEFORE):
        rows.append(unchanged_row(workload, window, found))
    if orbax:
        rows.append(
            Row(
                "11",
                f"{workload}: the same, vs OrbaxCheckpoint(save_best_only, save_on_background) "
                f"(model + optimizer; {count('orbax', 'best')} saves, blocking "
                f"{each('orbax', 'best')} each)",
                seconds(total("orbax")),
                seconds(kept),
                kept / total("orbax"),
            )
        )
    else:
        rows.append(
            Row(
                "11",
                f"{workload}: OrbaxCheckpoint not measured: orbax-checkpoint is not importable "
                f"here (set {ORBAX_PYTHON} to a Python that has it)",
                "",
                "",
            )
        )
    return rows


def unchanged_row(workload: str, window: str, found: dict[str, list[dict]]) -> Row:
    """Issue 22: the adaptive cadence with no failure seen vs keepbest before it."""
    now = median([run["seconds"] for run in found["keepbest"]])
    before = median([run["seconds"] for run in found[BEFORE]])

    def states(side: str) -> str:
        return "/".join(str(len(run["states"])) for run in found[side])

    record = median([sum(run["record"]) for run in found["keepbest"]])
    return Row(
        "22",
        f"{workload}: training time of {window} with the record of attempts and the "
        "adaptive cadence (Young/Daly once failures are seen; a fresh run has seen none, "
        "so the budget decides as before), vs keepbest before it (resume states per run: "
        f"{states('keepbest')} vs {states(BEFORE)}; the record's two writes: "
        f"{seconds(record)} per run)",
        seconds(before),
        seconds(now),
        now / before,
    )
