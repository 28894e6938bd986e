"""Issue 10: evaluation points every N steps against Keras' epoch-end validation.

With ``checkpoint.every_steps: N`` keepbest measures the monitor (a validation pass over
the fixed-order validation data), judges the point and writes its history row at the
global steps N, 2N, ... wherever they fall; Keras validates only at epoch ends (its
``ModelCheckpoint(save_freq=<int>)`` cannot judge a ``val_*`` monitor at all). One
process alternates three runs on the same model and data:

- a bare ``model.fit`` without validation data: the training time alone;
- a bare ``model.fit`` with ``validation_data``: Keras' validation pass at each epoch
  end (a stopwatch around ``Model.evaluate``, which ``fit`` calls for it);
- ``keepbest.train`` with ``every_steps`` = half an epoch: two evaluation points per
  epoch, one mid-epoch and one at its end (a stopwatch around the whole point,
  ``TrainingLoop._evaluate``: measurement, judgement, history row, progress report).

``start_from_step`` keeps all but the last epoch from saving a best, so the compared
epochs save none; keepbest's resume-state writes (default cadence) are timed and taken
out of the epochs they fell in. Epoch 1 (tracing) and the last are dropped.
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

WORKLOAD = "10M"
POINTS_PER_EPOCH = 2
LIMIT = 1.10  # an evaluation point may cost at most this much more than Keras' own pass
SIDES = ("train", "keras", "keepbest")


def point_times(reps: int, epochs: int, root: str) -> dict:
    """Child: per-epoch seconds of each side, Keras' validation passes and keepbest's
    evaluation points (in the compared epochs)."""
    import keras

    import keepbest
    from keepbest.callbacks.loop import TrainingLoop
    from keepbest.rundir.resume_store import ResumeStore

    load = WORKLOADS[WORKLOAD]
    every = load.steps // POINTS_PER_EPOCH
    found: dict[str, list[float]] = {
        "train": [],
        "keras": [],
        "keras_passes": [],
        "keepbest": [],
        "keepbest_points": [],
        "keepbest_writes": [],
    }
    for rep in range(reps):
        config = keepbest_config(
            load,
            Path(root) / f"rep{rep}",
            epochs,
            learning_rate=0.01,
            every_steps=every,
            start_from_step=(epochs - 1) * load.steps,
        )
        for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
            clock = epoch_clock()
            if side != "keepbest":
                _, pipes, model = bare_setup(config)
                passes: list[tuple[float, float]] = []
                with patched(keras.Model, "evaluate", stamped(passes)):
                    bare_fit(model, pipes, epochs, [clock], validation=side == "keras")
                found[side] += clock.durations[1:-1]
                if side == "keras":
                    found["keras_passes"] += [d for _, d in passes][1:-1]
                continue
            points: list[tuple[float, float]] = []
            writes: list[tuple[float, float]] = []
            with (
                patched(keras.Model, "fit", with_callback(clock)),
                patched(TrainingLoop, "_evaluate", stamped(points)),
                patched(ResumeStore, "save", stamped(writes)),
            ):
                keepbest.train(config)
            per_epoch_writes = within_epochs(clock, writes)[1:-1]
            found["keepbest"] += [
                d - w for d, w in zip(clock.durations[1:-1], per_epoch_writes, strict=True)
            ]
            found["keepbest_writes"] += per_epoch_writes
            bounds = (clock.starts[1][0], clock.starts[-1][0])
            found["keepbest_points"] += [d for s, d in points if bounds[0] <= s < bounds[1]]
    return found


def measure(quick: bool) -> list[Row]:
    root = scratch("steps")
    try:
        found = run_child("steps:point_times", reps=1 if quick else 2, epochs=5, root=str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = WORKLOADS[WORKLOAD]
    train, keras_epoch, kept = (median(found[side]) for side in SIDES)
    keras_pass, point = median(found["keras_passes"]), median(found["keepbest_points"])
    every = load.steps // POINTS_PER_EPOCH
    return [
        Row(
            "10",
            f"{WORKLOAD}: one evaluation point (every_steps={every}: validation pass on "
            f"{load.val_samples} samples, judgement, history row) vs Keras' epoch-end "
            f"validation pass; share of the training time between two points: keepbest "
            f"{point / (train / POINTS_PER_EPOCH):.0%}, Keras' pass "
            f"{keras_pass / (train / POINTS_PER_EPOCH):.0%}",
            seconds(keras_pass),
            seconds(point),
            point / keras_pass,
            f"<= {LIMIT}",
            within(point / keras_pass, LIMIT),
        ),
        Row(
            "10",
            f"{WORKLOAD}: epoch time, {POINTS_PER_EPOCH} evaluation points per epoch vs "
            f"fit with epoch-end validation (training alone: {seconds(train)}; evaluation "
            f"share of the epoch: keepbest {(kept - train) / kept:.0%}, Keras "
            f"{(keras_epoch - train) / keras_epoch:.0%})",
            seconds(keras_epoch),
            seconds(kept),
            kept / keras_epoch,
        ),
    ]
