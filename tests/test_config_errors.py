"""Every way a config can be wrong ends in one `error: <file>: <dotted path>: ...` line
per problem (`error: --set <dotted path>: ...` for a value given with --set), exit code 2,
no traceback, and nothing written.

The cases run through the real CLI in subprocesses. They are started all at once (a
module fixture), because most take half a second and the few that import Keras (to
check optimizer, loss and metric names) take a few seconds each.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli, small_config
from keepbest.config import config_to_yaml, load_config
from keepbest.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad config (a mapping, or raw YAML text) and the fragments stderr must contain.

    In ``expected``, ``{dir}`` stands for the folder holding the config file.
    """

    id: str
    config: dict | str
    expected: tuple[str, ...]
    overrides: tuple[str, ...] = ()


NPZ = {"source": "npz", "path": "train.npz", "validation": {"split": 0.2}}
BUILDER_FILE = "def build(input_shape, num_classes, width=8):\n    raise NotImplementedError\n"
ALL_SOURCES = "expected one of digits, npz, npy, csv, parquet, image_dir, python"

CASES = [
    Case(
        "unknown-key", {**small_config(), "seeed": 1}, ("seeed: unknown key; did you mean 'seed'?",)
    ),
    Case(
        "key-in-wrong-section",
        {**small_config(), "epochs": 3},
        ("epochs: unknown key; did you mean 'train.epochs'?",),
    ),
    Case(
        "unknown-nested-key",
        small_config(data={"bach_size": 8}),
        ("data.bach_size: unknown key; did you mean 'batch_size'?",),
    ),
    Case(
        "key-of-another-source",
        small_config(data={**NPZ, "image_size": [8, 8]}),
        ("data.image_size: unknown key; 'image_size' is a key of source image_dir",),
    ),
    Case(
        "wrong-type",
        small_config(train={"epochs": "ten"}),
        ("train.epochs: Input should be a valid integer (got 'ten')",),
    ),
    Case(
        "bool-is-not-a-count",
        small_config(train={"epochs": True}),
        ("train.epochs: Input should be a valid integer (got True)",),
    ),
    Case(
        "bad-value",
        small_config(data={"batch_size": 0}),
        ("data.batch_size: Input should be greater than 0 (got 0)",),
    ),
    Case(
        "seed-beyond-32-bit",
        small_config(seed=2**32),
        ("seed: Input should be less than or equal to 4294967295 (got 4294967296)",),
    ),
    Case(
        "near-miss-value",
        small_config(checkpoint={"mode": "mni"}),
        ("checkpoint.mode: must be one of min, max, auto (got 'mni'); did you mean 'min'?",),
    ),
    Case(
        "unknown-source",
        small_config(data={"source": "nzp"}),
        (f"data.source: unknown source 'nzp'; {ALL_SOURCES}; did you mean 'npz'?",),
    ),
    Case(
        "list-item-type",
        small_config(metrics=["accuracy", 3]),
        (
            "metrics[1]: expected a name (a Keras one or 'module:name') or "
            "{class_name: ..., config: {...}} (got 3)",
        ),
    ),
    Case(
        "missing-required",
        {k: v for k, v in small_config().items() if k != "name"},
        ("name: required, but not given",),
    ),
    Case(
        "unsafe-run-name",
        small_config(name="../elsewhere"),
        ("name: use letters, digits and . _ , = + - only (it names the run folder) (got '../",),
    ),
    Case(
        "missing-file-relative-to-config",
        small_config(data={**NPZ, "path": "missing.npz"}),
        ("data.path: file not found: {dir}/missing.npz (got 'missing.npz')",),
    ),
    Case(
        "missing-validation-file",
        small_config(data={**NPZ, "validation": {"path": "val.npz"}}),
        ("data.validation.path: file not found: {dir}/val.npz (got 'val.npz')",),
    ),
    Case(
        "split-and-path",
        small_config(data={**NPZ, "validation": {"split": 0.2, "path": "train.npz"}}),
        ("data.validation: give exactly one of 'split' (a fraction) or 'path' (a file)",),
    ),
    Case(
        "bundled-validation-file",
        small_config(data={"validation": {"path": "train.npz"}}),
        ("data.validation: a bundled dataset has no validation file; use {split: 0.2}",),
    ),
    Case(
        "output-dir-is-a-file",
        small_config(output_dir="train.npz"),
        ("output_dir: is a file, not a folder: {dir}/train.npz",),
    ),
    Case(
        "factory-with-validation",
        small_config(
            data={"source": "python", "factory": "mymodels:build", "validation": {"split": 0.1}}
        ),
        ("data.validation: a python data factory returns its own validation data; remove this",),
    ),
    Case(
        "builder-not-a-reference",
        small_config(model={"builder": "mymodels.build"}),
        (
            "model.builder: expected a built-in builder (mlp, cnn) or 'module:function' "
            "(got 'mymodels.build')",
        ),
    ),
    Case(
        "builder-near-miss",
        small_config(model={"builder": "mpl"}),
        (
            "model.builder: expected a built-in builder (mlp, cnn) or 'module:function' "
            "(got 'mpl'); did you mean 'mlp'?",
        ),
    ),
    Case(
        "builder-module-missing",
        small_config(model={"builder": "mymodelz:build", "kwargs": {}}),
        (
            "model.builder: no module named 'mymodelz' (looked in {dir} and in the installed "
            "packages); did you mean 'mymodels'?",
        ),
    ),
    Case(
        "builder-function-missing",
        small_config(model={"builder": "mymodels:buidl", "kwargs": {}}),
        ("model.builder: module 'mymodels' has no function 'buidl'; did you mean 'build'?",),
    ),
    Case(
        "builder-kwarg-unknown",
        small_config(model={"builder": "mymodels:build", "kwargs": {"widht": 4}}),
        ("model.kwargs.widht: build() has no argument 'widht'; did you mean 'width'?",),
    ),
    Case(
        "builtin-builder-kwarg-type",
        small_config(model={"kwargs": {"hidden": 16, "dropout": 1.5}}),
        (
            "model.kwargs.hidden: mlp() expects a list of integers (got 16)",
            "model.kwargs.dropout: Input should be less than 1 (got 1.5)",
        ),
    ),
    Case(
        "monitor-not-logged",
        small_config(checkpoint={"monitor": "val_acuracy"}),
        (
            "checkpoint.monitor: 'val_acuracy' is not logged by this run; it logs loss, "
            "accuracy (and val_* of each with validation data); did you mean 'val_accuracy'?",
        ),
    ),
    Case(
        "val-monitor-without-validation",
        small_config(data={"validation": None}),
        (
            "checkpoint.monitor: 'val_loss' needs validation data; set data.validation "
            "(e.g. {split: 0.2}) or monitor 'loss'",
        ),
    ),
    Case(
        "yaml-syntax",
        "name: t\ndata: {source: digits\ntrain: {epochs: 2}\n",
        ("exp.yaml: line 3, column 6: invalid YAML: expected ',' or '}', but got ':'",),
    ),
    Case(
        "yaml-duplicate-key",
        "name: t\ntrain:\n  epochs: 2\n  epochs: 3\ndata: {source: digits}\n",
        ("exp.yaml: train.epochs: key given twice (lines 3 and 4); keep one",),
    ),
    Case(
        "yaml-not-a-mapping",
        "- name: t\n",
        ("exp.yaml: expected a mapping of sections (name, data, ...) at the top level, got list",),
    ),
    Case(
        "set-without-equals",
        small_config(),
        ("error: --set train.epochs: not KEY=VALUE, e.g. --set train.epochs=30",),
        overrides=("train.epochs",),
    ),
    Case(
        "set-into-a-value",
        small_config(),
        ("error: --set seed.value: cannot set inside 'seed': it is a value (0), not a section",),
        overrides=("seed.value=3",),
    ),
    Case(
        "set-unknown-key",
        small_config(),
        ("error: --set train.epohcs: unknown key; did you mean 'epochs'?",),
        overrides=("train.epohcs=3",),
    ),
    Case(  # found once Keras is imported (reported_against), not by the schema
        "set-optimizer-argument-typo",
        small_config(),
        (
            "error: --set optimizer.learnign_rate: Adam has no argument 'learnign_rate'; "
            "did you mean 'learning_rate'?",
        ),
        overrides=("optimizer.learnign_rate=0.1",),
    ),
    Case(
        "set-bad-yaml",
        small_config(),
        ("error: --set metrics: value '[accuracy': line 1, column 10: invalid YAML",),
        overrides=("metrics=[accuracy",),
    ),
    Case(
        "mode-against-the-monitor",
        small_config(checkpoint={"monitor": "val_accuracy", "mode": "min"}),
        (
            "checkpoint.mode: min contradicts val_accuracy (an accuracy goes up when the model "
            "improves); use mode: max, or auto, or set checkpoint.force_mode: true",
        ),
    ),
    Case(
        "csv-missing-target",
        small_config(data={"source": "csv", "path": "table.csv", "target": "labl"}),
        (
            "data.target: column 'labl' is not in table.csv; its columns are a, b, label; "
            "did you mean 'label'?",
        ),
    ),
    Case(
        "csv-text-feature",
        small_config(data={"source": "csv", "path": "table.csv", "target": "b"}),
        (
            "data.path: table.csv line 2, column 'label': 'dog' is not a number "
            "(list numeric columns in data.features)",
        ),
    ),
    # These import Keras: all their problems are reported together.
    Case(
        "keras-names",
        small_config(
            optimizer={"name": "adamm"},
            loss="sparse_categorical_crossentropi",
            metrics=["acc", "accuracyy"],
            checkpoint={"monitor": "val_acc"},
        ),
        (
            "optimizer.name: unknown Keras optimizer 'adamm'; did you mean 'adam'?",
            "loss: unknown Keras loss 'sparse_categorical_crossentropi'; "
            "did you mean 'sparse_categorical_crossentropy'?",
            "metrics[1]: unknown Keras metric 'accuracyy'; did you mean 'accuracy'?",
        ),
    ),
    Case(
        "optimizer-kwarg",
        small_config(optimizer={"name": "adam", "betta_1": 0.8, "learnig_rate": 0.1}),
        (
            "optimizer.betta_1: Adam has no argument 'betta_1'; did you mean 'beta_1'?",
            "optimizer.learnig_rate: Adam has no argument 'learnig_rate'; "
            "did you mean 'learning_rate'?",
        ),
    ),
    Case(
        "every-steps-beyond-the-run",
        small_config(checkpoint={"monitor": "val_loss", "every_steps": 1000}),
        (
            "checkpoint.every_steps: 1000 is more than the run's 36 steps (3 epochs of 12), "
            "so nothing would ever be evaluated; use at most 36, or more train.epochs",
        ),
    ),
    Case(
        "warm-up-in-epochs-with-every-steps",
        small_config(checkpoint={"monitor": "val_loss", "every_steps": 5, "start_from_epoch": 1}),
        (
            "checkpoint.start_from_epoch: with checkpoint.every_steps the warm-up is counted "
            "in steps; set checkpoint.start_from_step instead",
        ),
    ),
    Case(
        "no-resume-cadence",
        {**small_config(), "resume": {"max_overhead": None}},
        ("resume.max_overhead: null leaves no cadence for resume states",),
    ),
]


