"""What real training scripts set, in the config, with the promises kept: custom losses
and metrics, learning-rate schedules, optimizer kwargs (gradient accumulation, EMA,
clipping), mixed precision, the user's callbacks, and a builder's own compile.

Each setting trains a tiny real model; the best reloads and re-measures exactly (on CPU,
measured again by plain Keras in another interpreter where it matters); a SIGTERM in the
middle of an epoch resumes bit for bit, the schedule's step, the accumulators, the
moving averages, the loss scale and the callbacks' counters included.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli, small_config
from keepbest.errors import EXIT_STOPPED
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from keepbest.rundir.resume_store import ResumeStore
from test_resume import assert_same_run, start_training, wait_for_rows, write

TUTORIAL_CODE = REPO / "configs" / "tutorial_code.py"

# Measured again by plain Keras in a new interpreter: model.json, best.weights.h5, the
# custom objects imported from their module, arrays made here from the bundled digits
# (pixels / 16, a channel axis; the validation split as documented: a permutation seeded
# with the seed, the first round(n * 0.2) samples, in file order).
INDEPENDENT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from importlib.resources import files
    run_dir, code_dir, batch_size, policy = sys.argv[1:5]
    sys.path.insert(0, code_dir)
    import tutorial_code
    keras.config.set_dtype_policy(policy)
    with np.load(files("keepbest.datasets") / "digits.npz") as npz:
        x, y = (npz["x"].astype("float32") / 16.0)[..., None], npz["y"].astype("int64")
    order = np.random.default_rng(0).permutation(len(y))
    validation = np.sort(order[: round(len(y) * 0.2)])
    model = keras.models.model_from_json(open(f"{run_dir}/model.json").read())
    model.load_weights(f"{run_dir}/best.weights.h5")
    model.compile(loss=lambda t, p: tutorial_code.focal_loss(t, p, gamma=2.0),
                  metrics=["accuracy", tutorial_code.ConfidentAccuracy()])
    values = model.evaluate(x[validation], y[validation], batch_size=int(batch_size),
                            verbose=0, return_dict=True)
    print(json.dumps(values))
    """
)


