"""Hostile input and faults: nothing a user types can destroy a run, hang, crash, or print
a traceback.

Every row of CASES is one hostile command: the files to lay out in its own folder (beside
a copy of one trained run, ``runs/t``, and of its config, ``train.yaml``), the command,
the exit code and what its one error line says. All cases run the real CLI in
subprocesses, all at once (a module fixture), and each must end with:

- the documented exit code; no traceback, no crash (a signal, a segfault);
- exactly one line on stderr: ``error: ...``, holding the expected fragments;
- the trained run unchanged, byte for byte (a tree hash before and after);
- no temporary file (``.tmp-*``) anywhere, and nothing at the paths it must not create.

Full and read-only disks are small tmpfs mounts (root only; those cases skip elsewhere);
"file too large" is RLIMIT_FSIZE. To add a case, add a row.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli, small_config

RUN = "runs/t"  # every case's copy of the trained run
TRAIN = ("train", "--config", "exp.yaml")


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile command, run in its own folder (the working directory).

    ``files``: path -> bytes, text, or a function that writes the path; ``config``: written
    to exp.yaml (a mapping, or raw YAML text); ``prepare``: anything else, given the folder
    (e.g. damage the run's copy); ``disk``: a tmpfs at ./disk, ``"readonly"`` (remounted
    read-only after ``files``/``prepare``) or ``"full:<KiB>"``; ``fsize``: RLIMIT_FSIZE in
    bytes; ``kept``: run dirs that must be unchanged; ``absent``: paths that must not
    exist afterwards; ``check``: a last look at the folder (None, or what is wrong);
    ``log``: the error line names a traceback log that must exist; ``max_seconds``: the
    command must fail faster than that."""

    id: str
    args: tuple[str, ...]
    code: int
    says: tuple[str, ...]
    files: dict = dataclasses.field(default_factory=dict)
    config: dict | str | None = None
    prepare: Callable[[Path], None] | None = None
    disk: str | None = None
    fsize: int | None = None
    kept: tuple[str, ...] = (RUN,)
    absent: tuple[str, ...] = ()
    needs_image_run: bool = False
    check: Callable[[Path], str | None] | None = None
    log: bool = False
    max_seconds: float | None = None
    heavy: bool = False  # loads TensorFlow (or trains): started first, so the corpus ends sooner