def _write_case(folder: Path, case: Case) -> Path:
    """The config plus the files that good paths in it point at."""
    folder.mkdir()
    np.savez(folder / "train.npz", x=np.zeros((10, 3), "float32"), y=np.arange(10) % 2)
    (folder / "table.csv").write_text("a,b,label\n1,2,dog\n3,4,cat\n", encoding="utf-8")
    (folder / "mymodels.py").write_text(BUILDER_FILE, encoding="utf-8")
    path = folder / "exp.yaml"
    text = case.config if isinstance(case.config, str) else yaml.safe_dump(case.config)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Run every case's `train` at once; the working directory is elsewhere on purpose."""
    root = tmp_path_factory.mktemp("config-errors")
    cwd = tmp_path_factory.mktemp("cwd")
    paths = {case.id: _write_case(root / case.id, case) for case in CASES}

    def run(case: Case) -> subprocess.CompletedProcess:
        sets = [arg for o in case.overrides for arg in ("--set", o)]
        return run_cli("train", "--config", str(paths[case.id]), *sets, cwd=cwd, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = dict(zip([c.id for c in CASES], pool.map(run, CASES), strict=True))
    return {key: (paths[key], results[key]) for key in paths}


def test_cases_are_distinct():
    assert len({c.id for c in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_one_line_per_problem(case: Case, outcomes):
    path, result = outcomes[case.id]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.stderr
    for line in errors:  # a problem of a --set value names the --set, not the file
        assert line.startswith("error: --set " if case.overrides else f"error: {path}: "), line
    for fragment in case.expected:
        assert fragment.replace("{dir}", str(path.parent)) in result.stderr
    assert len(errors) == len(case.expected), result.stderr
    assert not (path.parent / "runs").exists()  # output_dir: not even created
    assert result.stdout == ""


# --------------------------------------------------------------------------- --set


def test_set_values_are_yaml(write_config):
    path = write_config(small_config(checkpoint={"monitor": "loss"}, data={"validation": None}))
    cfg = load_config(
        path,
        [
            "train.epochs=7",
            "metrics=[accuracy, mae]",
            "checkpoint.patience=3",
            "checkpoint.patience=null",
            "optimizer.learning_rate=1e-3",
            "name = renamed",
            "data.validation.split=0.25",  # creates the section that was null
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.metrics == ["accuracy", "mae"]
    assert cfg.checkpoint.patience is None
    assert cfg.optimizer.learning_rate == 0.001
    assert cfg.name == "renamed"
    assert cfg.data.validation.split == 0.25


def test_set_creates_missing_sections(write_config):
    raw = small_config()
    del raw["model"], raw["train"]
    cfg = load_config(write_config(raw), ["model.kwargs.hidden=[4, 2]", "train.steps_per_epoch=5"])
    assert cfg.model.kwargs == {"hidden": [4, 2]}
    assert cfg.train.steps_per_epoch == 5
    assert cfg.train.epochs == 10  # the default still applies beside the created key


def test_set_problems_name_the_set_and_the_file_s_name_the_file(write_config):
    path = write_config(small_config())
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["seed.x=1", "nonsense"])
    assert caught.value.problems == [
        "--set seed.x: cannot set inside 'seed': it is a value (0), not a section",
        "--set nonsense: not KEY=VALUE, e.g. --set train.epochs=30",
    ]
    # one typo in the file, one in a --set, a section given whole by --set: each named
    # where it was made
    path = write_config({**small_config(), "seeed": 1})
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["optimizer.learnign_rate=0.1", "train={epohcs: 2}"])
    assert sorted(caught.value.problems) == [
        "--set train.epohcs: unknown key; did you mean 'epochs'?",
        f"{path}: seeed: unknown key; did you mean 'seed'?",
    ]  # (optimizer arguments are checked once Keras is imported: the CLI case above)


def test_a_set_typo_is_named_as_the_set_through_the_cli(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({**small_config(), "seeed": 1}))
    done = run_cli(
        "train",
        "--config",
        "exp.yaml",
        "--set",
        "train.epohcs=2",
        "--set",
        "seed=1",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert sorted(done.stderr.splitlines()) == [
        "error: --set train.epohcs: unknown key; did you mean 'epochs'?",
        "error: exp.yaml: seeed: unknown key; did you mean 'seed'?",
    ]


# --------------------------------------------------------------------------- --print-config


def test_print_config_revalidates_and_writes_nothing(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    np.savez(folder / "train.npz", x=np.zeros((10, 3), "float32"), y=np.arange(10) % 2)
    config = small_config(data=NPZ, optimizer={"name": "adam", "beta_1": 0.8})
    (folder / "exp.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli(
        "train",
        "--config",
        str(folder / "exp.yaml"),
        "--print-config",
        "--set",
        "seed=5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert next(iter(printed["data"])) == "source"
    assert printed["data"]["path"] == str(folder / "train.npz")  # resolved: movable
    assert printed["seed"] == 5
    assert printed["optimizer"]["beta_1"] == 0.8
    elsewhere = tmp_path / "copy.yaml"
    elsewhere.write_text(result.stdout, encoding="utf-8")
    again = load_config(elsewhere)
    assert config_to_yaml(again) == result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["exp.yaml", "train.npz"]
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- in process


def test_mapping_paths_resolve_against_base_dir(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(4, "int64"))
    raw = small_config(data={"source": "npz", "path": "d.npz", "validation": None})
    raw["checkpoint"] = {"monitor": "loss"}
    cfg = load_config(raw, base_dir=tmp_path)
    assert cfg.data.path == tmp_path / "d.npz"
    assert cfg.output_dir == tmp_path / "runs"
    assert cfg.origin == "config"
    assert raw["data"]["path"] == "d.npz"  # the caller's mapping is not changed


def test_all_problems_at_once_and_check_files_off(tmp_path):
    raw = small_config(data={"source": "npz", "path": "gone.npz"}, train={"epochs": -1})
    with pytest.raises(ConfigError) as caught:
        load_config(raw, base_dir=tmp_path)
    assert [p.split(":")[1].strip() for p in caught.value.problems] == [
        "data.path",
        "train.epochs",
    ]
    cfg = load_config({**raw, "train": {"epochs": 1}}, base_dir=tmp_path, check_files=False)
    assert cfg.data.path == tmp_path / "gone.npz"
