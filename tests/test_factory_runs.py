"""A run trained from a ``python`` data factory and a ``module:function`` builder is used
later from anywhere: evaluate and predict run from another working directory, find the
factory where training found it (code.json), give the factory the config's folder for
its relative paths, report the class names the factory declared, keep working when the
project moves as a whole, and say which module is missing, where they looked, and the fix
when it is gone."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import keepbest
from conftest import REPO, run_cli, small_config

DIGITS = REPO / "src" / "keepbest" / "datasets" / "digits.npz"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

FACTORY = textwrap.dedent(
    """
    from pathlib import Path

    import numpy as np

    WORDS = "zero one two three four five six seven eight nine".split()


    def load(path, config_dir):
        # relative paths start at the config's folder, wherever the process runs
        with np.load(Path(config_dir) / path) as npz:
            x, y = npz["x"], npz["y"].astype("int64")
        return (x[:400], y[:400]), (x[400:500], y[400:500]), {"class_names": WORDS}
    """
)

BUILDER = textwrap.dedent(
    """
    import keras


    def build(input_shape, num_classes, width=16):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Rescaling(1 / 16)(keras.layers.Flatten()(inputs))
        x = keras.layers.Dense(width, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    """
)


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory) -> Path:
    """project/{exp.yaml, fr_data.py, fr_models.py, data/digits.npz}, trained from another
    working directory into project/runs/fr."""
    root = tmp_path_factory.mktemp("factory")
    project = root / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(DIGITS, project / "data" / "digits.npz")
    (project / "fr_data.py").write_text(FACTORY, encoding="utf-8")
    (project / "fr_models.py").write_text(BUILDER, encoding="utf-8")
    cfg = small_config(
        name="fr",
        data={"source": "python", "factory": "fr_data:load", "kwargs": {"path": "data/digits.npz"}},
        model={"builder": "fr_models:build", "kwargs": {"width": 16}},
        train={"epochs": 2},
    )
    cfg["data"].pop("validation")
    (project / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    saved_path = list(sys.path)
    try:
        return keepbest.train(project / "exp.yaml").run_dir
    finally:
        sys.path[:] = saved_path


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_the_run_records_where_its_code_and_config_were(factory_run):
    code = json.loads((factory_run / "code.json").read_text(encoding="utf-8"))
    project = factory_run.parent.parent
    place = {"relative": "../..", "absolute": str(project)}
    assert code == {
        "config_dir": place,
        "modules": {
            "data.factory": {"module": "fr_data", "folder": place},
            "model.builder": {"module": "fr_models", "folder": place},
        },
    }
    spec = keepbest.read_spec(factory_run)
    assert (spec.class_names, spec.raw_shape, spec.num_classes) == (WORDS, (8, 8), 10)


def test_evaluate_and_predict_a_factory_run_from_another_working_directory(factory_run, tmp_path):
    record = keepbest.read_record(factory_run)
    evaluated = run_cli("evaluate", str(factory_run), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"val_loss measured again: {record.value:.8g} (exact)" in evaluated.stdout

    with np.load(DIGITS) as npz:
        x = npz["x"][500:540]
    np.savez(tmp_path / "new.npz", x=x)
    predicted = run_cli(
        "predict", str(factory_run), "--input", "new.npz", "--output", "p.csv", cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["label", *(f"p_{word}" for word in WORDS)]
    expected = keepbest.load_best(factory_run, compile=False).predict(x, verbose=0)
    assert [row["label"] for row in rows] == [WORDS[i] for i in expected.argmax(axis=1)]


def test_a_project_moved_as_a_whole_still_finds_its_factory(factory_run, tmp_path):
    """The relative places in code.json: the project is copied elsewhere and the original
    hidden, so that its absolute paths lead nowhere."""
    project = factory_run.parent.parent
    moved = tmp_path / "moved" / "renamed-project"
    shutil.copytree(project, moved)
    hidden = project.with_name("hidden-while-testing")
    project.rename(hidden)
    try:
        done = run_cli("evaluate", str(moved / "runs" / "fr"), "--json", cwd=tmp_path)
    finally:
        hidden.rename(project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["monitor"]["reproduces"] is True


def test_a_factory_module_that_is_gone_is_named_with_where_it_was_looked_for(factory_run, tmp_path):
    project = factory_run.parent.parent
    before = fingerprint(factory_run)
    aside = tmp_path / "aside"  # not the working directory, which python -m can import from
    aside.mkdir()
    (project / "fr_data.py").rename(aside / "fr_data.py")
    try:
        done = run_cli("evaluate", str(factory_run), cwd=tmp_path)
    finally:
        (aside / "fr_data.py").rename(project / "fr_data.py")
    assert done.returncode == 2
    line = one_error(done)
    assert line == (
        f"error: {factory_run / 'config.yaml'}: data.factory: no module named 'fr_data' where "
        f"training imported it from (looked in {project} and in the installed packages); put "
        "fr_data.py back there, install it, or add its folder to PYTHONPATH"
    )
    assert fingerprint(factory_run) == before  # nothing in the run dir was touched


def test_a_damaged_code_record_falls_back_to_the_run_dir_with_a_clear_error(factory_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(factory_run, run)
    (run / "code.json").write_text('{"config_dir": ')
    done = run_cli("evaluate", str(run), cwd=tmp_path)
    assert done.returncode == 2
    line = one_error(done)
    assert f"data.factory: no module named 'fr_data' (looked in {run} and in the installed" in line
