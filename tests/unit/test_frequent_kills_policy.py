"""Issue 22, frequent kills, without training: the cadence's exact decisions once failures
are seen (``callbacks.resume.Failures``), a pure simulation of attempts killed young under
the old and the new rule, and the record of attempts on disk (``resume/attempts.json``)."""

from __future__ import annotations

import itertools
import json
import logging
import math
from datetime import datetime, timedelta, timezone

import pytest

from keepbest.callbacks.resume import WINDOW, Cadence, Failures
from keepbest.rundir.layout import RunDir
from keepbest.rundir.resume_store import (
    ATTEMPTS_KEPT,
    Attempt,
    AttemptLog,
    ResumeStore,
    read_attempts,
)


def old_rule(cadence: Cadence, steps: int, seconds: float, cost: float | None) -> bool:
    """The cadence as it was before issue 22 (copied), to hold the new one to it."""
    if steps <= 0:
        return False
    fixed = cadence.every_steps is not None or cadence.every_seconds is not None
    wanted = not fixed or (
        (cadence.every_steps is not None and steps >= cadence.every_steps)
        or (cadence.every_seconds is not None and seconds >= cadence.every_seconds)
    )
    if not wanted:
        return False
    if cadence.max_overhead is None or cost is None:
        return True
    return seconds >= cost / cadence.max_overhead


CADENCES = [
    Cadence(),
    Cadence(max_overhead=0.2),
    Cadence(every_steps=50),
    Cadence(every_seconds=30.0),
    Cadence(every_steps=50, max_overhead=None),
    Cadence(every_seconds=5.0, max_overhead=None),
]
GRID = list(
    itertools.product(
        [0, 1, 49, 50, 1000], [0.0, 0.5, 4.99, 5.0, 20.0, 600.0], [None, 0.01, 0.25, 1.0, 30.0]
    )
)


@pytest.mark.parametrize("cadence", CADENCES, ids=repr)
def test_without_failures_every_decision_is_the_old_one(cadence):
    clean = Failures.observed([(60.0, False, True), (5.0, False, False)])  # stopped, not killed
    assert clean == Failures()
    for seen in (Failures(), clean):
        adapted = Cadence(cadence.every_steps, cadence.every_seconds, cadence.max_overhead, seen)
        for steps, seconds, cost in GRID:
            assert adapted.due(steps, seconds, cost) is old_rule(cadence, steps, seconds, cost)


def test_the_mean_time_between_failures_and_the_attempts_without_progress():
    lives = [(100.0, False, True), (8.0, True, True), (4.0, True, False), (8.0, True, True)]
    assert Failures.observed(lives) == Failures(mtbf=120.0 / 3, without_progress=1)
    # only the last WINDOW count: the old clean stop and the old failure are forgotten
    many = [(1000.0, True, False)] + [(6.0, True, True)] * WINDOW
    assert Failures.observed(many) == Failures(mtbf=6.0, without_progress=0)
    assert Failures.observed([]) == Failures()


@pytest.mark.parametrize(
    ("failures", "cost", "interval"),
    [
        (Failures(mtbf=10.0), 1.0, math.sqrt(20.0)),  # Young: sqrt(2 C M)
        (Failures(mtbf=10.0), 0.01, math.sqrt(0.2)),
        (Failures(mtbf=4.0), 1.9, 2.0),  # C close to M: at most M / 2
        (Failures(mtbf=10.0, without_progress=3), 0.1, math.sqrt(2.0) / 8),
        (Failures(mtbf=10.0), None, 0.0),  # cost unknown: a state at once
        # never below C: halved below it, or failures recorded as coming at once
        (Failures(mtbf=10.0, without_progress=3), 1.0, 1.0),
        (Failures(mtbf=4.0), 3.0, 3.0),  # M / 2 below C
        (Failures(mtbf=0.0, without_progress=WINDOW), 0.25, 0.25),
        (Failures(mtbf=0.001), 2.0, 2.0),
        (Failures(), 1.0, None),
    ],
)
def test_the_interval(failures, cost, interval):
    assert failures.interval(cost) == interval


