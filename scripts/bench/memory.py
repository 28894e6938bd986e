"""Target 2: peak memory of keepbest's whole ``train`` against a bare ``model.fit``.

Each side trains the 100M-parameter model for several improving epochs in a fresh
process and reports its peak RSS (VmHWM, the whole process: imports, data, model,
training and, for keepbest, the best saves, resume states and the final reload and
verification). Two stock Keras ways to keep the best run alongside:
``EarlyStopping(restore_best_weights=True)`` (a copy in memory) and
``ModelCheckpoint(save_best_only=True)`` followed by ``load_weights`` (Keras' own save and
load, the same calls keepbest makes). The variants alternate; medians are reported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import Row, median, mib, run_child, scratch, within
from workloads import WORKLOADS, bare_fit, bare_setup, keepbest_config, peak_rss_mib

WORKLOAD = "100M"
EPOCHS = 4
LEARNING_RATE = 0.1
LIMIT = 0.05  # of the model's size
VARIANTS = ("bare", "keepbest", "earlystopping", "modelcheckpoint")


def peak(variant: str, root: str) -> dict:
    """Child: train one variant and return its peak RSS and how many epochs improved."""
    import keras

    import keepbest

    config = keepbest_config(WORKLOADS[WORKLOAD], Path(root), EPOCHS, LEARNING_RATE)
    if variant == "keepbest":
        result = keepbest.train(config)
        improved = sum(int(row["best_saved"]) for row in result.history)
        return {"peak_mib": peak_rss_mib(), "improved": improved}
    _, pipes, model = bare_setup(config)
    best_file = Path(root) / "best.weights.h5"
    callbacks = {
        "bare": [],
        "earlystopping": [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=EPOCHS, restore_best_weights=True
            )
        ],
        "modelcheckpoint": [
            keras.callbacks.ModelCheckpoint(
                best_file, monitor="val_loss", save_best_only=True, save_weights_only=True
            )
        ],
    }[variant]
    bare_fit(model, pipes, EPOCHS, callbacks)
    if variant == "modelcheckpoint":
        model.load_weights(best_file)
    return {"peak_mib": peak_rss_mib(), "improved": None}


def measure(quick: bool) -> list[Row]:
    reps = 1 if quick else 2
    peaks: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    improved: list[int] = []
    for rep in range(reps):
        for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            root = scratch("memory")
            try:
                found = run_child("memory:peak", variant=variant, root=str(root))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            peaks[variant].append(found["peak_mib"])
            if found["improved"] is not None:
                improved.append(found["improved"])
    bare = median(peaks["bare"])
    model_mib = WORKLOADS[WORKLOAD].mib
    rows = []
    labels = {
        "keepbest": f"keepbest.train ({min(improved)} of {EPOCHS} epochs saved a best)",
        "earlystopping": "EarlyStopping(restore_best_weights=True)",
        "modelcheckpoint": "ModelCheckpoint(save_best_only) + load_weights",
    }
    for variant, label in labels.items():
        target = f"<= +{LIMIT:.0%}" if variant == "keepbest" else ""
        extra = median(peaks[variant]) - bare
        rows.append(
            Row(
                "2",
                f"{WORKLOAD}: peak RSS over a bare fit, {label} (ratio: extra / model size)",
                mib(bare),
                f"{mib(median(peaks[variant]))} ({extra:+.0f} MiB)",
                extra / model_mib,
                target,
                within(extra / model_mib, LIMIT) if target else None,
            )
        )
    return rows
