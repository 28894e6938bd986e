"""Target 1: keepbest's training loop against a bare ``model.fit``, epoch by epoch.

Both sides run in one process, alternating, on the same model, batches and validation
data; an epoch clock (first callback) times each epoch from its start to the next one's,
so every epoch-end callback is inside. ``checkpoint.start_from_epoch`` keeps all but the
last epoch from saving a best checkpoint, so the epochs compared are ones that save none
(keepbest still judges them); epoch 1 (tracing) and the last are dropped.

keepbest still writes its resume state at every epoch end. That write is timed on its
own (a stopwatch around ``ResumeStore.save``) and reported as a fraction of the epoch;
the loop overhead is the epoch time without it. CPU time of the whole process is
reported too: other processes on a busy machine disturb it much less than wall time.
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
    stopwatch,
    with_callback,
)

LIMIT = 1.02


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
    from keepbest.rundir.resume_store import ResumeStore

    load = WORKLOADS[workload]
    sides = ["bare", "keepbest"] + (["hook"] if hook else [])
    found: dict[str, list[float]] = {key: [] for side in sides for key in (side, f"{side}_cpu")}
    found["resume_writes"] = []
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
            writes: list[float] = []
            with (
                patched(keras.Model, "fit", with_callback(clock)),
                patched(ResumeStore, "save", stopwatch(writes)),
            ):
                result = keepbest.train(config)
            epochs_seen = zip(result.history, clock.durations, clock.cpu_times, writes, strict=True)
            for row, duration, cpu, write in list(epochs_seen)[1:]:
                if not row["best_saved"]:
                    found["keepbest"].append(duration)
                    found["keepbest_cpu"].append(cpu)
                    found["resume_writes"].append(write)
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
        bare, full, write = (median(found[key]) for key in ("bare", "keepbest", "resume_writes"))
        loop = median(
            [e - w for e, w in zip(found["keepbest"], found["resume_writes"], strict=True)]
        )
        bare_cpu, kept_cpu = median(found["bare_cpu"]), median(found["keepbest_cpu"])
        rows += [
            Row(
                "1",
                f"{workload}: epoch time without the resume-state write",
                seconds(bare),
                seconds(loop),
                loop / bare,
                f"<= {LIMIT}",
                within(loop / bare, LIMIT),
            ),
            Row(
                "1",
                f"{workload}: epoch time with the resume-state write ({seconds(write)})",
                seconds(bare),
                seconds(full),
                full / bare,
            ),
            Row(
                "1",
                f"{workload}: epoch CPU time of the process, with the resume-state write",
                seconds(bare_cpu),
                seconds(kept_cpu),
                kept_cpu / bare_cpu,
            ),
        ]
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
        if workload == "100M":
            rows.append(
                Row(
                    "resume",
                    f"{workload}: resume-state write per epoch, share of keepbest's epoch",
                    "",
                    seconds(write),
                    write / full,
                )
            )
    return rows