def test_with_failures_a_state_is_due_at_the_interval_and_never_later_than_the_budget():
    seen = Failures(mtbf=10.0)  # a state of 1 s: due at sqrt(20) = 4.47 s, not 20 s
    budget = Cadence(failures=seen)
    assert not budget.due(10, 4.47, last_cost=1.0)
    assert budget.due(10, 4.48, last_cost=1.0)
    assert not budget.due(0, 100.0, last_cost=1.0)  # never twice at one step
    rare = Cadence(failures=Failures(mtbf=1e6))  # sqrt(2e6) = 1414 s: the budget's 20 s
    assert not rare.due(10, 19.9, last_cost=1.0) and rare.due(10, 20.0, last_cost=1.0)
    # a fixed cadence too: its steps, or the failures' interval, whichever first
    fixed = Cadence(every_steps=1000, max_overhead=None, failures=seen)
    assert fixed.due(1000, 0.1, last_cost=1.0) and fixed.due(3, 4.48, last_cost=1.0)
    assert not fixed.due(3, 4.47, last_cost=1.0)


def test_a_forged_record_of_attempts_cannot_make_a_state_due_at_every_step(tmp_path):
    """``resume/attempts.json`` edited so that every attempt died at once, none with
    progress (all started at the same future instant: each lasted 0 s, M = 0): the
    interval is the last state's own write time, so that training and state writes at
    least share the time."""
    run = RunDir(tmp_path)
    run.resume_dir.mkdir()
    forged = [{"started_at": "2099-01-01T00:00:00+00:00", "from_step": 7}] * WINDOW
    run.attempts_file.write_text(json.dumps({"attempts": forged}))
    failures = Failures.observed(ResumeStore(tmp_path).begin_attempt(7))
    assert failures == Failures(mtbf=0.0, without_progress=WINDOW)
    cadence = Cadence(failures=failures)
    cost = 0.3  # the last state took 0.3 s to write
    for steps in (1, 2, 10, 10_000):  # at no step before 0.3 s of training
        assert not cadence.due(steps, 0.299, last_cost=cost)
        assert cadence.due(steps, 0.3, last_cost=cost)
    # the simulated run: states never take more than half of its time
    step_time, clock, last_end, writes = 0.01, 0.0, 0.0, 0
    for _ in range(1000):
        clock += step_time
        if cadence.due(1, clock - last_end, last_cost=cost):
            clock, last_end, writes = clock + cost, clock + cost, writes + 1
    assert writes * cost <= clock / 2, (writes, clock)


def simulate(adaptive: bool, lifetime: float, startup: float, cost: float, attempts: int = 60):
    """Attempts of a run of 2000 steps of 10 ms, each killed ``lifetime`` seconds after it
    begins (a state write it is in dies with it), restarted after ``startup`` seconds:
    (the attempt that finished or None, each killed attempt's progress (from, to))."""
    step_time, total = 0.01, 2000
    lives: list[tuple[float, bool, bool]] = []
    progress = []
    state_step, state_cost = 0, None
    for attempt in range(1, attempts + 1):
        cadence = Cadence(failures=Failures.observed(lives) if adaptive else Failures())
        began = step = last_step = state_step
        clock = last_end = 0.0
        last_cost = state_cost
        while clock + step_time <= lifetime:
            clock, step = clock + step_time, step + 1
            if step == total:
                return attempt, progress
            if cadence.due(step - last_step, clock - last_end, last_cost):
                if clock + cost > lifetime:
                    break  # killed while writing it: the previous state stays
                clock += cost
                last_end, last_step, last_cost = clock, step, cost
                state_step, state_cost = step, cost
        progress.append((began, state_step))
        lives.append((lifetime + startup, True, state_step > began))
    return None, progress


def test_attempts_living_less_than_20_state_writes_never_progress_under_the_old_rule():
    # a state takes 0.4 s; attempts live 4 s (10 writes): the budget waits 8 s
    finished, progress = simulate(adaptive=False, lifetime=4.0, startup=4.0, cost=0.4)
    assert finished is None
    assert progress == [(0, 1)] + [(1, 1)] * 59  # one state at the first step, then none


def test_with_young_daly_they_progress_every_time_and_finish():
    finished, progress = simulate(adaptive=True, lifetime=4.0, startup=4.0, cost=0.4)
    # sqrt(2 * 0.4 s * 8 s) = 2.53 s: a state 253 steps into each attempt after the first
    assert finished == 9
    assert progress == [(0, 1)] + [(1 + 253 * n, 1 + 253 * (n + 1)) for n in range(7)]