# --------------------------------------------------------------------------- file makers


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def png(seed: int, size: int = 8) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype="uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def truncated_png(seed: int) -> bytes:
    """A PNG that starts right and breaks off: only decoding finds it."""
    whole = png(seed)
    return whole[: len(whole) // 2]


RNG = np.random.default_rng(0)
X = RNG.random((60, 4)).astype("float32")
Y = np.arange(60) % 3
GOOD_NPZ = npz(x=X, y=Y)


def flipped(data: bytes, at: float = 0.5) -> bytes:
    damaged = bytearray(data)
    damaged[int(len(damaged) * at)] ^= 0xFF
    return bytes(damaged)


def npz_config(**sections) -> dict:
    data = {"source": "npz", "path": "d.npz", "validation": {"split": 0.2}, "batch_size": 16}
    return small_config(name="bad", data=data, train={"epochs": 1}, **sections)


def csv_config(target: str = "label") -> dict:
    data = {"source": "csv", "path": "t.csv", "target": target, "validation": {"split": 0.25}}
    return small_config(name="bad", data={**data, "batch_size": 4}, train={"epochs": 1})


def images(classes: dict[str, int], folder: str = "img", extra: dict | None = None) -> dict:
    """``classes``: class name -> number of good 8x8 PNGs; ``extra``: more files."""
    files = {
        f"{folder}/{name}/{i:02d}.png": png(zlib.crc32(f"{name}{i}".encode()))
        for name, count in classes.items()
        for i in range(count)
    }
    return {**files, **(extra or {})}


def image_config(**data) -> dict:
    settings = {
        "source": "image_dir",
        "path": "img",
        "image_size": [8, 8],
        "color_mode": "grayscale",
        "validation": {"split": 0.25},
        "batch_size": 4,
        **data,
    }
    return small_config(name="bad", data=settings, train={"epochs": 1})


def builder_config(code: str, **sections) -> tuple[dict, dict]:
    """A config whose builder is mymodels:build (digits data) and the module's file."""
    source = "import keras\n\n" + textwrap.dedent(code)
    cfg = small_config(
        name="bad", model={"builder": "mymodels:build", "kwargs": {}}, train={"epochs": 1}
    )
    for key, value in sections.items():
        cfg[key] = value
    return cfg, {"mymodels.py": source}


def billion_laughs(levels: int = 9) -> str:
    """YAML whose aliases expand to 9**levels values (about 387 million for 9)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def config_text(cfg: dict, **extra_yaml: str) -> str:
    text = yaml.safe_dump(cfg, sort_keys=False)
    return text + "".join(f"{key}: {value}\n" for key, value in extra_yaml.items())


def replace_with_file(relative: str, content: str = "not a folder\n"):
    def prepare(folder: Path) -> None:
        target = folder / relative
        shutil.rmtree(target)
        target.write_text(content)

    return prepare


def write_into(relative: str, content: str):
    def prepare(folder: Path) -> None:
        (folder / relative).write_text(content)

    return prepare


def run_on_disk(folder: Path) -> None:
    """The trained run (and its config) on the tmpfs at ./disk."""
    shutil.copytree(folder / RUN, folder / "disk" / "runs" / "t", symlinks=True)
    cfg = yaml.safe_load((folder / "train.yaml").read_text())
    cfg["output_dir"] = "disk/runs"
    (folder / "disk.yaml").write_text(yaml.safe_dump(cfg))


def resumable(run: str, replace: tuple[str, str] | None = None):
    """The run that failed mid-training can be resumed: a complete resume state, no lock;
    with ``replace`` (bad file, good file), the same command, run again once the bad file
    is replaced, resumes it and ends."""

    def check(folder: Path) -> str | None:
        from keepbest.rundir.resume_store import ResumeStore
        from keepbest.rundir.status import run_status

        state = ResumeStore(folder / run).latest()
        status = run_status(folder / run)
        if state is None or status.state != "resumable":
            return f"{run}: state {state}, status {status.state}"
        if replace is not None:
            shutil.copy(folder / replace[1], folder / replace[0])
            done = run_cli(*TRAIN, cwd=folder, timeout=300)
            if done.returncode != 0 or "resuming at epoch" not in done.stdout:
                return f"the same command did not resume: exit {done.returncode}\n{done.stderr}"
        return None

    return check


LAMBDA_BUILDER = """
def build(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubled")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
"""
THREE_OUTPUTS = """
def build(input_shape):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
"""
TWO_OUTPUTS = """
def build(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    heads = [keras.layers.Dense(num_classes, activation="softmax")(x) for _ in range(2)]
    return keras.Model(inputs, heads)
"""
WRONG_INPUT = """
def build(num_classes):
    inputs = keras.Input(shape=(5,))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(inputs))
"""
ONE_OUTPUT = """
def build(input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))
"""
FAILS_IN_TRAINING = """
@keras.saving.register_keras_serializable(package="hostile")
class Fragile(keras.layers.Layer):
    def call(self, x, training=None):
        if training:
            raise RuntimeError("this layer breaks in training")
        return x


def build(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = Fragile()(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
"""

NO_RUN_FILES = "keepbest never replaces a run dir or a file inside one, not even with --overwrite"
READ_ONLY = "Read-only file system"
NO_SPACE = "No space left on device"
TOO_LARGE = "File too large"
PREDICT = ("predict", RUN, "--input", "x.npz")
EXPORT = ("export", RUN)
TUNE = ("tune", "train.yaml", "--space", "space.yaml", "--trials", "1")

CASES = [
    # ----------------------------------------------------------------- data files
    Case(
        "npz-not-a-zip",
        TRAIN,
        2,
        ("data.path:", "d.npz is not an .npz archive (it does not start like one)"),
        files={"d.npz": b"these are not the arrays you are looking for"},
        config=npz_config(),
        absent=("runs/bad",),
        max_seconds=30,  # refused before TensorFlow is imported
    ),
    Case(
        "npz-truncated",
        TRAIN,
        2,
        ("data.path:", "d.npz is damaged or truncated"),
        files={"d.npz": GOOD_NPZ[: len(GOOD_NPZ) // 2]},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npz-empty",
        TRAIN,
        2,
        ("d.npz is empty (0 bytes)",),
        files={"d.npz": b""},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npz-damaged-member",
        TRAIN,
        2,
        ("'x' is damaged or truncated",),
        files={"d.npz": flipped(GOOD_NPZ, 0.3)},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npz-pickled-objects",
        TRAIN,
        2,
        ("'y' holds Python objects (pickled), which keepbest never unpickles",),
        files={"d.npz": npz(x=X, y=np.array([{"label": 1}] * 60, dtype=object))},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npz-nan-features",
        TRAIN,
        2,
        ("data.path: 1 samples hold NaN or infinite values (the first is sample 7)",),
        files={"d.npz": npz(x=np.where(np.arange(60)[:, None] == 7, np.nan, X), y=Y)},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npz-rows-differ",
        TRAIN,
        2,
        ("x has 60 rows but y has 50",),
        files={"d.npz": npz(x=X, y=Y[:50])},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "float-labels-with-sparse-loss",
        TRAIN,
        2,
        (
            "loss: sparse_categorical_crossentropy takes class ids (integers), but "
            "data.y_key: 'y' holds floats",
        ),
        files={"d.npz": npz(x=X, y=Y + 0.5)},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "single-class",
        TRAIN,
        2,
        ("data.y_key: 'y': every training label is class 2; a classifier needs two classes",),
        files={"d.npz": npz(x=X, y=np.full(60, 2))},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "single-text-class",
        TRAIN,
        2,
        ("every training label is class 0 ('cat')",),
        files={"d.npz": npz(x=X, y=np.array(["cat"] * 60))},
        config=npz_config(),
        absent=("runs/bad",),
    ),
    Case(
        "class-ids-with-one-hot-loss",
        TRAIN,
        2,
        ("loss: categorical_crossentropy takes one-hot targets", "holds class ids"),
        files={"d.npz": GOOD_NPZ},
        config=npz_config(loss="categorical_crossentropy"),
        absent=("runs/bad",),
    ),
    Case(
        "csv-binary-garbage",
        TRAIN,
        2,
        ("data.path: cannot read", "t.csv"),
        files={"t.csv": bytes(range(256)) * 8},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    Case(
        "csv-header-only",
        TRAIN,
        2,
        ("t.csv needs a header row and at least one data row",),
        files={"t.csv": "a,b,label\n"},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    Case(
        "csv-ragged",
        TRAIN,
        2,
        ("t.csv line 3 has 2 fields, the header has 3",),
        files={"t.csv": "a,b,label\n1,2,0\n3,4\n5,6,1\n"},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    Case(
        "csv-missing-value",
        TRAIN,
        2,
        ("t.csv line 3, column 'b': '' is not a number",),
        files={"t.csv": "a,b,label\n1,2,0\n3,,1\n5,6,1\n"},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    Case(
        "csv-float-target-with-sparse-loss",
        TRAIN,
        2,
        ("takes class ids (integers), but data.target: 'label' holds floats",),
        files={"t.csv": "a,b,label\n" + "".join(f"{i},{i % 3},{i / 7:.3f}\n" for i in range(20))},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    Case(
        "csv-single-class",
        TRAIN,
        2,
        ("data.target: 'label': every training label is class 0 ('dog')",),
        files={"t.csv": "a,b,label\n" + "".join(f"{i},{i % 3},dog\n" for i in range(20))},
        config=csv_config(),
        absent=("runs/bad",),
    ),
    # ----------------------------------------------------------------- images
    Case(
        "image-that-is-text",
        TRAIN,
        2,
        ("img/b/zz.png is not a PNG, JPEG, GIF or BMP image; remove or replace it",),
        files=images({"a": 4, "b": 4}, extra={"img/b/zz.png": "hello, I am not a picture"}),
        config=image_config(),
        absent=("runs/bad",),
    ),
    Case(
        "image-empty-file",
        TRAIN,
        2,
        ("img/a/empty.jpg is empty; remove or replace it",),
        files=images({"a": 4, "b": 4}, extra={"img/a/empty.jpg": b""}),
        config=image_config(),
        absent=("runs/bad",),
    ),
    Case(
        "image-single-class-folder",
        TRAIN,
        2,
        ("every training label is class 0 ('a'); a classifier needs two classes",),
        files=images({"a": 8}),
        config=image_config(),
        absent=("runs/bad",),
    ),
    Case(
        "image-truncated-in-first-batch",  # found by the pre-flight batch: nothing written
        TRAIN,
        2,
        (
            "data.validation.path:",  # the key of the folder it is in
            "val/a/00.png cannot be decoded as an image",
            "remove or replace it",
        ),
        files={
            **images({"a": 4, "b": 4}),
            **images({"a": 1, "b": 2}, folder="val"),
            "val/a/00.png": truncated_png(1),
        },
        config=image_config(validation={"path": "val"}),
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "image-truncated-deep-in-training",  # found mid-training: named, run resumable
        TRAIN,
        2,
        (
            "data.path:",
            "img/b/zz-broken.png cannot be decoded as an image",
            "then run the same command to resume",
        ),
        files={
            **images({"a": 10, "b": 10}),
            **images({"a": 2, "b": 2}, folder="val"),
            "img/b/zz-broken.png": truncated_png(2),
        },
        config={
            **image_config(validation={"path": "val"}, shuffle=False),
            "resume": {"every_steps": 1, "max_overhead": None},
        },
        check=resumable("runs/bad", replace=("img/b/zz-broken.png", "img/b/00.png")),
        heavy=True,
    ),
    Case(
        "predict-images-one-truncated",
        ("predict", "runs/img", "--input", "new", "--output", "p.csv"),
        2,
        ("--input: new/b.png cannot be decoded as an image", "remove or replace it"),
        files={"new/a.png": png(5), "new/b.png": truncated_png(6), "new/c.png": png(7)},
        needs_image_run=True,
        kept=(RUN, "runs/img"),
        absent=("p.csv",),
        heavy=True,
    ),
    Case(
        "evaluate-images-one-truncated",
        ("evaluate", "runs/img", "--data", "new"),
        2,
        ("--data: ", "new/c1/00.png cannot be decoded as an image", "remove or replace it"),
        files={"new/c0/00.png": png(5), "new/c1/00.png": truncated_png(6)},
        needs_image_run=True,
        kept=(RUN, "runs/img"),
        heavy=True,
    ),
    Case(
        "predict-images-one-not-an-image",
        ("predict", "runs/img", "--input", "new", "--output", "p.csv"),
        2,
        ("--input: new/b.png is not a PNG, JPEG, GIF or BMP image",),
        files={"new/a.png": png(5), "new/b.png": "text", "new/c.png": png(7)},
        needs_image_run=True,
        kept=(RUN, "runs/img"),
        absent=("p.csv",),
    ),
    # ----------------------------------------------------------------- builders
    Case(
        "builder-with-a-lambda",
        TRAIN,
        2,
        (
            "model.builder: mymodels:build: the model's layer 'doubled' is a Lambda layer "
            "holding Python code",
        ),
        files=builder_config(LAMBDA_BUILDER)[1],
        config=builder_config(LAMBDA_BUILDER)[0],
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "builder-fewer-outputs-than-classes",
        TRAIN,
        2,
        (
            "model.builder: mymodels:build gives 3 outputs per sample, but data holds class "
            "ids 0 to 9; give the model 10 outputs",
        ),
        files=builder_config(THREE_OUTPUTS)[1],
        config=builder_config(THREE_OUTPUTS)[0],
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "builder-two-outputs",
        TRAIN,
        2,
        ("returns a model with 2 outputs; keepbest trains a model with one output",),
        files=builder_config(TWO_OUTPUTS)[1],
        config=builder_config(TWO_OUTPUTS)[0],
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "builder-input-does-not-fit",
        TRAIN,
        2,
        ("model.builder: the model mymodels:build builds fails on the first batch of data",),
        files=builder_config(WRONG_INPUT)[1],
        config=builder_config(WRONG_INPUT)[0],
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "builder-output-shape-vs-targets",
        TRAIN,
        2,
        ("gives outputs of shape (N, 1), but the targets have shape (N, 3)",),
        files={
            **builder_config(ONE_OUTPUT)[1],
            "d.npz": npz(x=X, y=RNG.random((60, 3)).astype("float32")),
        },
        config={
            **npz_config(loss="mean_squared_error", metrics=[]),
            "model": {"builder": "mymodels:build", "kwargs": {}},
        },
        absent=("runs/bad",),
        heavy=True,
    ),
    Case(
        "builder-breaks-during-training",  # user code fails after the pre-flight: exit 1
        TRAIN,
        1,
        ("unexpected RuntimeError: this layer breaks in training", "the traceback is in"),
        files=builder_config(FAILS_IN_TRAINING)[1],
        config=builder_config(FAILS_IN_TRAINING)[0],
        log=True,
        heavy=True,
    ),
    # ----------------------------------------------------------------- run-dir faults
    Case(
        "resume-replaced-by-a-file",
        ("train", "--config", "train.yaml", "--set", "train.epochs=3"),
        7,
        ("runs/t/resume is not a folder, so the run's resume states are gone",),
        prepare=replace_with_file(f"{RUN}/resume"),
        max_seconds=30,
    ),
    Case(
        "run-dir-is-a-file",
        TRAIN,
        2,
        ("runs/bad is a file, not a run dir",),
        files={"runs/bad": "a file where the run dir goes\n"},
        config=small_config(name="bad"),
        kept=(RUN, "runs/bad"),
    ),
    Case(
        "run-dir-is-someone-elses-folder",
        TRAIN,
        2,
        ("runs/bad exists and is not a keepbest run dir (it holds notes.txt, photos)",),
        files={"runs/bad/notes.txt": "mine\n", "runs/bad/photos/a.txt": "mine too\n"},
        config=small_config(name="bad"),
        kept=(RUN, "runs/bad"),
    ),
    Case(
        "restart-overwrite-would-delete-more-than-the-run",
        ("train", "--config", "train.yaml", "--restart", "--overwrite"),
        2,
        ("runs/t also holds notes.txt, which --overwrite would delete with the run",),
        prepare=write_into(f"{RUN}/notes.txt", "my notes\n"),
    ),
    Case(
        "new-run-named-like-a-run-file",
        ("train", "--config", "train.yaml", "--set", "output_dir=runs/t", "--set", "name=resume"),
        2,
        ("would be runs/t/resume, which belongs to the run dir runs/t",),
    ),
    Case(
        "history-garbage",
        ("plot", RUN, "--out", "c.png"),
        7,
        ("runs/t/history.csv is not a valid history",),
        prepare=write_into(f"{RUN}/history.csv", "epoch,loss\none,two\n"),
        absent=("c.png",),
    ),
    Case(
        "best-json-garbage",
        ("evaluate", RUN),
        7,
        ("runs/t/best.json is not a valid keepbest record",),
        prepare=write_into(f"{RUN}/best.json", "{not json"),
    ),
    Case(
        "data-spec-garbage",
        (*PREDICT, "--output", "p.csv"),
        7,
        ("data_spec.json is not a valid data spec",),
        prepare=write_into(f"{RUN}/data_spec.json", "[1, 2"),
        absent=("p.csv",),
    ),
    Case(
        "model-json-garbage",
        ("export", RUN, "--out", "m.keras"),
        1,
        ("runs/t/model.json cannot be deserialized",),
        prepare=write_into(f"{RUN}/model.json", '{"class_name": "Nonsense"}'),
        absent=("m.keras",),
        heavy=True,
    ),
    Case(
        "config-yaml-gone",
        (*PREDICT, "--output", "p.csv"),
        2,
        ("runs/t/config.yaml: config file not found",),
        prepare=lambda folder: (folder / RUN / "config.yaml").unlink(),
        absent=("p.csv",),
    ),
    # ----------------------------------------------------------------- the overwrite rule
    Case(
        "export-savedmodel-over-the-run-dir",
        (*EXPORT, "--format", "savedmodel", "--out", RUN, "--overwrite"),
        2,
        ("--out: runs/t is a run dir", NO_RUN_FILES),
    ),
    Case(
        "export-over-resume-states",
        (*EXPORT, "--format", "savedmodel", "--out", f"{RUN}/resume", "--overwrite"),
        2,
        ("--out: runs/t/resume is inside the run dir runs/t", NO_RUN_FILES),
    ),
    Case(
        "export-new-file-inside-the-run-dir",
        (*EXPORT, "--out", f"{RUN}/model.keras"),
        2,
        ("--out: runs/t/model.keras is inside the run dir runs/t",),
        absent=(f"{RUN}/model.keras",),
    ),
    Case(
        "export-over-the-folder-of-all-runs",
        (*EXPORT, "--format", "savedmodel", "--out", "runs", "--overwrite"),
        2,
        ("--out: runs holds the run dir runs/t",),
    ),
    Case(
        "export-over-another-run",
        (*EXPORT, "--format", "savedmodel", "--out", "other", "--overwrite"),
        2,
        ("--out: other is a run dir",),
        prepare=lambda folder: shutil.copytree(folder / RUN, folder / "other"),
        kept=(RUN, "other"),
    ),
    Case(
        "export-over-a-file-without-overwrite",
        (*EXPORT, "--out", "m.keras"),
        2,
        ("--out: m.keras exists; choose another path, or pass --overwrite",),
        files={"m.keras": "precious"},
        kept=(RUN, "m.keras"),
    ),
    Case(
        "export-file-onto-a-folder",
        (*EXPORT, "--out", "dir.keras", "--overwrite"),
        2,
        ("--out: dir.keras is a folder; give a file name",),
        files={"dir.keras/keep.txt": "mine"},
        kept=(RUN, "dir.keras"),
    ),
    Case(
        "export-savedmodel-over-a-foreign-folder",
        (*EXPORT, "--format", "savedmodel", "--out", "photos", "--overwrite"),
        2,
        ("--out: photos is a folder but not a SavedModel",),
        files={"photos/a.jpg": "mine"},
        kept=(RUN, "photos"),
    ),
    Case(
        "export-missing-folder",
        (*EXPORT, "--out", "nope/m.keras"),
        2,
        ("--out: the folder nope does not exist",),
    ),
    Case(
        "export-folder-is-a-file",
        (*EXPORT, "--out", "x.npz/m.keras"),
        2,
        ("--out: x.npz is a file, not a folder",),
    ),
    Case(
        "export-wrong-suffix",
        (*EXPORT, "--out", "m.h5"),
        2,
        ("--out: m.h5 must end in .keras for --format keras",),
    ),
    Case(
        "predict-over-the-run-history",
        (*PREDICT, "--output", f"{RUN}/history.csv", "--overwrite"),
        2,
        ("--output: runs/t/history.csv is inside the run dir runs/t", NO_RUN_FILES),
    ),
    Case(
        "predict-output-is-the-input",
        (*PREDICT, "--output", "./x.npz", "--overwrite"),
        2,
        ("--output: x.npz is the input x.npz; write the output to another file",),
        kept=(RUN, "x.npz"),
    ),
    Case(
        "predict-output-exists",
        (*PREDICT, "--output", "p.csv"),
        2,
        ("--output: p.csv exists; choose another path, or pass --overwrite",),
        files={"p.csv": "precious\n"},
        kept=(RUN, "p.csv"),
    ),
    Case(
        "predict-output-is-a-folder",
        (*PREDICT, "--output", "out.csv", "--overwrite"),
        2,
        ("Invalid value for '--output': File 'out.csv' is a directory",),
        files={"out.csv/keep.txt": "mine"},
        kept=(RUN, "out.csv"),
    ),
    Case(
        "predict-output-through-a-symlink-into-the-run",
        (*PREDICT, "--output", "link.csv", "--overwrite"),
        2,
        ("--output: link.csv is inside the run dir runs/t",),
        prepare=lambda folder: (folder / "link.csv").symlink_to(folder / RUN / "history.csv"),
    ),
    Case(
        "predict-missing-folder",
        (*PREDICT, "--output", "nope/p.csv"),
        2,
        ("--output: the folder nope does not exist",),
    ),
    Case(
        "predict-wrong-suffix",
        (*PREDICT, "--output", "p.txt"),
        2,
        ("--output: p.txt must end in .npz or .csv",),
    ),
    Case(
        "predict-input-not-a-zip",
        ("predict", RUN, "--input", "bad.npz", "--output", "p.csv"),
        2,
        ("--input: bad.npz is not an .npz archive",),
        files={"bad.npz": "x,y\n1,2\n"},
        absent=("p.csv",),
        max_seconds=30,  # refused before TensorFlow is imported
    ),
    Case(
        "predict-input-truncated",
        ("predict", RUN, "--input", "bad.npz", "--output", "p.csv"),
        2,
        ("--input: bad.npz is damaged or truncated",),
        files={"bad.npz": GOOD_NPZ[:-30]},
        absent=("p.csv",),
    ),
    Case(
        "predict-input-pickled",
        ("predict", RUN, "--input", "bad.npz", "--output", "p.csv"),
        2,
        ("holds Python objects (pickled), which keepbest never unpickles",),
        files={"bad.npz": npz(x=np.array([None] * 4, dtype=object))},
        absent=("p.csv",),
    ),
    Case(
        "predict-input-wrong-shape",
        ("predict", RUN, "--input", "flat.npz", "--output", "p.csv"),
        2,
        ("the model expects input of shape (N, 8, 8), got (60, 4)",),
        files={"flat.npz": npz(x=X)},
        absent=("p.csv",),
    ),
    Case(
        "predict-keep-unknown-column",
        ("predict", RUN, "--input", "in.csv", "--output", "p.csv", "--keep", "id,nmae"),
        2,
        (
            "--keep: in.csv has no column 'nmae'; its columns are id, name, a, b; did you mean "
            "'name'?",
        ),
        files={"in.csv": "id,name,a,b\n1,x,0,0\n"},
        absent=("p.csv",),
        max_seconds=30,  # refused before TensorFlow is imported
    ),
    Case(
        "plot-over-the-run-history",
        ("plot", RUN, "--out", f"{RUN}/history.csv", "--overwrite"),
        2,
        ("--out: runs/t/history.csv is inside the run dir runs/t", NO_RUN_FILES),
    ),
    Case(
        "plot-output-exists",
        ("plot", RUN, "--out", "c.png"),
        2,
        ("--out: c.png exists; choose another path, or pass --overwrite",),
        files={"c.png": "precious"},
        kept=(RUN, "c.png"),
    ),
    Case(
        "plot-onto-a-folder",
        ("plot", RUN, "--out", "runs", "--overwrite"),
        2,
        ("--out: runs is a folder; give a file name",),
    ),
    Case(
        "plot-not-a-run",
        ("plot", "empty"),
        4,
        ("empty is not a keepbest run dir",),
        files={"empty/readme.txt": "nothing here"},
        absent=("empty/curves.png",),
    ),
    # ----------------------------------------------------------------- full and read-only disks
    Case(
        "train-into-a-read-only-folder",
        ("train", "--config", "train.yaml", "--set", "output_dir=disk/runs"),
        6,
        ("cannot write disk/runs/t", READ_ONLY),
        disk="readonly",
        absent=("disk/runs",),
        max_seconds=30,  # refused before TensorFlow is imported
    ),
    Case(
        "resume-a-run-on-a-read-only-disk",
        ("train", "--config", "disk.yaml", "--set", "train.epochs=3"),
        6,
        ("cannot write disk/runs/t", READ_ONLY),
        prepare=run_on_disk,
        disk="readonly",
        kept=(RUN, "disk/runs/t"),
    ),
    Case(
        "plot-into-a-read-only-run",
        ("plot", "disk/runs/t"),
        6,
        ("cannot write disk/runs/t/curves.png", READ_ONLY),
        prepare=run_on_disk,
        disk="readonly",
        kept=(RUN, "disk/runs/t"),
    ),
    Case(
        "export-to-a-read-only-disk",
        (*EXPORT, "--out", "disk/m.keras"),
        6,
        ("cannot write disk/m.keras", READ_ONLY),
        disk="readonly",
    ),
    Case(
        "predict-to-a-read-only-disk",
        (*PREDICT, "--output", "disk/p.csv"),
        6,
        ("cannot write disk/p.csv", READ_ONLY),
        disk="readonly",
    ),
    Case(
        "train-onto-a-full-disk",
        ("train", "--config", "train.yaml", "--set", "output_dir=disk/runs"),
        6,
        ("cannot write", "disk/runs/t/", NO_SPACE),
        disk="full:12",
        heavy=True,
    ),
    Case(
        "export-onto-a-full-disk",
        (*EXPORT, "--out", "disk/m.keras"),
        6,
        ("cannot write disk/m.keras", NO_SPACE, "nothing there was changed"),
        disk="full:16",
        absent=("disk/m.keras",),
        heavy=True,
    ),
    Case(
        "predict-onto-a-full-disk",
        ("predict", RUN, "--input", "many.npz", "--output", "disk/p.csv"),
        6,
        ("cannot write disk/p.csv", NO_SPACE),
        files={"many.npz": npz(x=np.tile(np.arange(64).reshape(1, 8, 8) % 17, (400, 1, 1)))},
        disk="full:16",
        absent=("disk/p.csv",),
        heavy=True,
    ),
    Case(
        "plot-onto-a-full-disk",
        ("plot", RUN, "--out", "disk/c.png"),
        6,
        ("cannot write disk/c.png", NO_SPACE),
        disk="full:4",
        absent=("disk/c.png",),
    ),
    Case(
        "first-best-save-too-large",  # HDF5 failing mid-write: a clean exit, no segfault
        ("train", "--config", "exp.yaml"),
        6,
        (
            "could not save the best checkpoint of step 12 (epoch 1)",
            TOO_LARGE,
            "no best was saved before",
        ),
        config=small_config(name="big", train={"epochs": 1}),
        fsize=20_400,  # above the first resume state (19.7 KB), below the best (21.0 KB)
        check=resumable("runs/big"),
        heavy=True,
    ),
    Case(
        "predict-file-too-large",
        (*PREDICT, "--output", "p.csv"),
        6,
        ("cannot write p.csv", TOO_LARGE),
        fsize=200,
        absent=("p.csv",),
        heavy=True,
    ),
    # ----------------------------------------------------------------- command-line misuse
    Case("unknown-command", ("trian",), 2, ("No such command 'trian'",)),
    Case("unknown-option", (*PREDICT, "--outptu", "p.csv"), 2, ("No such option '--outptu'",)),
    Case("missing-option", PREDICT, 2, ("Missing option '--output'",)),
    Case(
        "batch-size-zero",
        (*PREDICT, "--output", "p.csv", "--batch-size", "0"),
        2,
        ("Invalid value for '--batch-size': 0 is not in the range x>=1",),
    ),
    Case("show-a-file", ("show", "x.npz"), 2, ("'x.npz' is a file",)),
    Case(
        "input-missing", ("predict", RUN, "--input", "no.npz", "--output", "p.csv"), 2, ("no.npz",)
    ),
    Case(
        "evaluate-a-folder-that-is-no-run",
        ("evaluate", "empty"),
        4,
        ("empty has no best checkpoint yet",),
        files={"empty/readme.txt": "nothing here"},
        max_seconds=30,  # refused before TensorFlow is imported
    ),
    Case("config-is-a-folder", ("train", "--config", "runs"), 2, ("'runs' is a directory",)),
    Case(
        "overwrite-without-restart",
        ("train", "--config", "train.yaml", "--overwrite"),
        2,
        ("--overwrite only goes with --restart",),
    ),
    Case(
        "sweep-index-out-of-range",
        ("sweep", "train.yaml", "--grid", "grid.yaml", "--index", "7"),
        2,
        ("--index 7: the sweep has 2 runs (0..1)",),
        files={"grid.yaml": "optimizer.learning_rate: [0.01, 0.02]\n"},
    ),
    Case(
        "sweep-where-a-file-is",
        ("sweep", "exp.yaml", "--grid", "grid.yaml", "--dry-run"),
        2,
        ("run 1/1 (learning_rate=0.01): exp.yaml: output_dir: is a file, not a folder",),
        files={"grid.yaml": "optimizer.learning_rate: [0.01]\n", "runs/bad": "a file\n"},
        config=small_config(name="bad"),
        kept=(RUN, "runs/bad"),
    ),
    Case(
        "tune-study-inside-a-run-dir",
        (*TUNE, "--study", "resume", "--set", "output_dir=runs/t"),
        2,
        ("would be runs/t/resume, which belongs to the run dir runs/t",),
        files={"space.yaml": "optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n"},
    ),
    Case(
        "tune-study-in-someone-elses-folder",
        (*TUNE, "--study", "photos"),
        2,
        ("--study: runs/photos exists and is not a study's folder (it holds a.jpg)",),
        files={
            "space.yaml": "optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n",
            "runs/photos/a.jpg": "mine",
        },
        kept=(RUN, "runs/photos"),
    ),
    # ----------------------------------------------------------------- YAML abuse
    Case(
        "billion-laughs-in-model-kwargs",
        ("train", "--config", "exp.yaml", "--print-config"),
        2,
        ("exp.yaml: invalid YAML: its aliases (*name) expand it to", "more than 100,000 beyond"),
        config=billion_laughs() + "name: bad\ndata: {source: digits}\nmodel:\n"
        "  builder: mlp\n  kwargs: {hidden: *a8}\n",
        max_seconds=20,  # minutes and gigabytes before the bound
    ),
    Case(
        "billion-laughs-in-a-set-value",
        ("train", "--config", "train.yaml", "--set", "model.kwargs.extra=" + billion_laughs()),
        2,
        ("--set model.kwargs.extra: value 'a0: &a0 [lol", "invalid YAML: its aliases"),
        max_seconds=20,
    ),
    Case(
        "billion-laughs-in-a-grid",
        ("sweep", "train.yaml", "--grid", "grid.yaml", "--dry-run"),
        2,
        ("grid.yaml: invalid YAML: its aliases (*name) expand it to",),
        files={"grid.yaml": billion_laughs() + "model.kwargs.hidden: [*a8]\n"},
        max_seconds=20,
    ),
    Case(
        "alias-inside-its-own-anchor",
        TRAIN,
        2,
        ("invalid YAML: an alias refers to the value that holds it (a cycle)",),
        config="name: bad\ndata: {source: digits}\nmodel: {builder: mlp, kwargs: &k {me: *k}}\n",
    ),
    Case(
        "nested-ten-thousand-deep",
        TRAIN,
        2,
        ("line 1, column 108: invalid YAML: nested more than 100 levels deep",),
        config="extra: " + "[" * 10_000 + "]" * 10_000 + "\n",
        max_seconds=20,
    ),
    Case(
        "nested-deep-in-blocks",
        TRAIN,
        2,
        ("invalid YAML: nested more than 100 levels deep",),
        config="".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v\n",
    ),
    Case(
        "yaml-python-tag",
        TRAIN,
        2,
        ("invalid YAML: could not determine a constructor for the tag",),
        config="name: !!python/object/apply:os.system ['touch pwned']\n",
        absent=("pwned",),
    ),
    Case(
        "yaml-binary",
        TRAIN,
        2,
        ("exp.yaml:",),
        files={"exp.yaml": bytes(range(256))},
    ),
]


# ------------------------------------------------- compile settings (losses .. callbacks)

MY_CODE = """
import keras


def focal(y_true, y_pred, gamma=2.0):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


class NotAMetric:
    pass


def needs_nothing():
    return 1
"""


def compile_case(id: str, says: tuple[str, ...], code: int = 2, **sections) -> Case:
    """A config whose compile settings (or callbacks) are wrong: refused before any run
    dir exists; ``mine.py`` (MY_CODE) lies beside it."""
    cfg = small_config(name="bad", train={"epochs": 1})
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if key in ("optimizer", "train") else value
    return Case(id, TRAIN, code, says, config=cfg, files={"mine.py": MY_CODE}, absent=("runs/bad",))


SCHEDULE = {"class_name": "CosineDecay", "config": {"initial_learning_rate": 0.01}}

CASES += [
    compile_case("loss-unknown-name", ("loss: unknown Keras loss 'focall'",), loss="focall"),
    compile_case(
        "loss-module-missing",
        ("loss: no module named 'losses' (looked in",),
        loss="losses:focal",
    ),
    compile_case(
        "loss-function-misspelt",
        ("loss: module 'mine' has no function 'focl'; did you mean 'focal'?",),
        loss="mine:focl",
    ),
    compile_case(
        "loss-mapping-with-another-key",
        ("loss: a Keras object as a mapping takes class_name and config (unknown key 'cfg')",),
        loss={"class_name": "mine:focal", "cfg": {"gamma": 1}},
    ),
    compile_case(
        "loss-kwarg-misspelt",
        ("loss.config.gama: focal() has no argument 'gama'; did you mean 'gamma'?",),
        loss={"class_name": "mine:focal", "config": {"gama": 1}},
    ),
    compile_case(
        "loss-config-not-a-mapping",
        ("loss: config must be a mapping of the object's keyword arguments",),
        loss={"class_name": "Huber", "config": [1, 2]},
    ),
    compile_case(
        "metric-class-misspelt",
        ("metrics[1]: unknown Keras metric class 'AUCC'; did you mean 'AUC'?",),
        metrics=["accuracy", {"class_name": "AUCC"}],
    ),
    compile_case(
        "metric-is-not-a-metric",
        ("metrics[0]: mine:NotAMetric made a NotAMetric, not a Keras metric",),
        metrics=["mine:NotAMetric"],
    ),
    compile_case(
        "schedule-misspelt",
        ("optimizer.learning_rate: unknown Keras schedule class 'CosineDecy'; did you mean",),
        optimizer={"learning_rate": {**SCHEDULE, "class_name": "CosineDecy"}},
    ),
    compile_case(
        "schedule-missing-argument",
        ("optimizer.learning_rate.config: CosineDecay() needs argument 'decay_steps'",),
        optimizer={"learning_rate": SCHEDULE},
    ),
    compile_case(
        "schedule-is-a-callback",
        (
            "optimizer.learning_rate: unknown Keras schedule class 'ReduceLROnPlateau'; "
            "known: CosineDecay, CosineDecayRestarts, ExponentialDecay, InverseTimeDecay, "
            "PiecewiseConstantDecay, PolynomialDecay (or 'module:Class' for your own)",
        ),
        optimizer={"learning_rate": {"class_name": "ReduceLROnPlateau"}},
    ),
    compile_case(
        "learning-rate-a-word",
        ("optimizer.learning_rate: expected a number, a schedule {class_name: CosineDecay",),
        optimizer={"learning_rate": "fast"},
    ),
    compile_case(
        "learning-rate-infinite",
        ("optimizer.learning_rate: must be a finite number greater than 0",),
        optimizer={"learning_rate": float("inf")},
    ),
    compile_case(
        "accumulation-of-one-step",
        ("optimizer: Adam(", "gradient_accumulation_steps` must be an integer >= 2"),
        optimizer={"gradient_accumulation_steps": 1},
    ),
    compile_case(
        "optimizer-kwarg-misspelt",
        ("optimizer.clipnrom: Adam has no argument 'clipnrom'; did you mean 'clipnorm'?",),
        optimizer={"clipnrom": 1.0},
    ),
    compile_case(
        "optimizer-kwarg-nan",
        ("optimizer.weight_decay must be a finite number (got nan)",),
        optimizer={"weight_decay": float("nan")},
    ),
    compile_case(
        "callback-modelcheckpoint",
        ("train.callbacks[0]: ModelCheckpoint: keepbest already saves the best",),
        train={"callbacks": [{"class_name": "ModelCheckpoint", "config": {"filepath": "m.keras"}}]},
    ),
    compile_case(
        "callback-backup-and-restore",
        ("train.callbacks[0]: BackupAndRestore: keepbest already resumes runs",),
        train={"callbacks": [{"class_name": "BackupAndRestore", "config": {"backup_dir": "b"}}]},
    ),
    compile_case(
        "callback-early-stopping-restoring",
        ("train.callbacks[0]: EarlyStopping(restore_best_weights=True) keeps a copy",),
        train={
            "callbacks": [{"class_name": "EarlyStopping", "config": {"restore_best_weights": True}}]
        },
    ),
    compile_case(
        "callback-sets-a-scheduled-rate",
        ("train.callbacks[0]: ReduceLROnPlateau sets the learning rate, but",),
        optimizer={
            "learning_rate": {**SCHEDULE, "config": {**SCHEDULE["config"], "decay_steps": 9}}
        },
        train={"callbacks": ["ReduceLROnPlateau"]},
    ),
    compile_case(
        "callback-misspelt",
        ("train.callbacks[0]: unknown Keras callback class 'CSVLoger'; did you mean 'CSVLogger'?",),
        train={"callbacks": ["CSVLoger"]},
    ),
    compile_case(
        "callback-a-function",
        ("train.callbacks[0]: mine:needs_nothing made a int, not a Keras callback",),
        train={"callbacks": ["mine:needs_nothing"]},
    ),
    compile_case(
        "callback-kwarg-misspelt",
        ("train.callbacks[0].config.patince: ReduceLROnPlateau() has no argument 'patince'",),
        train={"callbacks": [{"class_name": "ReduceLROnPlateau", "config": {"patince": 2}}]},
    ),
    compile_case(
        "mixed-precision-unknown",
        ("train.mixed_precision: must be one of mixed_float16, mixed_bfloat16 (got 'float16')",),
        train={"mixed_precision": "float16"},
    ),
    compile_case(
        "custom-metric-without-a-direction",
        ("checkpoint.mode: cannot tell whether 'val_focal' should go up or down",),
        metrics=["mine:focal"],
        checkpoint={"monitor": "val_focal"},
    ),
]

# ------------------------------------------ user code that exits, numbers that are not

EXITING = """
import sys

import keras


def build(input_shape, num_classes):
    sys.exit(0)


def load():
    sys.exit(3)


class Quitter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        sys.exit(0)


class QuitsWhenMade(keras.losses.Loss):
    def __init__(self):
        sys.exit("no")
"""


def exiting_case(id: str, says: tuple[str, ...], code: int = 2, absent=True, **sections):
    cfg = small_config(name="bad", train={"epochs": 1})
    cfg.update(sections)
    return Case(
        id,
        TRAIN,
        code,
        says,
        config=cfg,
        files={"quits.py": EXITING},
        absent=("runs/bad",) if absent else (),
    )


def forge_manifests(folder: Path) -> None:
    """Point every resume manifest at the run's best.weights.h5, with its checksum: a
    state whose weights lie outside resume/ (a forged or damaged manifest)."""
    import json

    run = folder / RUN
    best = run / "best.weights.h5"
    for path in (run / "resume").glob("state-*.json"):
        manifest = json.loads(path.read_text())
        manifest["weights_file"] = "../best.weights.h5"
        manifest["sha256"] = hashlib.sha256(best.read_bytes()).hexdigest()
        path.write_text(json.dumps(manifest))


CASES += [
    Case(
        "forged-manifests-point-outside-resume",
        ("train", "--config", "train.yaml", "--set", "train.epochs=3"),
        7,
        ("names '../best.weights.h5', not its own state-", "start over with --restart"),
        prepare=forge_manifests,
        heavy=True,
    ),
    exiting_case(
        "builder-calls-sys-exit",
        ("model.builder: quits:build failed: it called sys.exit(0) (at quits.py:8); return",),
        model={"builder": "quits:build", "kwargs": {}},
    ),
    exiting_case(
        "factory-calls-sys-exit",
        ("data.factory: quits:load failed: it called sys.exit(3) (at quits.py:12)",),
        data={"source": "python", "factory": "quits:load"},
        checkpoint={"monitor": "val_loss"},
    ),
    exiting_case(
        "loss-class-calls-sys-exit",
        ("loss: making QuitsWhenMade failed: it called sys.exit('no') (at quits.py:22)",),
        loss="quits:QuitsWhenMade",
    ),
    exiting_case(
        "callback-calls-sys-exit-in-fit",
        (
            "user code (a callback, a custom layer or metric) stopped keepbest: it called "
            "sys.exit(0) (at quits.py:17)",
            "what was saved is intact, run the same command to resume",
        ),
        code=1,
        absent=False,
        train={"epochs": 1, "callbacks": ["quits:Quitter"]},
    ),
    compile_case(
        "baseline-nan",
        ("checkpoint.baseline: Input should be a finite number (got nan)",),
        checkpoint={"monitor": "val_loss", "baseline": float("nan")},
    ),
    compile_case(
        "min-delta-infinite",
        ("checkpoint.min_delta: Input should be a finite number (got inf)",),
        checkpoint={"monitor": "val_loss", "min_delta": float("inf")},
    ),
    *(
        Case(
            f"tune-storage-{name}",
            (*TUNE, "--study", "s", "--storage", storage),
            2,
            (says,),
            files={"space.yaml": "optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n"},
            absent=("runs/s",),
        )
        for name, storage, says in (
            (
                "journal-in-a-run",
                "runs/t/optuna.journal",
                "--storage: runs/t/optuna.journal is inside the run dir runs/t",
            ),
            (
                "sqlite-in-a-run",
                "sqlite:///runs/t/study.db",
                "--storage: runs/t/study.db is inside the run dir runs/t",
            ),
            (
                "the-run-s-lock",
                "runs/t/.lock",
                "--storage: runs/t/.lock is inside the run dir runs/t",
            ),
        )
    ),
    Case(
        "tune-seed-negative",
        (*TUNE, "--study", "s", "--seed", "-1"),
        2,
        ("Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295",),
        files={"space.yaml": "optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n"},
        absent=("runs/s",),
    ),
    compile_case(
        "validation-split-nan",
        ("data.validation.split: Input should be a finite number (got nan)",),
        data={"source": "digits", "validation": {"split": float("nan")}, "batch_size": 64},
    ),
]


# ------------------------------------ round three: special files, hangs, lengths, forgeries

SPACE = {"space.yaml": "optimizer.learning_rate: {log_uniform: [0.001, 0.1]}\n"}
NAME_MAX = "(NAME_MAX): choose a shorter one"
PATH_MAX = "(PATH_MAX): choose a shorter one"
NO_PIPES = "(keepbest opens no pipe, socket or device: reading one could block)"
LONG_NAME = "n" * 300
LONG_PATH = ("d" * 200 + "/") * 25  # 5025 characters, each part within NAME_MAX
NOT_UTF8 = "\udcff"  # the byte 0xff in a file name, as Python passes it on


def fifo(name: str):
    return lambda folder: os.mkfifo(folder / name)


def unix_socket(name: str):
    """A socket file at ``name`` (bound through /proc/self/fd: a socket's path is short)."""

    def prepare(folder: Path) -> None:
        import socket

        fd = os.open(folder, os.O_RDONLY)
        try:
            with socket.socket(socket.AF_UNIX) as server:
                server.bind(f"/proc/self/fd/{fd}/{name}")
        finally:
            os.close(fd)

    return prepare


def not_utf8(name: bytes, content: bytes = GOOD_NPZ):
    """A file whose name is bytes that are not UTF-8 (b'\xff.npz')."""

    def prepare(folder: Path) -> None:
        with open(os.fsencode(folder) + b"/" + name, "wb") as handle:
            handle.write(content)

    return prepare


def _silent_server() -> str:
    """An HTTP address that takes connections and never answers (the kernel accepts
    them into the backlog; nobody reads): a tracking server that hangs."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    _KEEP.append(server)
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def _closed_port() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


_KEEP: list = []
SILENT = _silent_server()


def mlflow_config(uri: str) -> dict:
    return small_config(name="bad", train={"epochs": 1}, logging={"mlflow": {"tracking_uri": uri}})


def million_runs(**last: list) -> str:
    """A grid of 10**6 runs (six keys of ten values); ``last``: values appended to a key."""
    grid = {
        "optimizer.learning_rate": [round(0.001 * i, 4) for i in range(1, 11)],
        "model.kwargs.hidden": [[i] for i in range(1, 11)],
        "data.batch_size": list(range(10, 20)),
        "seed": list(range(10)),
        "train.epochs": list(range(1, 11)),
        "checkpoint.min_delta": [round(0.0001 * i, 5) for i in range(10)],
    }
    for key, values in last.items():
        key = key.replace("__", ".")
        grid[key] = grid[key][: 10 - len(values)] + values
    return yaml.safe_dump(grid, sort_keys=False)


def torn_journal(study: str) -> str:
    """An Optuna journal whose last append was cut short (no end of line)."""
    first = {"op_code": 0, "worker_id": "w", "study_name": study, "directions": [1]}
    return json.dumps(first) + '\n{"op_code": 4, "worker_id": "w", "study_id'


def forge_record(**changes):
    """Change fields of the run's best.json, as a forger (or a broken disk) would."""

    def prepare(folder: Path) -> None:
        path = folder / RUN / "best.json"
        record = json.loads(path.read_text())
        record.update(changes)
        path.write_text(json.dumps(record))

    return prepare


def sqlite_study(study: str):
    """A study folder whose study.json names an SQLite file that is not there."""

    def prepare(folder: Path) -> None:
        (folder / "runs" / study).mkdir(parents=True)
        storage = f"sqlite:///{folder / 'runs' / study / 'gone.db'}"
        (folder / "runs" / study / "study.json").write_text(
            json.dumps({"study": study, "storage": storage})
        )

    return prepare


SPECIAL_INPUTS = [
    # (id, command, what it is, prepare or None, absent)
    (
        "predict-input-fifo-npz",
        (*PREDICT[:3], "f.npz", "--output", "p.csv"),
        "--input: f.npz is a named pipe (FIFO)",
        fifo("f.npz"),
    ),
    (
        "predict-input-fifo-csv",
        (*PREDICT[:3], "f.csv", "--output", "p.csv"),
        "--input: f.csv is a named pipe (FIFO)",
        fifo("f.csv"),
    ),
    (
        "predict-input-dev-zero",
        (*PREDICT[:3], "/dev/zero", "--output", "p.csv"),
        "--input: /dev/zero is a character device",
        None,
    ),
    (
        "predict-input-socket",
        (*PREDICT[:3], "s.npz", "--output", "p.csv"),
        "--input: s.npz is a socket",
        unix_socket("s.npz"),
    ),
    (
        "evaluate-data-fifo",
        ("evaluate", RUN, "--data", "f.npz"),
        "--data: f.npz is a named pipe (FIFO)",
        fifo("f.npz"),
    ),
    (
        "evaluate-data-dev-null",
        ("evaluate", RUN, "--data", "/dev/null"),
        "--data: /dev/null is a character device",
        None,
    ),
    (
        "train-config-fifo",
        ("train", "--config", "c.yaml"),
        "--config: c.yaml is a named pipe (FIFO)",
        fifo("c.yaml"),
    ),
    (
        "train-config-dev-zero",
        ("train", "--config", "/dev/zero"),
        "--config: /dev/zero is a character device",
        None,
    ),
    (
        "sweep-grid-fifo",
        ("sweep", "train.yaml", "--grid", "g.yaml", "--dry-run"),
        "--grid: g.yaml is a named pipe (FIFO)",
        fifo("g.yaml"),
    ),
    (
        "sweep-config-socket",
        ("sweep", "c.yaml", "--grid", "g.yaml"),
        "CONFIG: c.yaml is a socket",
        unix_socket("c.yaml"),
    ),
    (
        "tune-space-fifo",
        ("tune", "train.yaml", "--space", "f.yaml", "--trials", "1"),
        "--space: f.yaml is a named pipe (FIFO)",
        fifo("f.yaml"),
    ),
    (
        "tune-config-dev-zero",
        ("tune", "/dev/zero", "--space", "space.yaml", "--trials", "1"),
        "CONFIG: /dev/zero is a character device",
        None,
    ),
]

CASES += [
    *(
        Case(
            id,
            args,
            2,
            (says, NO_PIPES),
            files=SPACE,
            prepare=prepare,
            absent=("p.csv", "runs/s", "runs/bad"),
            max_seconds=30,  # refused before it is opened (a pipe blocks forever)
        )
        for id, args, says, prepare in SPECIAL_INPUTS
    ),
    Case(
        "tune-storage-fifo",
        (*TUNE, "--study", "s", "--storage", "j.journal"),
        2,
        ("--storage: j.journal is a named pipe (FIFO)", NO_PIPES),
        files=SPACE,
        prepare=fifo("j.journal"),
        absent=("runs/s",),  # the study folder made to hold it is removed again
        heavy=True,
    ),
    # ---- the wrong kind of data for the run (a traceback before)
    Case(
        "evaluate-data-folder-for-a-file-run",
        ("evaluate", RUN, "--data", "images"),
        2,
        ("--data: images is a folder, but runs/t was trained on data.source: digits; give a file",),
        files=images({"a": 2, "b": 2}, folder="images"),
        max_seconds=30,
    ),
    Case(
        "evaluate-data-csv-for-an-npz-run",
        ("evaluate", RUN, "--data", "d.csv"),
        2,
        ("--data: d.csv is not an .npz, but runs/t was trained on data.source: digits",),
        files={"d.csv": "a,b,label\n1,2,0\n"},
        max_seconds=30,
    ),
    Case(
        "evaluate-data-file-for-an-image-run",
        ("evaluate", "runs/img", "--data", "x.npz"),
        2,
        ("--data: x.npz is a file, but runs/img was trained on data.source: image_dir",),
        needs_image_run=True,
        kept=(RUN, "runs/img"),
    ),
    Case(
        "predict-zero-rows",
        ("predict", RUN, "--input", "none.npz", "--output", "p.csv"),
        2,
        ("--input: none.npz holds no samples (0 rows); nothing to predict",),
        files={"none.npz": npz(x=np.zeros((0, 8, 8)))},
        absent=("p.csv",),
        max_seconds=30,
    ),
    # ---- names that are not UTF-8
    Case(
        "predict-input-not-utf8",
        ("predict", RUN, "--input", f"{NOT_UTF8}.npz", "--output", "p.csv"),
        2,
        ("--input: the name '\\xff.npz' is not UTF-8 text", "rename it"),
        prepare=not_utf8(b"\xff.npz"),
        absent=("p.csv",),
    ),
    Case(
        "predict-output-not-utf8",
        (*PREDICT, "--output", f"{NOT_UTF8}.csv"),
        2,
        ("--output: the name '\\xff.csv' is not UTF-8 text",),
    ),
    Case(
        "export-out-not-utf8",
        (*EXPORT, "--out", f"{NOT_UTF8}.keras"),
        2,
        ("--out: the name '\\xff.keras' is not UTF-8 text",),
    ),
    Case(
        "train-config-not-utf8",
        ("train", "--config", f"{NOT_UTF8}.yaml"),
        2,
        ("--config: the name '\\xff.yaml' is not UTF-8 text",),
        prepare=not_utf8(b"\xff.yaml", b"name: bad\n"),
        absent=("runs/bad",),
    ),
    Case(
        "evaluate-data-not-utf8",
        ("evaluate", RUN, "--data", f"{NOT_UTF8}.npz"),
        2,
        ("--data: the name '\\xff.npz' is not UTF-8 text",),
        prepare=not_utf8(b"\xff.npz"),
    ),
    Case(
        "sweep-grid-not-utf8",
        ("sweep", "train.yaml", "--grid", f"{NOT_UTF8}.yaml", "--dry-run"),
        2,
        ("--grid: the name '\\xff.yaml' is not UTF-8 text",),
        prepare=not_utf8(b"\xff.yaml", b"seed: [1, 2]\n"),
    ),
    Case(
        "plot-out-not-utf8",
        ("plot", RUN, "--out", f"{NOT_UTF8}.png"),
        2,
        ("--out: the name '\\xff.png' is not UTF-8 text",),
    ),
    # ---- names and paths longer than the file system takes
    Case(
        "export-out-name-too-long",
        (*EXPORT, "--out", LONG_NAME + ".keras"),
        2,
        ("--out: the name 'nnn", "is 306 bytes long", NAME_MAX),
    ),
    Case(
        "export-out-path-too-long",
        (*EXPORT, "--out", LONG_PATH + "m.keras"),
        2,
        ("--out: the path 'ddd", PATH_MAX),
    ),
    Case(
        "predict-output-name-too-long",
        (*PREDICT, "--output", LONG_NAME + ".csv"),
        2,
        ("--output: the name 'nnn", NAME_MAX),
    ),
    Case(
        "predict-output-path-too-long",
        (*PREDICT, "--output", LONG_PATH + "p.csv"),
        2,
        ("--output: the path 'ddd", PATH_MAX),
    ),
    Case(
        "plot-out-name-too-long",
        ("plot", RUN, "--out", LONG_NAME + ".png"),
        2,
        ("--out: the name 'nnn", NAME_MAX),
    ),
    Case(
        "train-config-name-too-long",
        ("train", "--config", LONG_NAME + ".yaml"),
        2,
        ("--config: the name 'nnn", NAME_MAX),
    ),
    Case(
        "train-config-path-too-long",
        ("train", "--config", LONG_PATH + "c.yaml"),
        2,
        ("--config: the path 'ddd", PATH_MAX),
    ),
    Case(
        "train-name-too-long",
        ("train", "--config", "train.yaml", "--set", f"name={LONG_NAME}"),
        2,
        ("--set name: the name 'nnn", "is 300 bytes long", NAME_MAX),  # given by --set
        max_seconds=30,
    ),
    Case(
        "sweep-run-name-too-long",
        ("sweep", "train.yaml", "--grid", "grid.yaml", "--dry-run"),
        2,
        ("grid.yaml: model.kwargs.hidden (its values name the runs): the name", NAME_MAX),
        files={"grid.yaml": "seed: [1, 2]\nmodel.kwargs.hidden: [" + str([16] * 100) + "]\n"},
        absent=("runs/t/seed=1",),
    ),
    Case(
        "tune-study-name-too-long",
        (*TUNE, "--study", LONG_NAME),
        2,
        ("--study: the name 'nnn", NAME_MAX),
        files=SPACE,
    ),
    Case(
        "tune-storage-path-too-long",
        (*TUNE, "--study", "s", "--storage", LONG_PATH + "j.journal"),
        2,
        ("--storage: the path '", "bytes long (as an absolute path)", PATH_MAX),
        files=SPACE,
        absent=("runs/s",),
    ),
    Case(
        "mlflow-store-name-too-long",
        TRAIN,
        2,
        ("logging.mlflow.tracking_uri: the name 'nnn", NAME_MAX),
        config=mlflow_config(f"sqlite:///{LONG_NAME}.db"),
        absent=("runs/bad",),
    ),
    # ---- hangs: servers that do not answer, grids too large to enumerate
    Case(
        "mlflow-server-that-never-answers",
        TRAIN,
        2,
        (
            f"logging.mlflow.tracking_uri: the MLflow server {SILENT} does not answer",
            "(no answer within 5 s)",
        ),
        config=mlflow_config(SILENT),
        absent=("runs/bad",),
        max_seconds=30,  # MLflow alone retries for minutes
    ),
    Case(
        "mlflow-server-refusing",
        TRAIN,
        2,
        (
            "logging.mlflow.tracking_uri: the MLflow server",
            "Connection refused",
            "remove logging.mlflow",
        ),
        config=mlflow_config(_closed_port()),
        absent=("runs/bad",),
        max_seconds=30,
    ),
    Case(
        "mlflow-store-inside-a-run",
        TRAIN,
        2,
        ("logging.mlflow.tracking_uri: runs/t/mlflow.db is inside the run dir runs/t",),
        config=mlflow_config("sqlite:///runs/t/mlflow.db"),
        absent=("runs/bad",),
    ),
    Case(
        "mlflow-file-store-inside-a-run",
        TRAIN,
        2,
        ("logging.mlflow.tracking_uri: runs/t/mlruns is inside the run dir runs/t",),
        config=mlflow_config("file:runs/t/mlruns"),
        absent=("runs/bad",),
    ),
    Case(
        "mlflow-store-folder-missing",
        TRAIN,
        2,
        ("logging.mlflow.tracking_uri: the folder nope does not exist",),
        config=mlflow_config("sqlite:///nope/mlflow.db"),
        absent=("runs/bad", "nope"),
    ),
    Case(
        "tune-with-an-mlflow-server-that-never-answers",
        ("tune", "exp.yaml", "--space", "space.yaml", "--trials", "1", "--study", "s"),
        2,
        ("logging.mlflow.tracking_uri: the MLflow server", "does not answer"),
        config=mlflow_config(SILENT),
        files=SPACE,
        absent=("runs/s",),
        max_seconds=60,
        heavy=True,
    ),
    Case(
        "sweep-million-runs-a-bad-last-value",
        ("sweep", "train.yaml", "--grid", "grid.yaml", "--dry-run"),
        2,
        ("optimizer.learning_rate: must be a finite number greater than 0 (got -1.0)",),
        files={"grid.yaml": million_runs(optimizer__learning_rate=[-1.0])},
        max_seconds=30,  # every value checked once, not every run
    ),
    Case(
        "sweep-million-runs-index-out-of-range",
        ("sweep", "train.yaml", "--grid", "grid.yaml", "--index", "1000000", "--dry-run"),
        2,
        ("--index 1000000: the sweep has 1000000 runs (0..999999)",),
        files={"grid.yaml": million_runs()},
        max_seconds=30,
    ),
    Case(
        "tune-grid-over-a-huge-integer-range",
        (*TUNE, "--study", "s", "--sampler", "grid"),
        2,
        (
            "space.yaml: data.batch_size: --sampler grid would visit 1,000,000,000,000 points",
            "more than the 100,000 keepbest allows",
        ),
        files={"space.yaml": "data.batch_size: {int: [1, 1000000000000]}\n"},
        absent=("runs/s",),
        max_seconds=30,
    ),
    Case(
        "tune-grid-product-too-large",
        (*TUNE, "--study", "s", "--sampler", "grid"),
        2,
        ("--sampler grid would visit 1,000,000 points",),
        files={
            "space.yaml": "data.batch_size: {int: [1, 100]}\nseed: {int: [0, 99]}\n"
            "train.epochs: {int: [1, 100]}\n"
        },
        absent=("runs/s",),
        max_seconds=30,
    ),
    Case(
        "tune-grid-tiny-float-step",
        (*TUNE, "--study", "s", "--sampler", "grid"),
        2,
        ("optimizer.learning_rate: --sampler grid would visit 1,000,000,001 points",),
        files={"space.yaml": "optimizer.learning_rate: {uniform: [0.001, 0.002, 1.0e-12]}\n"},
        absent=("runs/s",),
        max_seconds=30,
    ),
    # ---- Optuna storages: torn, missing, refused (nothing left behind)
    Case(
        "tune-journal-torn-last-line",
        (*TUNE, "--study", "s"),
        2,
        ("runs/s/optuna.journal ends in a torn entry", "cut it off with: truncate -s"),
        files={**SPACE, "runs/s/optuna.journal": torn_journal("s")},
        kept=(RUN, "runs/s"),
        heavy=True,
    ),
    Case(
        "summary-of-a-study-with-a-torn-journal",
        ("summary", "runs/s"),
        2,
        ("ends in a torn entry", "truncate -s"),
        files={
            "runs/s/optuna.journal": torn_journal("s"),
            "runs/s/study.json": json.dumps({"study": "s", "storage": "runs/s/optuna.journal"}),
        },
        kept=(RUN, "runs/s"),
    ),
    Case(
        "summary-creates-no-database",
        ("summary", "runs/s"),
        2,
        ("runs/s/study.json: the study's storage", "gone.db does not exist", "nothing was created"),
        prepare=sqlite_study("s"),
        kept=(RUN, "runs/s"),
        absent=("runs/s/gone.db",),
    ),
    Case(
        "tune-best-creates-no-database",
        (*TUNE, "--study", "s", "--storage", "sqlite:///st.db", "--best"),
        2,
        (
            "--storage: the study's storage",
            "st.db does not exist",
        ),
        files=SPACE,
        absent=("st.db", "runs/s"),
    ),
    Case(
        "tune-storage-in-a-missing-folder",
        (*TUNE, "--study", "s", "--storage", "sqlite:///nope/st.db"),
        2,
        ("--storage: the folder ", "/nope does not exist"),
        files=SPACE,
        absent=("runs/s", "nope"),  # the study folder made for it is removed again
        heavy=True,
    ),
    Case(
        "tune-storage-not-a-journal",
        (*TUNE, "--study", "s", "--storage", "notes.txt"),
        2,
        (
            "--storage: ",
            "notes.txt is not an Optuna journal",
        ),
        files={**SPACE, "notes.txt": "my notes\n"},
        kept=(RUN, "notes.txt"),
        absent=("runs/s",),
        heavy=True,
    ),
    # ---- forged or damaged records: refused before use (exit 7)
    *(
        Case(
            f"best-json-{id}",
            ("evaluate", RUN),
            7,
            ("runs/t/best.json is not a valid keepbest record (", says, "restore it from a backup"),
            prepare=forge_record(**changes),
            max_seconds=30,  # before TensorFlow loads
        )
        for id, changes, says in (
            ("negative-epoch", {"epoch": -1}, "epoch -1, step 24: both count from 1"),
            ("step-zero", {"step": 0}, "epoch 2, step 0: both count from 1"),
            (
                "checkpoint-outside-the-run",
                {"checkpoint": "../../t2/best.weights.h5"},
                "checkpoint '../../t2/best.weights.h5': expected 'best.weights.h5'",
            ),
            ("value-nan", {"value": float("nan")}, "value nan: a best is a finite number"),
            (
                "verified-value-infinite",
                {"verified_value": float("inf")},
                "a best is a finite number",
            ),
            (
                "kept-file-outside-the-run",
                {
                    "top": [
                        {
                            "epoch": 1,
                            "step": 12,
                            "value": 1.0,
                            "checkpoint": "/etc/passwd",
                            "sha256": "0" * 64,
                        }
                    ]
                },
                "kept point '/etc/passwd' (step 12): expected 'checkpoints/step-0000000000",
            ),
            (
                "average-outside-the-run",
                {
                    "average": {
                        "of": "top_k",
                        "steps": [12],
                        "value": 1.0,
                        "better": True,
                        "checkpoint": "../a.h5",
                    }
                },
                "average '../a.h5': expected 'average.weights.h5'",
            ),
        )
    ),
    Case(
        "resume-state-too-large",  # the file-size limit on the first resume state
        TRAIN,
        6,
        (
            "could not write the resume state",
            TOO_LARGE,
            "the best checkpoint and the previous resume state are intact",
        ),
        config=small_config(name="big", train={"epochs": 1}),
        fsize=19_000,
        heavy=True,
    ),
]


# --------------------------------------------------------------------------- running


# ------------------------------------------ streamed data: npy, Parquet, random access (21)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def parquet(group: int = 20, drop: str | None = None, nulls: str | None = None, **columns):
    """A Parquet file of X's four columns f0..f3 (replaced or added by ``columns``), in
    row groups of ``group`` rows; ``drop`` leaves a column out, ``nulls`` empties the
    first value of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {f"f{i}": X[:, i] for i in range(4)} | columns
    data.pop(drop, None)
    arrays = {key: pa.array(value) for key, value in data.items()}
    if nulls:
        values = [None, *np.asarray(data[nulls][1:]).tolist()]
        arrays[nulls] = pa.array(values, type=pa.float32())
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer, row_group_size=group)
    return buffer.getvalue()


def npy_config(**data) -> dict:
    settings = {"source": "npy", "x": "x.npy", "y": "y.npy", "validation": {"split": 0.2}}
    cfg = small_config(name="bad", train={"epochs": 1})
    cfg["data"] = {**settings, "batch_size": 16, **data}
    return cfg


def parquet_config(**data) -> dict:
    settings = {"source": "parquet", "path": "t.parquet", "target": "label"}
    cfg = small_config(name="bad", train={"epochs": 1})
    cfg["data"] = {**settings, "validation": {"split": 0.2}, "batch_size": 16, **data}
    return cfg


RANDOM_ACCESS = """
import numpy as np


class Samples:
    def __init__(self):
        self.x = np.random.default_rng(0).random((60, 4)).astype("float32")

    def __len__(self):
        return 60

    def __getitem__(self, i):
        return {item}


def load():
    return Samples(), None
"""


def random_access_config() -> dict:
    cfg = small_config(name="bad", train={"epochs": 1}, checkpoint={"monitor": "loss"})
    cfg["data"] = {"source": "python", "factory": "ra:load", "batch_size": 16}
    return cfg


CASES += [
    Case(
        "npy-truncated",
        TRAIN,
        2,
        ("data.x:", "x.npy is truncated", "write it again with numpy.save"),
        files={"x.npy": npy(X)[:-40], "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
        max_seconds=30,
    ),
    Case(
        "npy-longer-than-its-header",
        TRAIN,
        2,
        ("data.x:", "x.npy is longer than its header says"),
        files={"x.npy": npy(X) + b"\0" * 16, "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-shard-of-another-width",
        TRAIN,
        2,
        ("data.x:", "x-1.npy holds rows of shape (5,)", "every shard of an array"),
        files={"x-0.npy": npy(X[:30]), "x-1.npy": npy(RNG.random((30, 5))), "y.npy": npy(Y)},
        config=npy_config(x="x-*.npy"),
        absent=("runs/bad",),
    ),
    Case(
        "npy-glob-matches-nothing",
        TRAIN,
        2,
        ("data.x:", "the pattern 'shards/x-*.npy' matches no file"),
        files={"y.npy": npy(Y)},
        config=npy_config(x="shards/x-*.npy"),
        absent=("runs/bad",),
    ),
    Case(
        "npy-rows-disagree",
        TRAIN,
        2,
        ("data.y:", "59 rows, but data.x has 60"),
        files={"x.npy": npy(X), "y.npy": npy(Y[:59])},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-fortran-order",
        TRAIN,
        2,
        ("data.x:", "Fortran order", "numpy.ascontiguousarray"),
        files={"x.npy": npy(np.asfortranarray(X)), "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-of-text",
        TRAIN,
        2,
        ("data.x:", "holds <U1 values; .npy data must be numbers"),
        files={"x.npy": npy(np.array(["a", "b"] * 30)), "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-not-an-npy",
        TRAIN,
        2,
        ("data.x:", "is not a readable .npy file", "numpy.save"),
        files={"x.npy": "x,y\n1,2\n", "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-folder-without-npy",
        TRAIN,
        2,
        ("data.x:", "holds no .npy file"),
        files={"xs/readme.txt": "nothing here\n", "y.npy": npy(Y)},
        config=npy_config(x="xs"),
        absent=("runs/bad",),
    ),
    Case(
        "npy-is-a-fifo",
        TRAIN,
        2,
        ("data.x:", "is not a regular file"),
        files={"x.npy": lambda path: os.mkfifo(path), "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
        max_seconds=30,  # never opened, so nothing waits for a writer
    ),
    Case(
        "npy-nan-in-the-sample",
        TRAIN,
        2,
        ("data.x: row 0 of x.npy holds NaN or infinite values",),
        files={"x.npy": npy(np.where(np.arange(60)[:, None] == 0, np.nan, X)), "y.npy": npy(Y)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-negative-class-id",
        TRAIN,
        2,
        ("data", "class ids and must be 0 or more, found -1"),
        files={"x.npy": npy(X), "y.npy": npy(Y - 1)},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-one-class",
        TRAIN,
        2,
        ("every training label is class 2",),
        files={"x.npy": npy(X), "y.npy": npy(np.full(60, 2))},
        config=npy_config(),
        absent=("runs/bad",),
    ),
    Case(
        "npy-validation-x-without-y",
        TRAIN,
        2,
        ("data.validation", "both 'x' and 'y'"),
        files={"x.npy": npy(X), "y.npy": npy(Y)},
        config=npy_config(validation={"x": "x.npy"}),
        absent=("runs/bad",),
    ),
    Case(
        "npy-validation-of-another-width",
        TRAIN,
        2,
        ("data.validation: samples have shape (5,)",),
        files={
            "x.npy": npy(X),
            "y.npy": npy(Y),
            "vx.npy": npy(RNG.random((20, 5)).astype("float32")),
            "vy.npy": npy(Y[:20]),
        },
        config=npy_config(validation={"x": "vx.npy", "y": "vy.npy"}),
        absent=("runs/bad",),
    ),
    Case(
        "npy-class-weight",
        TRAIN,
        2,
        ("train.class_weight:", "read a batch at a time", "data.weights"),
        files={"x.npy": npy(X), "y.npy": npy(Y)},
        config={**npy_config(), "train": {"epochs": 1, "class_weight": "balanced"}},
        absent=("runs/bad",),
    ),
    Case(
        "npy-the-same-shard-twice",
        TRAIN,
        2,
        ("data.x:", "is given twice"),
        files={"x.npy": npy(X), "y.npy": npy(Y)},
        config=npy_config(x=["x.npy", "x.npy"]),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-missing-target",
        TRAIN,
        2,
        ("data.target: column 'label' is not in t.parquet", "did you mean 'labels'"),
        files={"t.parquet": parquet(labels=Y)},
        config=parquet_config(),
        absent=("runs/bad",),
        max_seconds=30,
    ),
    Case(
        "parquet-missing-feature",
        TRAIN,
        2,
        ("data.features: column 'f9' is not in t.parquet",),
        files={"t.parquet": parquet(label=Y)},
        config=parquet_config(features=["f0", "f9"]),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-another-schema",
        TRAIN,
        2,
        ("column 'f1' is string in b.parquet but float", "the same schema"),
        files={
            "p/a.parquet": parquet(label=Y),
            "p/b.parquet": parquet(label=Y, f1=np.array(["x"] * 60)),
        },
        config=parquet_config(path="p"),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-file-lacks-a-column",
        TRAIN,
        2,
        ("b.parquet lacks the column 'f3' that a.parquet has",),
        files={"p/a.parquet": parquet(label=Y), "p/b.parquet": parquet(label=Y, drop="f3")},
        config=parquet_config(path="p"),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-not-parquet",
        TRAIN,
        2,
        ("data.path:", "is not a readable Parquet file"),
        files={"t.parquet": GOOD_NPZ},
        config=parquet_config(),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-null-feature",
        TRAIN,
        2,
        ("column 'f0' of t.parquet has 1 empty (null) values",),
        files={"t.parquet": parquet(label=Y, nulls="f0")},
        config=parquet_config(),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-text-feature",
        TRAIN,
        2,
        ("column 'f1' of t.parquet holds string values", "data.features"),
        files={"t.parquet": parquet(label=Y, f1=np.array(["x"] * 60))},
        config=parquet_config(),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-validation-label-unknown",
        TRAIN,
        2,
        ("data.validation.path: labels zebra are not in the training files",),
        files={
            "t.parquet": parquet(label=np.array(["ant", "bee", "cat"])[Y]),
            "v.parquet": parquet(label=np.array(["ant", "zebra"] * 30)),
        },
        config=parquet_config(validation={"path": "v.parquet"}),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-split-of-one-row-group",
        TRAIN,
        2,
        ("data.validation.split:", "1 row group(s)", "row_group_size"),
        files={"t.parquet": parquet(label=Y, group=1000)},
        config=parquet_config(),
        absent=("runs/bad",),
    ),
    Case(
        "parquet-folder-without-parquet",
        TRAIN,
        2,
        ("data.path:", "holds no .parquet file"),
        files={"p/a.csv": "a,b\n1,2\n"},
        config=parquet_config(path="p"),
        absent=("runs/bad",),
    ),
    Case(
        "predict-truncated-npy",
        ("predict", RUN, "--input", "in.npy", "--output", "out.csv"),
        2,
        ("--input:", "in.npy is truncated"),
        files={"in.npy": npy(RNG.random((5, 8, 8)).astype("float32"))[:-8]},
        absent=("out.csv",),
    ),
    Case(
        "predict-parquet-without-columns",
        ("predict", RUN, "--input", "in.parquet", "--output", "out.csv"),
        2,
        ("--input:", "the model's inputs have no column names"),
        files={"in.parquet": parquet(label=Y)},
        absent=("out.csv",),
    ),
    Case(
        "output-dir-beyond-path-max",
        TRAIN,
        2,
        ("exp.yaml: output_dir: File name too long",),
        config={**npz_config(), "output_dir": ("o" * 200 + "/") * 25},
        files={"d.npz": GOOD_NPZ},
    ),
    Case(
        "npz-data-is-a-fifo",
        TRAIN,
        2,
        ("data.path: is not a regular file (a pipe, socket or device",),
        files={"d.npz": lambda path: os.mkfifo(path)},
        config=npz_config(),
        absent=("runs/bad",),
        max_seconds=30,
    ),
    Case(
        "factory-random-access-item-not-a-sample",
        TRAIN,
        2,
        ("data.factory: ra:load's train data: item 0 is a dict", "(x, y) or (x, y, w)"),
        files={"ra.py": RANDOM_ACCESS.format(item="{'x': self.x[i], 'y': 0}")},
        config=random_access_config(),
        absent=("runs/bad",),
    ),
    Case(
        "factory-random-access-item-fails",
        TRAIN,
        2,
        ("data.factory: ra:load's train data: item 0 failed: OSError: shard 0 is gone",),
        files={"ra.py": RANDOM_ACCESS.format(item="exec('raise OSError(\"shard 0 is gone\")')")},
        config=random_access_config(),
        absent=("runs/bad",),
    ),
    Case(
        "factory-random-access-empty",
        TRAIN,
        2,
        ("data.factory: ra:load's train data: it holds no samples",),
        files={"ra.py": RANDOM_ACCESS.format(item="None").replace("return 60", "return 0")},
        config=random_access_config(),
        absent=("runs/bad",),
    ),
]


def tree_hash(path: Path) -> str:
    """sha256 over a file or folder tree: relative paths, kinds and bytes (links unfollowed)."""
    digest = hashlib.sha256()
    if not path.exists() and not path.is_symlink():
        return "absent"
    items = [path] if not path.is_dir() else sorted(path.rglob("*"))
    for item in items:
        name = item.relative_to(path).as_posix() if item != path else "."
        if item.is_symlink():
            digest.update(f"L {name} {os.readlink(item)}\n".encode())
        elif item.is_dir():
            digest.update(f"D {name}\n".encode())
        else:
            digest.update(f"F {name}\n".encode() + item.read_bytes())
    return digest.hexdigest()


_LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.argv = ["keepbest", *sys.argv[2:]]
    from keepbest.cli import main
    main()
    """
)


def _can_mount(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(folder)])
    if done.returncode != 0:
        return False
    subprocess.run(["umount", str(folder)], check=True)
    return True


@dataclasses.dataclass
class Outcome:
    result: subprocess.CompletedProcess | None
    folder: Path
    before: dict[str, str] = dataclasses.field(default_factory=dict)
    after: dict[str, str] = dataclasses.field(default_factory=dict)
    leftovers: list[str] = dataclasses.field(default_factory=list)
    present: list[str] = dataclasses.field(default_factory=list)
    problem: str | None = None
    seconds: float = 0.0
    skipped: str | None = None


def _lay_out(folder: Path, case: Case) -> None:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.config is not None:
        text = case.config if isinstance(case.config, str) else config_text(case.config)
        (folder / "exp.yaml").write_text(text)
    if case.prepare is not None:
        case.prepare(folder)


def _run_case(case: Case, root: Path, trained: dict, mounts: bool) -> Outcome:
    folder = root / case.id
    folder.mkdir()
    outcome = Outcome(None, folder)
    if case.disk and not mounts:
        outcome.skipped = "needs root to mount a tmpfs"
        return outcome
    disk = folder / "disk"
    mounted: list[Path] = []
    try:
        shutil.copytree(trained["t"] / RUN, folder / RUN, symlinks=True)
        shutil.copy(trained["t"] / "exp.yaml", folder / "train.yaml")
        (folder / "x.npz").write_bytes(npz(x=np.arange(20 * 64).reshape(20, 8, 8) % 17))
        if case.needs_image_run:
            shutil.copytree(trained["img"].result() / "runs" / "img", folder / "runs" / "img")
        if case.disk:
            disk.mkdir()
            size = case.disk.partition(":")[2] or "1024"
            mount = ["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(disk)]
            subprocess.run(mount, check=True)
            mounted.append(disk)
        _lay_out(folder, case)
        if case.disk == "readonly":
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        _run_command(case, folder, outcome)
    except Exception as exc:  # a broken case is a failed case, not a broken corpus
        outcome.problem = f"the case itself failed: {exc!r}"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    return outcome


def _run_command(case: Case, folder: Path, outcome: Outcome) -> None:
    """Run the case's command; look at the folder before and after (the tmpfs mounted)."""
    outcome.before = {kept: tree_hash(folder / kept) for kept in case.kept}
    cache = {"XDG_CACHE_HOME": str(folder / "cache")}  # tracebacks of unexpected errors
    started = time.monotonic()
    if case.fsize is not None:
        outcome.result = subprocess.run(
            [sys.executable, "-c", _LIMITED, str(case.fsize), *case.args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **cache},
        )
    else:
        outcome.result = run_cli(*case.args, cwd=folder, timeout=300, env=cache)
    outcome.seconds = time.monotonic() - started
    outcome.after = {kept: tree_hash(folder / kept) for kept in case.kept}
    outcome.leftovers = [str(p.relative_to(folder)) for p in folder.rglob(".tmp-*")]
    outcome.present = [name for name in case.absent if (folder / name).exists()]
    if case.check is not None:
        outcome.problem = case.check(folder)


def _train(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = run_cli("train", "--config", "exp.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """The trained run every case gets a copy of (``runs/t`` in it, and ``exp.yaml``)."""
    return _train(tmp_path_factory.mktemp("trained") / "t", small_config(train={"epochs": 2}))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, digits_run) -> dict[str, Outcome]:
    """Train the image run the cases need (the digits run is trained), then run every
    case at once."""
    base = tmp_path_factory.mktemp("trained-images")
    image_data = images({"c0": 8, "c1": 8}, folder="images")
    for name, content in image_data.items():
        (base / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "img" / name).write_bytes(content)
    image_cfg = image_config(path="images", validation={"split": 0.25})
    image_cfg["name"] = "img"
    pristine = tree_hash(digits_run / RUN)
    mounts = _can_mount(base / "mount-probe")
    root = tmp_path_factory.mktemp("hostile")
    workers = (os.cpu_count() or 2) + 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # the image run trains while the first cases run; the cases that need it wait
        trained = {"t": digits_run, "img": pool.submit(_train, base / "img", image_cfg)}
        ordered = sorted(CASES, key=lambda case: not case.heavy)
        futures = {case.id: pool.submit(_run_case, case, root, trained, mounts) for case in ordered}
        results = {case.id: futures[case.id].result() for case in CASES}
    assert tree_hash(digits_run / RUN) == pristine  # the original, never touched by a case
    (root / "seconds.txt").write_text(  # for whoever tunes the corpus's run time
        "".join(f"{outcome.seconds:7.1f}  {key}\n" for key, outcome in results.items())
    )
    return results


def test_the_corpus_is_large_and_its_cases_distinct():
    assert len({case.id for case in CASES}) == len(CASES) >= 60
    assert {case.code for case in CASES} >= {1, 2, 4, 6, 7}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(case: Case, outcomes):
    outcome = outcomes[case.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    result = outcome.result
    assert result is not None, outcome.problem
    shown = f"exit {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout[-2000:]}"
    assert result.returncode == case.code, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for fragment in case.says:
        assert fragment in lines[0], shown
    assert outcome.before == outcome.after, "a kept run or file changed"
    assert not outcome.leftovers, outcome.leftovers
    assert not outcome.present, f"created: {outcome.present}"
    assert outcome.problem is None, outcome.problem
    if case.max_seconds is not None:
        assert outcome.seconds < case.max_seconds, outcome.seconds
    if case.log:
        found = re.search(r"the traceback is in (\S+)\)", lines[0])
        assert found, lines[0]
        log = Path(found.group(1))
        log = log if log.is_absolute() else outcome.folder / log
        assert "Traceback (most recent call last)" in log.read_text(), log


# ------------------------------------------------- beside the table: start-up, laziness, status


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (/proc's SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _tensorflow_loaded(pid: int) -> bool:
    return "_pywrap_tensorflow" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_is_one_line_and_exit_75(tmp_path, signum):
    """A real `keepbest train`, signalled as soon as keepbest's handlers are installed,
    while its imports (TensorFlow's above all) are still under way: keepbest's one line
    and EXIT_STOPPED, no traceback, no TensorFlow noise, no run dir."""
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(small_config(name="s")))
    process = subprocess.Popen(
        [sys.executable, "-m", "keepbest", "train", "--config", "exp.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"},  # TensorFlow's noise, if any, shows
    )
    started = time.monotonic()
    # keepbest's handlers, installed together (SIGINT has Python's own from the start)
    while not _catches(process.pid, signal.SIGTERM) and time.monotonic() - started < 30:
        time.sleep(0.002)
    early = not _tensorflow_loaded(process.pid)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert early, "TensorFlow was loaded before keepbest caught the signal"
    name = signal.Signals(signum).name
    assert process.returncode == 75, err
    assert err.splitlines() == [
        f"error: stopped by {name} before training started; nothing needed saving: run the "
        "same command to start again"
    ], err
    assert not (tmp_path / "runs" / "s").exists()


_BIN = Path(sys.executable).parent
COMMANDS = {
    "python -m keepbest": [sys.executable, "-m", "keepbest", "train"],
    "keepbest": [str(_BIN / "keepbest"), "train"],
    "train": [str(_BIN / "train")],
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_stop_signal_in_the_first_milliseconds_is_one_line_and_exit_75(tmp_path, command, signum):
    """The same, signalled the moment keepbest's watch appears: it must come before any
    heavy import (pydantic's compiled core not yet loaded; about 17 ms after exec, was
    250 ms with pydantic loaded first), for each way to start the command. Before, SIGTERM
    there was death by the signal (-15) and SIGINT a KeyboardInterrupt traceback."""
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(small_config(name="s")))
    process = subprocess.Popen(
        [*COMMANDS[command], "--config", "exp.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    while not _catches(process.pid, signal.SIGTERM) and time.monotonic() - started < 30:
        pass  # no sleep: the signal goes at the first sight of the watch
    # read after the watch was seen: the watch came before pydantic's import began
    light = "pydantic_core" not in Path(f"/proc/{process.pid}/maps").read_text()
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert light, "keepbest's start-up watch came after the heavy imports"
    assert process.returncode == 75, err
    assert err.splitlines() == [
        f"error: stopped by {signal.Signals(signum).name} before training started; nothing "
        "needed saving: run the same command to start again"
    ], err
    assert not (tmp_path / "runs").exists()


MISSING = textwrap.dedent(
    """
    import sys
    sys.modules[sys.argv[1]] = None  # as after `pip install keepbest` without an extra
    sys.argv = ["keepbest", *sys.argv[2:]]
    from keepbest.cli import main
    main()
    """
)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("tensorflow", ("train", "--config", "exp.yaml")),
        ("keras", ("evaluate", "runs/t")),
    ],
)
def test_tensorflow_missing_names_the_extras(digits_run, module, args):
    done = subprocess.run(
        [sys.executable, "-c", MISSING, module, *args],
        cwd=digits_run,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"error: keepbest needs TensorFlow and Keras, but {module} is not installed: "
        'pip install "keepbest[cpu]" (or "keepbest[gpu]" for a GPU)'
    ]


def test_a_million_run_sweep_lists_its_first_run_at_once(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(small_config(name="m")))
    (tmp_path / "grid.yaml").write_text(million_runs())
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "keepbest", "sweep", "exp.yaml", "--grid", "grid.yaml", "--dry-run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        seconds = time.monotonic() - started
    finally:
        process.kill()
        process.communicate()
    assert first.startswith("0\t") and "learning_rate=0.001,hidden=1,batch_size=10" in first
    assert seconds < 15, seconds  # validating every run first took minutes
    last = run_cli(
        "sweep", "exp.yaml", "--grid", "grid.yaml", "--dry-run", "--index", "999999", cwd=tmp_path
    )
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines()[0].startswith("999999\t")
    assert last.stdout.splitlines()[1] == "1000000 runs; as a Slurm array: sbatch --array=0-999999"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"epoch": 51}, "best.json records epoch 51, step 24, a point this run never evaluated"),
        ({"step": 13}, "best.json records epoch 2, step 13, a point this run never evaluated"),
        ({"epoch": 1}, "best.json records epoch 1, step 24, a point this run never evaluated"),
        ({"epoch": 0}, "best.json is not a valid keepbest record (epoch 0, step 24: both count"),
    ],
)
def test_a_forged_record_is_never_shown_as_done(digits_run, tmp_path, changes, says):
    """show and summary (which only read) say the run failed, and why, instead of done."""
    shutil.copytree(digits_run / RUN, tmp_path / "runs" / "t")
    assert json.loads(run_cli("summary", "runs", "--json", cwd=tmp_path).stdout)[0]["status"] == (
        "done"
    )
    forge_record(**changes)(tmp_path)
    before = tree_hash(tmp_path / "runs")
    shown = run_cli("show", RUN, cwd=tmp_path)
    table = run_cli("summary", "runs", "--json", cwd=tmp_path)
    assert shown.returncode == table.returncode == 0, shown.stderr + table.stderr
    status = next(line for line in shown.stdout.splitlines() if line.startswith("status"))
    assert status.split(None, 1)[1].startswith("failed: ") and says in status, status
    [row] = json.loads(table.stdout)
    assert row["status"] == "failed" and says in row["detail"], row
    assert tree_hash(tmp_path / "runs") == before