def remeasure(run_dir: Path, batch_size: int, policy: str) -> dict[str, float]:
    code_dir = str(TUTORIAL_CODE.parent)
    done = subprocess.run(
        [sys.executable, "-c", INDEPENDENT, str(run_dir), code_dir, str(batch_size), policy],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def with_code(folder: Path, cfg: dict, **modules: str) -> Path:
    """``cfg`` as exp.yaml in ``folder``, beside tutorial_code.py and ``modules``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TUTORIAL_CODE, folder / TUTORIAL_CODE.name)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return write(folder, cfg)


# --------------------------------------------------------------------------- the tutorial


def test_the_tutorial_config_trains_and_its_best_measures_the_same_in_plain_keras(tmp_path):
    """configs/tutorial.yaml: a custom loss (with a kwarg) and metric from a module next
    to the config, a cosine schedule, clipnorm, bf16 mixed precision, a logging callback;
    the custom metric is monitored."""
    config = yaml.safe_load((REPO / "configs" / "tutorial.yaml").read_text())
    config.update(output_dir=str(tmp_path / "runs"))
    config["train"]["epochs"] = 6
    path = with_code(tmp_path, config)
    done = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "runs" / config["name"]
    record = read_record(run_dir)
    assert record.monitor == "val_confident_accuracy" and record.value > 0
    assert record.verified_value == record.value
    rows = read_history(run_dir / "history.csv")
    assert max(row["val_confident_accuracy"] for row in rows) == record.value
    values = remeasure(run_dir, batch_size=64, policy="mixed_bfloat16")
    assert values["confident_accuracy"] == record.value
    best_row = next(row for row in rows if row["epoch"] == record.epoch)
    assert values["loss"] == best_row["val_loss"]  # the focal loss, gamma 2, counted alike

    code = (run_dir / "code.json").read_text()
    assert '"loss"' in code and '"metrics[1]"' in code and '"train.callbacks[0]"' in code
    shown = run_cli("show", str(run_dir))
    assert "CosineDecay(initial_learning_rate=0.003" in shown.stdout, shown.stdout
    assert "tutorial_code:focal_loss(gamma=2.0)" in shown.stdout, shown.stdout
    assert "class weights balanced; mixed_bfloat16; callbacks tutorial_code:LearningRateLog" in (
        shown.stdout
    )
    evaluated = run_cli("evaluate", str(run_dir), cwd=REPO.parent)  # any directory
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{record.value:.6g}" in evaluated.stdout


# --------------------------------------------------------------------------- resume


def optimizer_state_config() -> dict:
    """Every optimizer state a resume must carry: a schedule's step, gradient
    accumulators, EMA averages, fp16 loss scaling; batches of 1 so a signal lands
    mid-epoch."""
    return small_config(
        data={"batch_size": 1},
        model={"builder": "mlp", "kwargs": {"hidden": [16], "dropout": 0.2}},
        optimizer={
            "name": "adam",
            "learning_rate": {
                "class_name": "CosineDecay",
                "config": {"initial_learning_rate": 0.01, "decay_steps": 3000},
            },
            "gradient_accumulation_steps": 3,
            "use_ema": True,
            "ema_momentum": 0.9,
            "clipnorm": 1.0,
        },
        loss={"class_name": "tutorial_code:focal_loss", "config": {"gamma": 2.0}},
        train={"epochs": 3, "mixed_precision": "mixed_float16"},
    )


def callbacks_config() -> dict:
    """The user's callbacks with counters: ReduceLROnPlateau (changes the learning rate,
    counts its patience) and EarlyStopping (ends the run; no restore)."""
    return small_config(
        data={"batch_size": 1},
        model={"builder": "mlp", "kwargs": {"hidden": [16], "dropout": 0.2}},
        optimizer={"name": "adam", "learning_rate": 0.02},
        train={
            "epochs": 6,
            "callbacks": [
                {
                    "class_name": "ReduceLROnPlateau",
                    "config": {"monitor": "loss", "factor": 0.5, "patience": 0, "min_delta": 1},
                },
                {
                    "class_name": "EarlyStopping",
                    "config": {"monitor": "val_loss", "patience": 1, "min_delta": 1},
                },
            ],
        },
    )


CONFIGS = {"optimizer-state": optimizer_state_config, "callbacks": callbacks_config}


@pytest.mark.parametrize("shape", list(CONFIGS))
def test_sigterm_mid_epoch_resumes_bit_identically(tmp_path, shape):
    reference = with_code(tmp_path / "reference", CONFIGS[shape]())
    done = run_cli("train", "--config", str(reference), cwd=reference.parent)
    assert done.returncode == 0, done.stderr
    reference_run = reference.parent / "runs" / "t"

    config = with_code(tmp_path / "interrupted", CONFIGS[shape]())
    run_dir = config.parent / "runs" / "t"
    process = start_training(config)
    wait_for_rows(run_dir, 1, process)
    while ResumeStore(run_dir).latest() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_STOPPED, stderr
    state = ResumeStore(run_dir).latest()
    assert state.progress.batch > 0, stderr  # mid-epoch
    if shape == "callbacks":
        saved = {c["class"]: c["state"] for c in state.manifest.callbacks}
        assert saved["ReduceLROnPlateau"]["wait"] == 0 and "best" in saved["EarlyStopping"]

    resumed = run_cli("train", "--config", str(config), cwd=config.parent)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 2" in resumed.stdout
    assert_same_run(run_dir, reference_run)
    final, expected = ResumeStore(run_dir).latest(), ResumeStore(reference_run).latest()
    assert final.manifest.global_step == expected.manifest.global_step
    assert final.manifest.sha256 == expected.manifest.sha256  # weights + optimizer, bitwise
    if shape == "callbacks":
        # EarlyStopping (min_delta 1: only the first epoch improves) ended the run after
        # epoch 2, and the run says so; ReduceLROnPlateau halved the rate at its end.
        assert final.manifest.stop_kind == "callback"
        assert final.progress.epoch == 2 and "a callback in fit stopped training" in (
            resumed.stdout + resumed.stderr
        )
        again = run_cli("train", "--config", str(config), cwd=config.parent)
        assert again.returncode == 0 and "is complete" in again.stdout, again.stderr
        with np.load(final.weights_path) as arrays:
            rates = [arrays[name] for name in arrays.files if name.startswith("optimizer/")]
        assert any(rate == np.float32(0.02 * 0.5) for rate in rates if rate.dtype == np.float32)


# --------------------------------------------------------------------------- EMA


PROBE = """
import keras
import numpy as np

