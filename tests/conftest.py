"""Shared test helpers: tiny real configs, and the real CLI in a subprocess."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


# The files that take longest (measured with --durations), started first so that the two
# workers end together; the rest keep their order.
LONGEST_FIRST = ("tests/test_resume.py", "tests/test_multinode.py", "tests/test_hostile.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (``-n 2``, README's test command): a test file runs whole on one
    worker, so its module fixtures train once, and the files that use the local Slurm
    (``pytest_plugins = ["slurm_fixture"]``) share one worker, so one cluster of each kind
    comes up per session (two multi-node clusters would claim the same addresses)."""
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)

    @functools.cache
    def scope_of_file(path: str) -> str:
        text = (root / path).read_text(encoding="utf-8") if path.endswith(".py") else ""
        return "slurm" if 'pytest_plugins = ["slurm_fixture"]' in text else path

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of_file(nodeid.split("::", 1)[0])

    return ByFile(config, log)


def small_config(**sections) -> dict:
    """A config that trains in a few seconds: digits, a 16-unit MLP, 3 epochs."""
    cfg = {
        "name": "t",
        "output_dir": "runs",
        "seed": 0,
        "data": {"source": "digits", "validation": {"split": 0.2}, "batch_size": 128},
        "model": {"builder": "mlp", "kwargs": {"hidden": [16]}},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "train": {"epochs": 3},
        "checkpoint": {"monitor": "val_loss"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def write_config(tmp_path):
    """Write a config mapping as YAML into tmp_path and return the file's path."""

    def write(cfg: dict, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run ``python -m keepbest ARGS`` for real and return the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "keepbest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# `keepbest train` under a file-size limit: files above it fail to write with EFBIG, a
# real kernel error in the middle of a save (SIGXFSZ is ignored so the write returns).
_LIMITED_TRAIN = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    epochs = f"train.epochs={sys.argv[3]}"
    sys.argv = ["keepbest", "train", "--config", sys.argv[2], "--set", epochs]
    from keepbest.cli import main
    main()
    """
)


def run_with_file_size_limit(config: Path, limit: int, epochs: int):
    return subprocess.run(
        [sys.executable, "-c", _LIMITED_TRAIN, str(limit), str(config), str(epochs)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


# Measured independently of keepbest's loading and measuring code: plain Keras rebuilds
# the model from model.json, loads best.weights.h5, and evaluates numpy arrays that this
# script makes from the bundled digits file (pixels / 16, a channel axis, and the
# documented split: a permutation seeded with the config's seed, the first
# round(n * split) samples for validation, each part in file order).
INDEPENDENT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from importlib.resources import files
    run_dir, monitor, seed, split, batch_size = sys.argv[1:6]
    with np.load(files("keepbest.datasets") / "digits.npz") as npz:
        x, y = (npz["x"].astype("float32") / 16.0)[..., None], npz["y"].astype("int64")
    order = np.random.default_rng(int(seed)).permutation(len(y))
    count = round(len(y) * float(split)) if float(split) else 0
    validation, training = np.sort(order[:count]), np.sort(order[count:])
    model = keras.models.model_from_json(open(f"{run_dir}/model.json").read())
    model.load_weights(f"{run_dir}/best.weights.h5")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rows = validation if monitor.startswith("val_") else training
    values = model.evaluate(x[rows], y[rows], batch_size=int(batch_size), verbose=0,
                            return_dict=True)
    print(repr(values[monitor.removeprefix("val_")]))
    """
)


def remeasure_independently(run_dir, monitor: str, seed=0, split=0.2, batch_size=128) -> float:
    """The monitored value of the run's best.weights.h5, measured in a new interpreter
    by plain Keras on arrays built here (see INDEPENDENT)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            INDEPENDENT,
            str(run_dir),
            monitor,
            str(seed),
            str(split),
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])
