"""Resume states as training goes, on a cadence that bounds what they cost.

A resume state (``keepbest.rundir.resume_store``) lets a killed run continue bit for bit;
writing one costs time (about 1.3 s for a 100M-parameter model). ``Cadence`` decides when
the next one is due, from the steps and the wall time since the last one and what that
one cost:

- ``max_overhead`` (default 0.05): a state is written only once the time since the last
  one is at least (the last one's write time / max_overhead), so state writes take at
  most about 5% of the run, whatever the model and the epoch length;
- ``every_steps`` / ``every_seconds``: a fixed cadence; a state is wanted once either is
  reached. Combined with ``max_overhead`` the budget still applies (it may postpone a
  wanted state); set ``max_overhead: null`` for the fixed cadence alone.

Whatever the cadence, a state is always written on a stop signal, before an early stop,
and at the end of training. A ``kill -9`` repeats at most the training since the last
state.

The user's callbacks in the same ``fit`` (``train.callbacks``) keep counters too
(``ReduceLROnPlateau``'s and ``EarlyStopping``'s wait and best): ``callback_states``
takes the counters Keras' own callbacks keep (``COUNTERS``) into the state, and
``restore_callback_states`` puts them back once their ``on_train_begin`` has reset them.
A callback of one's own with other state gives ``get_state()`` (a JSON-able dict) and
``set_state(state)`` methods, and is asked instead. Settings are never restored: Keras'
callbacks rewrite some of theirs when training begins (the sign of ``min_delta``).

Example:

    >>> from keepbest.callbacks.resume import Cadence
    >>> budget = Cadence(max_overhead=0.05)
    >>> budget.due(steps_since=10, seconds_since=10.0, last_cost=1.0)  # 1 s / 0.05 = 20 s
    False
    >>> budget.due(steps_since=25, seconds_since=20.0, last_cost=1.0)
    True
    >>> Cadence(every_steps=100, max_overhead=None).due(100, 0.1, last_cost=5.0)
    True
    >>> class Patient:
    ...     def __init__(self): self.wait, self.best, self.min_delta = 0, float("inf"), 1
    >>> before, after = Patient(), Patient()
    >>> before.wait, before.best, before.min_delta = 2, 0.31, -1
    >>> restore_callback_states([after], callback_states([before]))
    >>> after.wait, after.best, after.min_delta
    (2, 0.31, 1)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from keepbest.callbacks.history import HistoryCSV
from keepbest.rundir.resume_store import BestSoFar, Progress, ResumeStore

_PLAIN = (bool, int, float, str, type(None))
# What Keras' callbacks count with between epochs (ReduceLROnPlateau, EarlyStopping).
COUNTERS = ("wait", "best", "cooldown_counter", "stopped_epoch", "best_epoch")


def callback_states(callbacks: Sequence[Any]) -> list[dict[str, Any]]:
    """Each callback's state: ``get_state()`` if it has one, else its ``COUNTERS``."""
    states = []
    for callback in callbacks:
        if callable(getattr(callback, "get_state", None)):
            state = dict(callback.get_state())
        else:
            state = {
                key: value
                for key, value in vars(callback).items()
                if key in COUNTERS and isinstance(value, _PLAIN)
            }
        states.append({"class": type(callback).__name__, "state": state})
    return states


def restore_callback_states(callbacks: Sequence[Any], states: Sequence[dict[str, Any]]) -> None:
    """Put ``callback_states``' values back, callback by callback (by position, the class
    checked: the config's list cannot change on a resume, ``training_differences``)."""
    for callback, saved in zip(callbacks, states, strict=False):
        if saved.get("class") != type(callback).__name__:
            continue
        if callable(getattr(callback, "set_state", None)):
            callback.set_state(dict(saved["state"]))
            continue
        for key, value in saved["state"].items():
            setattr(callback, key, value)


@dataclasses.dataclass(frozen=True)
class Cadence:
    every_steps: int | None = None
    every_seconds: float | None = None
    max_overhead: float | None = 0.05

    def due(self, steps_since: int, seconds_since: float, last_cost: float | None) -> bool:
        """Whether a state is due now: ``steps_since`` and ``seconds_since`` the last one,
        which took ``last_cost`` seconds to write (None: no state written yet, or its cost
        is unknown)."""
        if steps_since <= 0:
            return False
        fixed = self.every_steps is not None or self.every_seconds is not None
        wanted = not fixed or (
            (self.every_steps is not None and steps_since >= self.every_steps)
            or (self.every_seconds is not None and seconds_since >= self.every_seconds)
        )
        if not wanted:
            return False
        if self.max_overhead is None or last_cost is None:
            return True
        return seconds_since >= last_cost / self.max_overhead


class ResumeWriter:
    """Writes resume states to ``store`` when ``due`` says so (or when told to), timing
    each write for the cadence. With ``writes=False`` (a non-chief worker) it writes
    nothing and is never due."""

    def __init__(
        self,
        store: ResumeStore,
        history: HistoryCSV,
        cadence: Cadence,
        start_step: int = 0,
        last_cost: float | None = None,
        writes: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.history = history
        self.cadence = cadence
        self.writes = writes
        self.clock = clock
        self.last_step = start_step
        self.last_cost = last_cost
        self.last_end = clock()
        self.notes: list[str] = []  # carried in every state (e.g. inexact resumes)
        self.callbacks: Sequence[Any] = ()  # the user's, whose states each state keeps

    def due(self, step: int) -> bool:
        if not self.writes:
            return False
        return self.cadence.due(step - self.last_step, self.clock() - self.last_end, self.last_cost)

    def save(
        self,
        model,
        progress: Progress,
        step: int,
        stop_kind: str | None = None,
        next_batch: str | None = None,
        best: BestSoFar | None = None,
        metrics: dict | None = None,
        started: float | None = None,
        kept: dict | None = None,
    ) -> None:
        """Write a state now (the chief only); ``next_batch`` fingerprints the batch a run
        resumed from it should see first; ``started``: when the work for this state began
        (reading metrics, fingerprinting), so that the cadence budgets all of it."""
        if not self.writes:
            return
        started = self.clock() if started is None else started
        self.store.save(
            model,
            progress,
            global_step=step,
            history=self.history.rows,
            stop_kind=stop_kind,
            next_batch=next_batch,
            notes=self.notes,
            best=best,
            metrics=metrics,
            callbacks=callback_states(self.callbacks),
            kept=kept,
        )
        self.last_end = self.clock()
        self.last_cost = self.last_end - started
        self.last_step = step
