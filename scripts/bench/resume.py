"""Resume: time from ``keepbest.train`` to the first training step, fresh vs resumed.

For the 100M-parameter model, each repetition trains a fresh run for one epoch in a new
process, then resumes it for a second epoch in another. Each process times from the
``train`` call (imports done) to the start of its first training step, and the resumed
one also times finding and checking the newest resume state (``ResumeStore.latest``,
which checks its sha256) and loading it (``restore``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from common import Row, median, run_child, scratch, seconds
from workloads import WORKLOADS, epoch_clock, keepbest_config, patched, stopwatch, with_callback

WORKLOAD = "100M"


def first_step(root: str, epochs: int) -> dict:
    """Child: seconds from ``train`` to the first step, and the resume phases."""
    import keras

    import keepbest
    import keepbest.rundir.resume_store
    from keepbest.rundir.resume_store import ResumeStore

    config = keepbest_config(WORKLOADS[WORKLOAD], Path(root), epochs, learning_rate=0.01)
    clock = epoch_clock()
    found: list[float] = []
    restored: list[float] = []
    with (
        patched(keras.Model, "fit", with_callback(clock)),
        patched(ResumeStore, "latest", stopwatch(found)),
        patched(keepbest.rundir.resume_store, "restore", stopwatch(restored)),
    ):
        started = time.perf_counter()
        keepbest.train(config)
    return {
        "to_first_step": clock.first_step - started,
        "latest": sum(found),
        "restore": sum(restored),
    }


def measure(quick: bool) -> list[Row]:
    reps = 1 if quick else 2
    fresh: list[float] = []
    resumed: list[dict] = []
    for _ in range(reps):
        root = scratch("resume")
        try:
            fresh.append(run_child("resume:first_step", root=str(root), epochs=1)["to_first_step"])
            resumed.append(run_child("resume:first_step", root=str(root), epochs=2))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    new = median(fresh)
    back = median([r["to_first_step"] for r in resumed])
    latest = median([r["latest"] for r in resumed])
    restore = median([r["restore"] for r in resumed])
    return [
        Row(
            "resume",
            f"{WORKLOAD}: train() to the first step, fresh vs resumed (of which: find and "
            f"check the state {seconds(latest)}, restore it {seconds(restore)})",
            seconds(new),
            seconds(back),
            back / new,
        )
    ]
