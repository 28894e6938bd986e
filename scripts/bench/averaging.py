"""``checkpoint.average``: what averaging costs, and how often the average wins.

- Cost: the average of k = 4 kept files of a 25M-parameter model (its largest variable a
  4096 x 4096 kernel, 64 MiB), built a block of rows at a time from the files
  (``keepbest.rundir.average.average_files``), in a fresh process: its time against
  reading the k files once (h5py, whole: what any averaging must at least do; the
  average also writes its file, so this is reported, not a target), and the peak RSS it
  adds over the largest variable's size (the promise: at most one extra variable, never
  the model k times).
- Outcome (reported, not a target): on the bundled digits and on a noisy regression,
  over 5 seeds each, how often the average of the last 4 evaluation points beats the
  best single point, both measured the same way on the validation data.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from common import MIB, Row, median, mib, run_child, scratch, seconds

K = 4
SEEDS = 5


def make_files(folder: str, k: int) -> dict:
    """Child: k weights files of a 25M-parameter MLP, different weights each."""
    import keras

    from keepbest.checkpoint import save_weights

    model = keras.Sequential(
        [
            keras.Input((1024,)),
            keras.layers.Dense(4096),
            keras.layers.Dense(4096),
            keras.layers.Dense(10),
        ]
    )
    for index in range(k):
        for variable in model.weights:
            variable.assign(keras.random.normal(variable.shape, seed=index))
        save_weights(model, Path(folder) / f"{index}.weights.h5")
    sizes = [int(v.numpy().nbytes) for v in model.weights]
    return {"largest": max(sizes), "total": sum(sizes)}


def average(folder: str, k: int) -> dict:
    """Child: seconds and the peak RSS added by averaging the k files."""
    import resource

    import h5py  # noqa: F401  (imported before the RSS baseline)
    import numpy  # noqa: F401

    from keepbest.rundir.average import average_files

    files = [Path(folder) / f"{index}.weights.h5" for index in range(k)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    begun = time.perf_counter()
    average_files(files, Path(folder) / "average.weights.h5")
    elapsed = time.perf_counter() - begun
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": elapsed, "added": after - before}


def read_all(folder: str, k: int) -> dict:
    """Child: seconds to read every variable of the k files once, whole (the baseline)."""
    import h5py

    def read_every(source) -> None:
        names: list[str] = []
        source.visititems(lambda name, item: names.append(name) if hasattr(item, "shape") else None)
        for name in names:
            source[name][()]

    begun = time.perf_counter()
    for index in range(k):
        with h5py.File(Path(folder) / f"{index}.weights.h5") as source:
            read_every(source)
    return {"seconds": time.perf_counter() - begun}


def outcome(data: str, seed: int, folder: str) -> dict:
    """Child: train one run with the average of the last K points; did it win?"""
    import numpy as np

    import keepbest

    cfg = {
        "name": f"{data}-{seed}",
        "output_dir": folder,
        "seed": seed,
        "optimizer": {"name": "sgd", "learning_rate": 0.3, "momentum": 0.9},
        "train": {"epochs": 12},
        "checkpoint": {"monitor": "val_loss", "average": {"of": "last_k", "k": K}},
        "model": {"builder": "mlp", "kwargs": {"hidden": [32]}},
    }
    if data == "digits":
        cfg["data"] = {"source": "digits", "validation": {"split": 0.2}, "batch_size": 64}
    else:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(2000, 8)).astype("float32")
        y = (np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + rng.normal(0, 1.0, 2000)).astype("float32")
        path = Path(folder) / f"regression-{seed}.npz"
        np.savez(path, x=x, y=y)
        cfg["data"] = {"source": "npz", "path": str(path), "validation": {"split": 0.2}}
        cfg["loss"] = "mse"
        cfg["optimizer"]["learning_rate"] = 0.05
    record = keepbest.train(cfg).record
    return {"better": record.average.better, "best": record.value, "average": record.average.value}


def measure(quick: bool) -> list[Row]:
    root = scratch("average")
    try:
        sizes = run_child("averaging:make_files", folder=str(root), k=K)
        costs, reads = [], []
        for _ in range(1 if quick else 3):
            reads.append(run_child("averaging:read_all", folder=str(root), k=K)["seconds"])
            costs.append(run_child("averaging:average", folder=str(root), k=K))
        wins = {"digits": [], "regression": []}
        for data in wins:
            for seed in range(2 if quick else SEEDS):
                wins[data].append(
                    run_child("averaging:outcome", data=data, seed=seed, folder=str(root))
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    took, baseline = median([c["seconds"] for c in costs]), median(reads)
    added = median([c["added"] for c in costs])
    largest = sizes["largest"]
    won = "; ".join(
        f"{data} {sum(r['better'] for r in results)}/{len(results)}"
        for data, results in wins.items()
    )
    return [
        Row(
            "average",
            f"averaging {K} kept files of a {sizes['total'] / MIB:.0f} MiB model: time, "
            "against reading the files once (h5py)",
            seconds(baseline),
            seconds(took),
            took / baseline,
        ),
        Row(
            "average",
            f"averaging: peak RSS added, over the largest variable ({largest / MIB:.0f} MiB)",
            mib(largest / MIB),
            mib(added / MIB),
            added / largest,
            "<= 1.0",
            added / largest <= 1.0,
        ),
        Row(
            "average",
            f"average of the last {K} points beats the best (val_loss, SGD, seeds 0..): {won}",
            "",
            "",
        ),
    ]
