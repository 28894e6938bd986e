"""Targets 3 and 6: the durable best save and the resume-state write, by model size.

For each size, one process alternates, ``reps`` times:

- ``model.save_weights`` over the previous file (Keras' own save, not durable);
- ``commit_best`` with the writer ``BestCheckpoint`` uses (temp file, fsync, sha256,
  pending record, rename, folder fsync);
- a raw sequential write of as many bytes with fsync (the disk's speed from Python);
- ``ResumeStore.save`` (every model and optimizer variable, fsync, sha256, manifest).

The page cache is flushed (``os.sync``) before each timed write, so no write pays for
the previous one's dirty pages.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
from common import MIB, Row, median, rate, run_child, scratch, seconds, within
from workloads import WORKLOADS, built_model, patched, stopwatch

SAVE_LIMIT = 1.15
SCALING_SPREAD = 1.25  # largest / smallest time per MiB that still counts as flat


def _timed(action, *args) -> float:
    os.sync()
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def _raw_write(path: Path, buffer: np.ndarray) -> None:
    with open(path, "wb") as handle:
        handle.write(memoryview(buffer))
        handle.flush()
        os.fsync(handle.fileno())


def save_times(workload: str, reps: int, root: str) -> dict:
    """Child: seconds per save of each kind, and the bytes each writes."""
    import keras

    from keepbest.rundir.record import WEIGHTS_FILE, commit_best
    from keepbest.rundir.resume_store import Progress, ResumeStore

    model = built_model(WORKLOADS[workload])
    folder = Path(root)
    plain = folder / "plain.weights.h5"
    run_dir = folder / "run"
    run_dir.mkdir()
    store = ResumeStore(run_dir)
    times: dict[str, list[float]] = {
        "keras": [],
        "commit": [],
        "commit_write": [],
        "raw": [],
        "resume": [],
    }

    def write(path: Path) -> None:
        keras.saving.save_weights(model, path, objects_to_skip=[model.optimizer])

    def commit(epoch: int) -> None:
        commit_best(
            run_dir,
            write,
            epoch=epoch,
            step=epoch,
            monitor="val_loss",
            mode="min",
            value=1.0 / epoch,
            versions={},
        )

    model.save_weights(plain)  # the file a plain save overwrites, like a best save
    raw_buffer = np.ones(plain.stat().st_size, dtype=np.uint8)
    for rep in range(reps):
        order = ["keras", "commit", "raw", "resume"]
        for kind in order if rep % 2 == 0 else order[::-1]:
            if kind == "keras":
                times["keras"].append(_timed(model.save_weights, plain))
            elif kind == "commit":
                with patched(keras.saving, "save_weights", stopwatch(times["commit_write"])):
                    times["commit"].append(_timed(commit, rep + 1))
            elif kind == "raw":
                raw = folder / "raw.bin"
                times["raw"].append(_timed(_raw_write, raw, raw_buffer))
                raw.unlink()
            else:
                times["resume"].append(
                    _timed(store.save, model, Progress(epoch=rep + 1), rep + 1, [])
                )
    return {
        "times": times,
        "weights_bytes": (run_dir / WEIGHTS_FILE).stat().st_size,
        "resume_bytes": store.latest().weights_path.stat().st_size,
    }


def measure(quick: bool) -> list[Row]:
    rows: list[Row] = []
    per_mib: dict[str, dict[str, float]] = {"commit": {}, "resume": {}, "raw": {}}
    sizes = {"10M": 3, "100M": 3, "300M": 2} if quick else {"10M": 5, "100M": 5, "300M": 3}
    for workload, reps in sizes.items():
        root = scratch(f"saving-{workload}")
        try:
            found = run_child("saving:save_times", workload=workload, reps=reps, root=str(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        t = {kind: median(values) for kind, values in found["times"].items()}
        weights_mib = found["weights_bytes"] / MIB
        resume_mib = found["resume_bytes"] / MIB
        per_mib["commit"][workload] = t["commit"] / weights_mib
        per_mib["resume"][workload] = t["resume"] / resume_mib
        per_mib["raw"][workload] = t["raw"] / weights_mib
        if workload != "100M":
            continue
        rows.append(
            Row(
                "3",
                f"{workload}: best save, commit_best vs model.save_weights (the Keras write "
                f"inside commit_best: {seconds(t['commit_write'])})",
                seconds(t["keras"]),
                seconds(t["commit"]),
                t["commit"] / t["keras"],
                f"<= {SAVE_LIMIT}",
                within(t["commit"] / t["keras"], SAVE_LIMIT),
            )
        )
        rows.append(
            Row(
                "3",
                f"{workload}: best save throughput vs a raw sequential write + fsync of "
                f"{weights_mib:.0f} MiB (ratio: time)",
                rate(weights_mib / t["raw"]),
                rate(weights_mib / t["commit"]),
                t["commit"] / t["raw"],
            )
        )

    def listing(values: dict[str, float]) -> str:
        return ", ".join(f"{name} {value * 1000:.2f} ms" for name, value in values.items())

    for kind, label in (("commit", "best save"), ("resume", "resume-state write")):
        values = per_mib[kind]
        spread = max(values.values()) / min(values.values())
        rows.append(
            Row(
                "6",
                f"{label} time per MiB: {listing(values)} (raw write + fsync: "
                f"{listing(per_mib['raw'])}; ratio: largest / smallest)",
                "",
                "",
                spread,
                f"<= {SCALING_SPREAD}",
                within(spread, SCALING_SPREAD),
            )
        )
    return rows
