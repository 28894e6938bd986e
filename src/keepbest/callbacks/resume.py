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

Frequent failures (spot nodes, a crash loop) shorten the interval, so that the run
progresses however short its attempts live. Each attempt is recorded in the run dir
(``rundir.resume_store.AttemptLog``); an attempt that ended without a clean end (a
finish, or a stop signal with its state saved) died, and ``Failures.observed`` reads,
from the last ``WINDOW`` earlier attempts, the mean time between failures M (the time
they lasted over the number that died; an attempt lasts until the next one starts, its
restart's start-up included, so M errs long) and how many of them died without progress
(no newer state than they started from), k. With failures seen, a state is also due once
the time since the last one (or since this attempt began) reaches

    interval = max(min(sqrt(2 * C * M), M / 2) / 2**k, C)

where C is what the last state took to write: Young's first-order optimum (Daly's for
C << M), at most half the time between failures, halved for every recent attempt that
died without progress, and never shorter than C: at least as much training as writing
states (they take at most half the time), whatever ``resume/attempts.json`` says (a
forged or damaged one whose times make M near 0 cannot make a state due at every step).
So the interval is never longer than today's (a state is due as soon as either rule
says so), and as long as one step and twice a state's write time fit in an attempt's
life, attempts keep progressing: each attempt that dies without progress halves the
next one's interval, down to C, and the halving lasts while it is among the last
``WINDOW``. With the budget, sqrt(2 C M) is the shorter one once
M < C / (2 * max_overhead**2) (200 C by default): the state writes then take more than
``max_overhead``, sqrt(C / (2 M)) of the time, which is less than failures would cost.
With no failure seen, the decisions are today's exactly.

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

Attempts that died every 10 s, a state taking 1 s: sqrt(2 * 1 s * 10 s) = 4.47 s, not
the budget's 20 s; died every 7 s, two without progress: a quarter of
min(sqrt(2 * C * 7 s), 7 s / 2), 0.66 s for a state of 0.5 s; for a state of 1 s a quarter
of 3.5 s is less than the state's own time, so 1 s (also when the record says that
failures came at once: M = 0):

    >>> seen = Failures.observed([(10.0, True, True), (10.0, True, True)])
    >>> seen
    Failures(mtbf=10.0, without_progress=0)
    >>> round(seen.interval(last_cost=1.0), 2)
    4.47
    >>> Cadence(failures=seen).due(steps_since=10, seconds_since=4.5, last_cost=1.0)
    True
    >>> stuck = Failures.observed([(10.0, True, True), (6.0, True, False), (5.0, True, False)])
    >>> stuck.without_progress, round(stuck.mtbf, 2), round(stuck.interval(last_cost=0.5), 2)
    (2, 7.0, 0.66)
    >>> stuck.interval(last_cost=1.0), Failures(mtbf=0.0).interval(last_cost=1.0)
    (1.0, 1.0)
    >>> Failures.observed([(50.0, False, True), (80.0, False, True)])  # clean stops only
    Failures(mtbf=None, without_progress=0)
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
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from keepbest.callbacks.history import HistoryCSV
from keepbest.rundir.resume_store import BestSoFar, Progress, ResumeStore

log = logging.getLogger(__name__)
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


WINDOW = 10  # the earlier attempts whose failures the cadence averages


@dataclasses.dataclass(frozen=True)
class Failures:
    """What the run's latest attempts say of failures: the mean time between them in
    seconds (None: none seen), and how many of them died without progress."""

    mtbf: float | None = None
    without_progress: int = 0

    @classmethod
    def observed(cls, lives: Sequence[tuple[float, bool, bool]], window: int = WINDOW) -> Failures:
        """From the earlier attempts, oldest first, each (seconds it lasted, whether it
        died, whether it progressed): ``AttemptLog.lives``."""
        recent = list(lives)[-window:]
        died = sum(1 for _, dead, _ in recent if dead)
        mtbf = sum(seconds for seconds, _, _ in recent) / died if died else None
        stuck = sum(1 for _, dead, progressed in recent if dead and not progressed)
        return cls(mtbf, stuck)

    def interval(self, last_cost: float | None) -> float | None:
        """The longest time between states these failures allow (the module's rule), or
        None with no failure seen; never shorter than ``last_cost`` itself; an unknown
        cost counts as 0 (a state at once)."""
        if self.mtbf is None:
            return None
        cost = last_cost or 0.0
        young = math.sqrt(2.0 * cost * self.mtbf)
        return max(min(young, self.mtbf / 2.0) / 2.0**self.without_progress, cost)


@dataclasses.dataclass(frozen=True)
class Cadence:
    every_steps: int | None = None
    every_seconds: float | None = None
    max_overhead: float | None = 0.05
    failures: Failures = Failures()  # the run's earlier attempts (none: today's cadence)

    def due(self, steps_since: int, seconds_since: float, last_cost: float | None) -> bool:
        """Whether a state is due now: ``steps_since`` and ``seconds_since`` the last one,
        which took ``last_cost`` seconds to write (None: no state written yet, or its cost
        is unknown)."""
        if steps_since <= 0:
            return False
        interval = self.failures.interval(last_cost)
        if interval is not None and seconds_since >= interval:
            return True  # failures are frequent: Young/Daly's interval (module docstring)
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
        self._attempt = False  # an attempt begun (``begin_attempt``) and not yet ended

    def begin_attempt(self) -> None:
        """Record this attempt in the run dir (the chief) and let the earlier attempts'
        failures shape the cadence (``Failures``)."""
        if not self.writes:
            return
        failures = Failures.observed(self.store.begin_attempt(self.last_step))
        self.cadence = dataclasses.replace(self.cadence, failures=failures)
        self._attempt = True
        interval = failures.interval(self.last_cost)
        if interval is not None:
            stuck = failures.without_progress
            row = f", {stuck} of them without progress" if stuck else ""
            log.info(
                "earlier attempts died every %.3g s on average%s: a resume state at least "
                "every %.3g s",
                failures.mtbf,
                row,
                interval,
            )

    def end_attempt(self, how: str) -> None:
        """Record this attempt's clean end: ``finished``, or ``stopped`` by a signal once
        its state is written."""
        if self.writes and self._attempt:
            self.store.end_attempt(self.last_step, how)
            self._attempt = False

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
