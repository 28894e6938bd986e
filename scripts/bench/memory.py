"""Issue 11 (memory): peak memory of keepbest's whole ``train`` against a bare ``model.fit``.

Each side trains a 100M-parameter model for several improving epochs in a fresh process
and reports its peak RSS (VmHWM, the whole process: imports, data, model, training and,
for keepbest, the best saves, resume states and the final reload and verification).
keepbest runs two ways: its whole ``train``, and the ``keepbest.KeepBest`` callback in a
plain ``model.fit`` (``callback``: the same model, batches and fit call as the bare side,
plus the callback). Two stock Keras ways to keep the best run alongside:
``EarlyStopping(restore_best_weights=True)`` (a copy in memory) and
``ModelCheckpoint(save_best_only=True)`` followed by ``load_weights`` (Keras' own save
and load).

Two models of the same size (100.7M parameters, 384 MiB) whose largest variable differs:
``100M`` (six 4096x4096 kernels, 64 MiB each) and ``100M-wide`` (two 7094x7094 kernels,
192 MiB each). A process that holds a copy of the largest variable at some moment has an
excess that grows with it; keepbest moves large variables between the model and its
files a slice at a time, so its excess should not. The variants alternate; medians are
reported.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from common import Row, median, mib, run_child, scratch, within
from workloads import WORKLOADS, bare_fit, bare_setup, keepbest_config, peak_rss_mib

EPOCHS = 4
LEARNING_RATE = 0.1
LIMIT = 0.05  # of the model's size
GROWTH_LIMIT = 0.10  # extra excess per MiB of largest variable
VARIANTS = {
    "100M": ("bare", "keepbest", "callback", "earlystopping", "modelcheckpoint"),
    "100M-wide": ("bare", "keepbest", "callback", "modelcheckpoint"),
}
KEEPBEST_VARIANTS = ("keepbest", "callback")  # held to LIMIT
LABELS = {
    "keepbest": "keepbest.train",
    "callback": "model.fit with keepbest.KeepBest",
    "earlystopping": "EarlyStopping(restore_best_weights=True)",
    "modelcheckpoint": "ModelCheckpoint(save_best_only) + load_weights",
}


def peak(workload: str, variant: str, root: str) -> dict:
    """Child: train one variant and return its peak RSS and how many epochs improved."""
    import keras

    import keepbest

    config = keepbest_config(WORKLOADS[workload], Path(root), EPOCHS, LEARNING_RATE)
    if variant == "keepbest":
        result = keepbest.train(config)
        improved = sum(int(row["best_saved"]) for row in result.history)
        return {"peak_mib": peak_rss_mib(), "improved": improved}
    _, pipes, model = bare_setup(config)
    best_file = Path(root) / "best.weights.h5"
    run_dir = Path(root) / "callback-run"
    callbacks = {
        "bare": [],
        "callback": [],  # KeepBest, made below (constructing it imports its module)
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
    if variant == "callback":
        callbacks = [keepbest.KeepBest(run_dir, monitor="val_loss")]
    bare_fit(model, pipes, EPOCHS, callbacks)
    if variant == "modelcheckpoint":
        model.load_weights(best_file)
    if variant == "callback":
        with open(run_dir / "history.csv", newline="", encoding="utf-8") as file:
            improved = sum(int(float(row["best_saved"])) for row in csv.DictReader(file))
        return {"peak_mib": peak_rss_mib(), "improved": improved}
    return {"peak_mib": peak_rss_mib(), "improved": None}


def measure(quick: bool) -> list[Row]:
    reps = 1 if quick else 2
    runs = [(workload, variant) for workload, variants in VARIANTS.items() for variant in variants]
    peaks: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    improved: dict[tuple[str, str], list[int]] = {run: [] for run in runs}
    for rep in range(reps):
        for workload, variant in runs if rep % 2 == 0 else runs[::-1]:
            root = scratch("memory")
            try:
                found = run_child("memory:peak", workload=workload, variant=variant, root=str(root))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            peaks[workload, variant].append(found["peak_mib"])
            if found["improved"] is not None:
                improved[workload, variant].append(found["improved"])
    rows = []
    extra: dict[tuple[str, str], float] = {}
    for workload, variants in VARIANTS.items():
        load = WORKLOADS[workload]
        bare = median(peaks[workload, "bare"])
        for variant in variants[1:]:
            extra[workload, variant] = median(peaks[workload, variant]) - bare
            ratio = extra[workload, variant] / load.mib
            held = variant in KEEPBEST_VARIANTS
            target = f"<= +{LIMIT:.0%}" if held else ""
            label = LABELS[variant]
            if held:
                label += f" ({min(improved[workload, variant])} of {EPOCHS} epochs saved a best)"
            rows.append(
                Row(
                    "11",
                    f"{workload} (largest variable {load.largest_mib:.0f} MiB): peak RSS over "
                    f"a bare fit, {label} (ratio: extra / model size)",
                    mib(bare),
                    f"{mib(median(peaks[workload, variant]))} "
                    f"({extra[workload, variant]:+.0f} MiB)",
                    ratio,
                    target,
                    within(ratio, LIMIT) if target else None,
                )
            )
    small, large = WORKLOADS["100M"], WORKLOADS["100M-wide"]
    grown = large.largest_mib - small.largest_mib
    for variant in ("keepbest", "modelcheckpoint"):
        growth = (extra["100M-wide", variant] - extra["100M", variant]) / grown
        keepbest = variant == "keepbest"
        rows.append(
            Row(
                "11",
                f"growth of the excess with the largest variable, {LABELS[variant]}: "
                f"({extra['100M-wide', variant]:+.0f} MiB) - ({extra['100M', variant]:+.0f} MiB) "
                f"over {grown:.0f} MiB more largest variable (ratio: MiB per MiB)",
                "",
                "",
                growth,
                f"<= {GROWTH_LIMIT}" if keepbest else "",
                within(growth, GROWTH_LIMIT) if keepbest else None,
            )
        )
    return rows


# --------------------------------------------------------------------------- trace


def _phase(frame) -> str:
    """Where the main thread is: its innermost keepbest function and the Keras entry point
    (fit, evaluate, save_weights...) it runs under, if any."""
    ours, entry = "", ""
    while frame is not None:
        code, name = frame.f_code, frame.f_globals.get("__name__", "")
        if not ours and name.startswith("keepbest"):
            ours = f"{name.removeprefix('keepbest.')}:{code.co_name}"
        if name.startswith("keras.src.") and code.co_name in KERAS_ENTRIES:
            entry = code.co_name
        frame = frame.f_back
    return f"{ours or '-'} [{entry}]" if entry else ours or "-"


KERAS_ENTRIES = {"fit", "evaluate", "predict", "save_weights", "load_weights", "build"}


def trace(workload: str, variant: str, root: str, interval: float = 0.005) -> dict:
    """Child: train one variant while a thread samples the resident memory and where the
    main thread is; returns the largest RSS seen in each phase."""
    import sys
    import threading
    import time

    main = threading.main_thread().ident
    page = 4096 / 2**20
    samples: dict[str, list[float]] = {}
    done = threading.Event()

    def sample() -> None:
        with open("/proc/self/statm") as statm:
            while not done.is_set():
                statm.seek(0)
                rss = int(statm.read().split()[1]) * page
                phase = _phase(sys._current_frames().get(main))
                samples.setdefault(phase, []).append(rss)
                time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = peak(workload, variant, root)
    done.set()
    sampler.join()
    phases = {phase: max(values) for phase, values in samples.items()}
    return {"peak_mib": result["peak_mib"], "phases": phases}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Where the peak memory is: RSS sampled every 5 ms with the phase "
        "(keepbest function, Keras entry point) the main thread is in."
    )
    parser.add_argument("--trace", choices=sorted(VARIANTS), default="100M")
    parser.add_argument("--variants", nargs="+", default=["bare", "keepbest"])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for variant in args.variants:
        root = scratch("memory-trace")
        try:
            found = run_child("memory:trace", workload=args.trace, variant=variant, root=str(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{args.trace} {variant}: peak RSS {found['peak_mib']:.0f} MiB (VmHWM)")
        ranked = sorted(found["phases"].items(), key=lambda item: -item[1])
        for phase, rss in ranked[: args.top]:
            print(f"  {rss:8.0f} MiB  {phase}")


if __name__ == "__main__":
    main()
