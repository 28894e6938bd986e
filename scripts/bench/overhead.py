"""Target 1: keepbest's training loop against a bare ``model.fit``, epoch by epoch.

Both sides run in one process, alternating, on the same model, batches and validation
data; an epoch clock (first callback) times each epoch from its start to the next one's,
so every epoch-end callback is inside. ``checkpoint.start_from_epoch`` keeps all but the
last epoch from saving a best checkpoint, so the epochs compared are ones that save none
(keepbest still judges them); epoch 1 (tracing) and the last are dropped.

keepbest also writes resume states, on its default cadence (``resume.max_overhead``: at
most about 5% of the time; the ``cadence`` benchmark measures that against Keras' own
callbacks). Each state is timed on its own (a stopwatch around ``TrainingLoop._save``:
the fingerprint of the next batch, then ``ResumeStore.save``, timed apart too) and taken
out of the epoch it fell in: the loop overhead is the epoch time without them. For the
small model the states' share of the epoch is a row of its own (the budget's 5%). CPU
time of the whole process, states included, is reported too: other processes on a busy
machine disturb it much less than wall time.
For the small model a third side, a bare fit plus a no-op ``on_train_batch_end``
callback, shows what such a hook costs by itself.
"""

from __future__ import annotations

import shutil
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
    with_callback,
    within_epochs,
)

LIMIT = 1.02
BUDGET = 0.05  # resume.max_overhead's default


def batch_end_hook():
    """A callback with a no-op ``on_train_batch_end``, like ``ResumeCheckpoint``'s: any such
    hook makes Keras call batch-end callbacks synchronously instead of in a thread."""
    import keras

    class BatchEndHook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            pass

    return BatchEndHook()


def epoch_times(workload: str, reps: int, epochs: int, root: str, hook: bool) -> dict:
    """Child: per-epoch wall and CPU seconds of alternating bare and keepbest runs (and,
    with ``hook``, bare runs with a batch-end hook)."""
    import keras

    import keepbest
    from keepbest.callbacks.loop import TrainingLoop
    from keepbest.rundir.resume_store import ResumeStore

    load = WORKLOADS[workload]
    sides = ["bare", "keepbest"] + (["hook"] if hook else [])
    found: dict[str, list[float]] = {key: [] for side in sides for key in (side, f"{side}_cpu")}
    found["resume_writes"] = []  # seconds of resume states in each compared epoch
    found["state_counts"] = []  # how many states each compared epoch wrote
    found["store_saves"] = []  # ResumeStore.save alone, each state of the compared epochs
    found["states"] = []  # each state of the compared epochs, whole
    for rep in range(reps):
        config = keepbest_config(
            load, Path(root) / f"rep{rep}", epochs, learning_rate=0.01, start_from_epoch=epochs - 1
        )
        for side in sides if rep % 2 == 0 else sides[::-1]:
            clock = epoch_clock()
            if side != "keepbest":
                _, pipes, model = bare_setup(config)
                extra = [batch_end_hook()] if side == "hook" else []
                bare_fit(model, pipes, epochs, [clock, *extra])
                found[side] += clock.durations[1:-1]
                found[f"{side}_cpu"] += clock.cpu_times[1:-1]
                continue
            states: list[tuple[float, float]] = []
            stores: list[tuple[float, float]] = []
            with (
                patched(keras.Model, "fit", with_callback(clock)),
                patched(TrainingLoop, "_save", stamped(states)),
                patched(ResumeStore, "save", stamped(stores)),
            ):
                result = keepbest.train(config)
            per_epoch = within_epochs(clock, states)
            bounds = [start for start, _ in clock.starts] + [clock.ended[0]]
            epochs_seen = zip(
                result.history, clock.durations, clock.cpu_times, per_epoch, strict=True
            )
            for index, (row, duration, cpu, write) in list(enumerate(epochs_seen))[1:]:
                if not row["best_saved"]:
                    found["keepbest"].append(duration)
                    found["keepbest_cpu"].append(cpu)
                    found["resume_writes"].append(write)
                    begin, end = bounds[index], bounds[index + 1]
                    found["state_counts"].append(sum(begin <= s < end for s, _ in states))
                    found["states"] += [d for s, d in states if begin <= s < end]
                    found["store_saves"] += [d for s, d in stores if begin <= s < end]
    return found


def measure(quick: bool) -> list[Row]:
    rows = []
    # (repetitions, epochs per run): more, shorter runs alternate the sides more often
    plans = {"small": (3, 5), "100M": (2, 4)} if quick else {"small": (6, 5), "100M": (3, 4)}
    for workload, (reps, epochs) in plans.items():
        root = scratch(f"overhead-{workload}")
        try:
            found = run_child(
                "overhead:epoch_times",
                workload=workload,
                reps=reps,
                epochs=epochs,
                root=str(root),
                hook=workload == "small",
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        bare = median(found["bare"])
        loop = median(
            [e - w for e, w in zip(found["keepbest"], found["resume_writes"], strict=True)]
        )
        bare_cpu, kept_cpu = median(found["bare_cpu"]), median(found["keepbest_cpu"])
        with_writes = sum(count > 0 for count in found["state_counts"])
        rows += [
            Row(
                "1",
                f"{workload}: epoch time without resume states",
                seconds(bare),
                seconds(loop),
                loop / bare,
                f"<= {LIMIT}",
                within(loop / bare, LIMIT),
            ),
            Row(
                "1",
                f"{workload}: epoch CPU time of the process, resume states included "
                f"({with_writes} of {len(found['state_counts'])} epochs wrote some)",
                seconds(bare_cpu),
                seconds(kept_cpu),
                kept_cpu / bare_cpu,
            ),
        ]
        if workload == "small" and found["states"]:
            share = sum(found["resume_writes"]) / sum(found["keepbest"])
            state, store = median(found["states"]), median(found["store_saves"])
            rows.append(
                Row(
                    "11",
                    f"{workload}: resume states on the default cadence (max_overhead 0.05), "
                    f"share of keepbest's epoch time ({median(found['state_counts']):.0f} per "
                    f"epoch of {seconds(median(found['keepbest']))}; each {seconds(state)}: "
                    f"ResumeStore.save {seconds(store)}, the rest: next-batch fingerprint, "
                    "metrics)",
                    "",
                    f"{sum(found['resume_writes']) / len(found['keepbest']) * 1000:.0f} ms "
                    "per epoch",
                    share,
                    f"<= {BUDGET}",
                    within(share, BUDGET),
                )
            )
        if "hook" in found:
            hooked = median(found["hook"])
            rows.append(
                Row(
                    "1",
                    f"{workload}: bare fit plus a no-op on_train_batch_end callback vs bare fit",
                    seconds(bare),
                    seconds(hooked),
                    hooked / bare,
                )
            )
    return rows
