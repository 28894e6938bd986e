"""Issue 11 and target 6: the durable best save and the resume-state write, by model size.

For each size, one process alternates, ``reps`` times:

- ``model.save_weights`` over the previous file (Keras' own save, not durable);
- ``commit_best`` with the writer ``BestCheckpoint`` uses, ``checkpoint.save_weights``
  (keepbest's own ``.weights.h5`` writer, a slice at a time), then fsync and sha256 of
  the file (``sync_and_hash``: the fsync in a helper thread while the hash reads the page
  cache), pending record, rename, folder fsyncs; each part is timed on its own;
- a raw sequential write of as many bytes with fsync (the disk's speed from Python);
- ``ResumeStore.save`` (every model and optimizer variable, fsync, sha256, manifest).

For the 100M model two more actions split ``sync_and_hash``: the sha256 alone of the
file just committed (in the page cache), and the fsync alone of a file keepbest's writer
has just written. The page cache is flushed (``os.sync``) before each timed action, so
none pays for the previous one's dirty pages.
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


def _fsync_only(path: Path) -> float:
    with open(path, "rb") as handle:
        started = time.perf_counter()
        os.fsync(handle.fileno())
        return time.perf_counter() - started


def save_times(workload: str, reps: int, root: str, split: bool = False) -> dict:
    """Child: seconds per save of each kind, and the bytes each writes; ``split`` adds the
    sha256 alone and the fsync alone."""
    import keepbest.rundir.record
    from keepbest.atomic import sha256_file
    from keepbest.checkpoint import save_weights
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
        "commit_sync_hash": [],
        "raw": [],
        "resume": [],
        "hash": [],
        "fsync": [],
    }

    def write(path: Path) -> None:
        save_weights(model, path)

    def commit(epoch: int) -> None:
        commit_best(
            run_dir,
            stopwatch(times["commit_write"])(write),
            epoch=epoch,
            step=epoch,
            monitor="val_loss",
            mode="min",
            value=1.0 / epoch,
            versions={},
        )

    model.save_weights(plain)  # the file a plain save overwrites, like a best save
    raw_buffer = np.ones(plain.stat().st_size, dtype=np.uint8)
    record = keepbest.rundir.record  # commit_best calls sync_and_hash from there
    for rep in range(reps):
        order = ["keras", "commit", "raw", "resume"] + (["hash", "fsync"] if split else [])
        for kind in order if rep % 2 == 0 else order[::-1]:
            if kind == "keras":
                times["keras"].append(_timed(model.save_weights, plain))
            elif kind == "commit":
                with patched(record, "sync_and_hash", stopwatch(times["commit_sync_hash"])):
                    times["commit"].append(_timed(commit, rep + 1))
            elif kind == "hash":
                times["hash"].append(_timed(sha256_file, run_dir / WEIGHTS_FILE))
            elif kind == "fsync":
                written = folder / "written.weights.h5"
                os.sync()
                write(written)
                times["fsync"].append(_fsync_only(written))
                written.unlink()
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
            found = run_child(
                "saving:save_times",
                workload=workload,
                reps=reps,
                root=str(root),
                split=workload == "100M",
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        t = {kind: median(values) for kind, values in found["times"].items() if values}
        weights_mib = found["weights_bytes"] / MIB
        resume_mib = found["resume_bytes"] / MIB
        per_mib["commit"][workload] = t["commit"] / weights_mib
        per_mib["resume"][workload] = t["resume"] / resume_mib
        per_mib["raw"][workload] = t["raw"] / weights_mib
        if workload != "100M":
            continue
        rest = t["commit"] - t["commit_write"] - t["commit_sync_hash"]
        rows.append(
            Row(
                "11",
                f"{workload}: durable best save, commit_best with keepbest's writer vs "
                f"model.save_weights (of which: write {seconds(t['commit_write'])}, fsync + "
                f"sha256 side by side {seconds(t['commit_sync_hash'])}, records, renames and "
                f"folder fsyncs {seconds(rest)}; alone: sha256 of the cached file "
                f"{seconds(t['hash'])}, fsync of a just-written file {seconds(t['fsync'])})",
                seconds(t["keras"]),
                seconds(t["commit"]),
                t["commit"] / t["keras"],
                f"<= {SAVE_LIMIT}",
                within(t["commit"] / t["keras"], SAVE_LIMIT),
            )
        )
        rows.append(
            Row(
                "11",
                f"{workload}: keepbest's .weights.h5 writer alone (inside commit_best) vs "
                "model.save_weights",
                seconds(t["keras"]),
                seconds(t["commit_write"]),
                t["commit_write"] / t["keras"],
            )
        )
        rows.append(
            Row(
                "11",
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
