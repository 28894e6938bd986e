"""Target 5: the end-of-epoch pass over the training data for a training-set monitor.

keepbest measures ``loss`` (or any training-set monitor) on the epoch's final weights
with an evaluation pass over the training data. One process alternates three runs of
``keepbest.train`` on the same model and data:

- ``val_loss`` monitor: no training-set pass (the reference epoch);
- ``loss`` monitor: the full pass;
- ``loss`` monitor with ``checkpoint.train_eval_steps``: the first eighth of the batches.

A stopwatch around the pass (``evaluate_metrics`` in ``keepbest.measure``) and an
epoch clock give the pass's share of the epoch. As in the overhead benchmark,
``start_from_epoch`` keeps the compared epochs free of best saves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import Row, median, run_child, scratch, seconds
from workloads import WORKLOADS, epoch_clock, keepbest_config, patched, stopwatch, with_callback

WORKLOAD = "10M"
BOUNDED_FRACTION = 8  # train_eval_steps = steps // 8


def variants() -> dict[str, dict]:
    steps = WORKLOADS[WORKLOAD].steps
    return {
        "val_loss": {"monitor": "val_loss"},
        "full": {"monitor": "loss"},
        "bounded": {"monitor": "loss", "train_eval_steps": steps // BOUNDED_FRACTION},
    }


def pass_times(reps: int, epochs: int, root: str) -> dict:
    """Child: per-epoch seconds and per-pass seconds of each variant."""
    import keras

    import keepbest
    import keepbest.measure

    found: dict[str, dict[str, list[float]]] = {
        name: {"epochs": [], "passes": []} for name in variants()
    }
    for rep in range(reps):
        names = list(variants())
        for name in names if rep % 2 == 0 else names[::-1]:
            config = keepbest_config(
                WORKLOADS[WORKLOAD],
                Path(root) / f"{name}-{rep}",
                epochs,
                learning_rate=0.01,
                start_from_epoch=epochs - 1,
                **variants()[name],
            )
            clock = epoch_clock()
            passes: list[float] = []
            with (
                patched(keras.Model, "fit", with_callback(clock)),
                patched(keepbest.measure, "evaluate_metrics", stopwatch(passes)),
            ):
                keepbest.train(config)
            found[name]["epochs"] += clock.durations[1:-1]
            found[name]["passes"] += passes[1:-1]
    return found


def measure(quick: bool) -> list[Row]:
    root = scratch("train-eval")
    try:
        found = run_child("train_eval:pass_times", reps=1 if quick else 2, epochs=5, root=str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    reference = median(found["val_loss"]["epochs"])
    load = WORKLOADS[WORKLOAD]
    rows = []
    for name, label in (
        ("full", f"all {load.steps} batches"),
        ("bounded", f"train_eval_steps={load.steps // BOUNDED_FRACTION}"),
    ):
        epoch = median(found[name]["epochs"])
        pass_time = median(found[name]["passes"])
        rows.append(
            Row(
                "5",
                f"{WORKLOAD}: training-set pass ({label}), share of the epoch "
                f"({seconds(epoch)}; with a val_loss monitor: {seconds(reference)})",
                "",
                seconds(pass_time),
                pass_time / epoch,
            )
        )
    return rows