def test_when_the_time_between_failures_errs_long_the_halving_makes_progress():
    # a 20 s requeue delay: M = 23 s, sqrt(2 * 1 * 23) = 6.8 s > a 3 s life; the attempts
    # that die without progress halve the interval until a state fits (1.7 s + 1 s)
    finished, progress = simulate(adaptive=True, lifetime=3.0, startup=20.0, cost=1.0)
    assert finished == 17
    stuck = [began == reached for began, reached in progress]
    # 6.8 s, 3.4 s: no state; 1.7 s: a state, and while those two are among the last
    # WINDOW attempts every attempt progresses; once they are not, two more are lost
    assert stuck == [False, True, True] + [False] * 9 + [True, True] + [False] * 2


# --------------------------------------------------------------------------- the record


def test_attempts_are_recorded_at_their_start_and_judged_at_the_next(tmp_path):
    store = ResumeStore(tmp_path)
    assert store.begin_attempt(0) == []
    record = read_attempts(tmp_path)
    assert [(a.from_step, a.reached_step, a.ended) for a in record.attempts] == [(0, None, None)]
    lives = store.begin_attempt(40)  # the first died, a state at step 40 left behind
    assert [(died, progressed) for _, died, progressed in lives] == [(True, True)]
    lives = store.begin_attempt(40)  # the second died without a newer state
    assert [(died, progressed) for _, died, progressed in lives] == [(True, True), (True, False)]
    store.end_attempt(90, "stopped")  # the third stopped cleanly at step 90
    record = read_attempts(tmp_path)
    assert [(a.from_step, a.reached_step, a.ended) for a in record.attempts] == [
        (0, 40, None),
        (40, 40, None),
        (40, 90, "stopped"),
    ]
    assert record.counts(newest_step=90, running=False) == (3, 1)
    lives = store.begin_attempt(90)
    assert [(died, progressed) for _, died, progressed in lives] == [
        (True, True),
        (True, False),
        (False, True),
    ]
    # the fourth is running: not judged; once it has stopped running, by the newest state
    record = read_attempts(tmp_path)
    assert record.counts(newest_step=90, running=True) == (4, 1)
    assert record.counts(newest_step=90, running=False) == (4, 2)
    assert record.counts(newest_step=120, running=False) == (4, 1)


def test_an_attempt_lasts_until_the_next_begins_or_its_clean_end():
    start = datetime(2026, 12, 6, 4, 0, tzinfo=timezone.utc)

    def at(seconds: float) -> str:
        return (start + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    log = AttemptLog(
        attempts=[
            Attempt(started_at=at(0), from_step=0, reached_step=5),
            Attempt(
                started_at=at(7.25), from_step=5, reached_step=9, ended="stopped", ended_at=at(9.5)
            ),
            Attempt(started_at=at(30), from_step=9),
        ]
    )
    assert log.lives(now=start + timedelta(seconds=31.5)) == [
        (7.25, True, True),
        (2.25, False, True),
        (1.5, True, False),
    ]


def test_a_damaged_record_is_started_anew_with_a_warning(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.resume_dir.mkdir()
    for damaged in (
        "{not json",
        '{"attempts": [{"started_at": "yesterday", "from_step": 0}]}',
        '{"attempts": [{"started_at": "2026-12-06T04:00:00+00:00", "from_step": -4}]}',
    ):
        run.attempts_file.write_text(damaged)
        with caplog.at_level(logging.WARNING, logger="keepbest"):
            assert ResumeStore(tmp_path).begin_attempt(12) == []
        assert f"{run.attempts_file} is unreadable" in caplog.text
        caplog.clear()
        assert [a.from_step for a in read_attempts(tmp_path).attempts] == [12]


def test_only_the_latest_attempts_are_listed_and_the_older_ones_counted(tmp_path):
    store = ResumeStore(tmp_path)
    for _ in range(ATTEMPTS_KEPT + 3):
        store.begin_attempt(7)  # none of them progressed
    record = read_attempts(tmp_path)
    assert (record.earlier, record.earlier_without_progress) == (3, 3)
    assert len(record.attempts) == ATTEMPTS_KEPT
    assert record.counts(newest_step=7, running=False) == (ATTEMPTS_KEPT + 3, ATTEMPTS_KEPT + 3)
    assert json.loads(RunDir(tmp_path).attempts_file.read_text())["earlier"] == 3
