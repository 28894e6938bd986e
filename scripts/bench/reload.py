"""Target 4: ``load_best`` against what a user does without keepbest.

A run directory is made by keepbest's own code (``RunDir.write_setup`` and
``commit_best``) for the 100M-parameter model. Then one process alternates:

- baseline: rebuild the model from the run's ``model.json``, compile it as configured,
  ``model.load_weights`` (no checksum);
- keepbest: ``load_best(run_dir)`` (record, sha256 check beside the rebuild, compile,
  then ``weights_h5.load``: the file read a slice at a time into the variables).

The weights file is dropped from the page cache before each load (``POSIX_FADV_DONTNEED``
after a sync), as for a model loaded by a fresh process some time after training. A
second row compares the load step alone on an already built model:
``load_best_weights`` (``verify_checksum``, then keepbest's sliced reader) against
``load_weights``, i.e. the checksum's cost when nothing hides it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from common import Row, median, run_child, scratch, seconds, within
from workloads import WORKLOADS, keepbest_config

WORKLOAD = "100M"
LIMIT = 1.2


def _drop_from_cache(path: Path) -> None:
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _make_run(root: Path) -> Path:
    """A run directory with a best checkpoint, written by keepbest's own code."""
    from keepbest.checkpoint import save_weights
    from keepbest.config import load_config
    from keepbest.data.pipelines import load_pipelines
    from keepbest.models import build_model, compile_args
    from keepbest.rundir.layout import RunDir
    from keepbest.rundir.record import commit_best

    cfg = load_config(keepbest_config(WORKLOADS[WORKLOAD], root, epochs=1, learning_rate=0.01))
    pipes = load_pipelines(cfg)
    model = build_model(cfg, pipes.spec)
    compile_args(cfg).apply(model)  # as in training (the writer leaves the optimizer out)
    run = RunDir(cfg.run_dir())
    run.write_setup(cfg, pipes.spec, model)
    commit_best(
        run.path,
        lambda path: save_weights(model, path),
        epoch=1,
        step=1,
        monitor="val_loss",
        mode="min",
        value=1.0,
        versions={},
    )
    return run.path


def load_times(reps: int, root: str) -> dict:
    """Child: seconds per load, both ways, end to end and for the load step alone."""
    import keras

    from keepbest.checkpoint import load_best_weights
    from keepbest.inference.load import load_best
    from keepbest.models import compile_args
    from keepbest.rundir.layout import RunDir
    from keepbest.rundir.record import read_record

    run = RunDir(_make_run(Path(root)))
    weights = run.weights_file
    cfg = run.read_config()

    def plain() -> None:
        model = keras.models.model_from_json(run.model_file.read_text(encoding="utf-8"))
        compile_args(cfg).apply(model)
        model.load_weights(weights, objects_to_skip=[model.optimizer])

    def step_plain() -> None:
        built.load_weights(weights)

    def step_checked() -> None:
        load_best_weights(built, run.path, read_record(run.path))

    built = keras.models.model_from_json(run.model_file.read_text(encoding="utf-8"))
    actions = {
        "plain": plain,
        "load_best": lambda: load_best(run.path),
        "step_plain": step_plain,
        "step_checked": step_checked,
    }
    times: dict[str, list[float]] = {name: [] for name in actions}
    for rep in range(reps):
        for name in list(actions) if rep % 2 == 0 else list(actions)[::-1]:
            _drop_from_cache(weights)
            started = time.perf_counter()
            actions[name]()
            times[name].append(time.perf_counter() - started)
    return times


def measure(quick: bool) -> list[Row]:
    root = scratch("reload")
    try:
        found = run_child("reload:load_times", reps=3 if quick else 7, root=str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    t = {name: median(values) for name, values in found.items()}
    return [
        Row(
            "4",
            f"{WORKLOAD}: load_best vs rebuild + compile + model.load_weights, cold cache",
            seconds(t["plain"]),
            seconds(t["load_best"]),
            t["load_best"] / t["plain"],
            f"<= {LIMIT}",
            within(t["load_best"] / t["plain"], LIMIT),
        ),
        Row(
            "4",
            f"{WORKLOAD}: load step alone: load_best_weights (verify_checksum + sliced read) "
            "vs load_weights",
            seconds(t["step_plain"]),
            seconds(t["step_checked"]),
            t["step_checked"] / t["step_plain"],
        ),
    ]