SEEN = {}


class Probe(keras.callbacks.Callback):
    '''After keepbest's epoch end: the optimizer's moving averages and the raw weights.'''

    def on_epoch_end(self, epoch, logs=None):
        averages = self.model.optimizer._model_variables_moving_average
        SEEN[epoch + 1] = (
            [np.array(v) for v in averages],
            [np.array(v) for v in self.model.trainable_variables],
        )
"""


def test_with_use_ema_the_moving_averages_are_judged_saved_and_reloaded(tmp_path, monkeypatch):
    import keepbest

    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = small_config(
        output_dir=str(tmp_path / "runs"),
        optimizer={"name": "adam", "learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.8},
        train={"epochs": 4, "callbacks": ["probe:Probe"]},
    )
    result = keepbest.train(cfg)
    import probe

    record = result.record
    averages, raw = probe.SEEN[record.epoch]
    stored = []

    def collect(name, item):
        if isinstance(item, h5py.Dataset):
            stored.append(np.array(item))

    with h5py.File(tmp_path / "runs" / "t" / "best.weights.h5") as saved:
        saved.visititems(collect)
    by_shape = lambda arrays: sorted((a.shape, a.tobytes()) for a in arrays)  # noqa: E731
    assert by_shape(stored) == by_shape(averages)  # the EMA weights, bit for bit
    assert by_shape(stored) != by_shape(raw)
    assert record.verified_value == record.value
    reloaded = keepbest.load_best(tmp_path / "runs" / "t", raw_inputs=False)
    weights = [np.array(v) for v in reloaded.trainable_variables]
    assert by_shape(weights) == by_shape(averages)


# --------------------------------------------------------------------------- the builder


COMPILING_BUILDER = """
import keras


def build(input_shape, num_classes):
    model = keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"), keras.layers.Dense(num_classes),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
    )
    return model
"""


def test_a_builder_s_compile_is_used_unless_the_config_sets_one_and_then_it_says_so(tmp_path):
    import keepbest

    cfg = small_config(
        model={"builder": "compiling:build", "kwargs": {}},
        checkpoint={"monitor": "val_top2"},
    )
    for key in ("optimizer", "loss", "metrics"):
        del cfg[key]
    path = with_code(tmp_path, cfg, compiling=COMPILING_BUILDER)
    done = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "replaces the builder's" not in done.stderr
    run_dir = tmp_path / "runs" / "t"
    record = read_record(run_dir)
    assert record.monitor == "val_top2" and record.mode == "max"
    assert record.verified_value == record.value
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["loss"] == "builder" and saved["optimizer"]["name"] == "builder"
    model = keepbest.load_best(run_dir, raw_inputs=False)
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.momentum) == 0.9
    evaluated = run_cli("evaluate", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "top2" in evaluated.stdout and f"{record.value:.6g}" in evaluated.stdout
    again = run_cli("train", "--config", str(path), cwd=tmp_path)  # the same decision again
    assert again.returncode == 0 and "is complete" in again.stdout, again.stderr

    cfg["optimizer"] = {"name": "adam", "learning_rate": 0.01}
    cfg["metrics"] = ["accuracy"]
    cfg["name"] = "configured"
    cfg["checkpoint"] = {"monitor": "val_accuracy"}
    cfg["loss"] = "sparse_categorical_crossentropy"
    path = with_code(tmp_path, cfg)
    done = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "replaces the builder's" in line]
    assert len(warning) == 1, done.stderr
    assert "compiling:build compiled its model (optimizer SGD" in warning[0]
    assert "(optimizer adam, loss sparse_categorical_crossentropy)" in warning[0]
