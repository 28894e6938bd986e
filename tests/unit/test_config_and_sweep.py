"""Config rendering and sweep expansion, without training."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from keepbest.config import load_config
from keepbest.errors import ConfigError, InputError
from keepbest.search.space import read_space
from keepbest.search.sweep import expand_sweep, read_grid, select

BASE = {"name": "exp", "data": {"source": "digits", "validation": {"split": 0.2}}}


def write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({**BASE, "seeed": 1}, "seeed: unknown key; did you mean 'seed'?"),
        ({**BASE, "epochs": 3}, "epochs: unknown key; did you mean 'train.epochs'?"),
        ({**BASE, "train": {"epochs": 0}}, "train.epochs: Input should be greater than 0 (got 0)"),
        (
            {**BASE, "train": {"epochs": True}},
            "train.epochs: Input should be a valid integer (got True)",
        ),
        (
            {**BASE, "resume": {"requeue": "sometimes"}},
            "resume.requeue: must be true, false or 'auto' (got 'sometimes')",
        ),
        (
            {**BASE, "data": {"source": "digitz"}},
            "data.source: unknown source 'digitz'; expected one of digits, npz, npy, csv, "
            "parquet, image_dir, python; did you mean 'digits'?",
        ),
        (
            {**BASE, "checkpoint": {"mode": "minimum"}},
            "checkpoint.mode: must be one of min, max, auto (got 'minimum'); did you mean 'min'?",
        ),
    ],
)
def test_each_problem_is_one_line_with_its_dotted_path(raw, line):
    """Against the installed pydantic: its error types and messages feed these lines."""
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert caught.value.problems == [f"config: {line}"], pydantic.VERSION


def test_sweep_names_runs_by_their_values_and_validates_all_first(tmp_path):
    config = write(tmp_path, "exp.yaml", BASE)
    grid = write(
        tmp_path,
        "grid.yaml",
        {"optimizer.learning_rate": [0.001, 0.01], "model.kwargs.hidden": [[64], [128, 64]]},
    )
    runs = expand_sweep(config, grid)
    assert [run.name for run in runs] == [
        "learning_rate=0.001,hidden=64",
        "learning_rate=0.001,hidden=128-64",
        "learning_rate=0.01,hidden=64",
        "learning_rate=0.01,hidden=128-64",
    ]
    assert (
        runs[3].config.run_dir() == tmp_path / "runs" / "exp" / "learning_rate=0.01,hidden=128-64"
    )
    assert runs[3].config.model.kwargs == {"hidden": [128, 64]}
    assert select(runs, 2) == [runs[2]]
    with pytest.raises(InputError, match=r"--index 4: the sweep has 4 runs \(0..3\)"):
        select(runs, 4)

    bad = write(
        tmp_path, "bad.yaml", {"optimizer.learning_rate": [0.01, -1.0], "train.epochs": [2]}
    )
    with pytest.raises(ConfigError) as caught:
        expand_sweep(config, bad)
    assert caught.value.problems == [
        f"run 2/2 (learning_rate=-1.0,epochs=2): {config}: optimizer.learning_rate: "
        "must be a finite number greater than 0 (got -1.0)"
    ]


def test_two_keys_with_one_last_segment_get_longer_names(tmp_path):
    config = write(tmp_path, "exp.yaml", BASE)
    grid = write(tmp_path, "grid.yaml", {"model.kwargs.rate": [0.1], "optimizer.rate": [0.2]})
    assert [run.name for run in expand_sweep(config, grid)] == [
        "kwargs.rate=0.1,optimizer.rate=0.2"
    ]


@pytest.mark.parametrize(
    "read, what",
    [
        (lambda p: load_config(p), "config file"),
        (lambda p: read_grid(p), "--grid file"),
        (lambda p: read_space(p), "--space file"),
    ],
)
def test_every_yaml_input_is_read_by_one_reader_with_one_set_of_messages(tmp_path, read, what):
    """A config, a grid and a search space share the reader: the same one line each for a
    missing file, a folder, bytes that are not UTF-8 and text that is not YAML."""
    bad = {
        "missing.yaml": None,
        "folder.yaml": "dir",
        "latin1.yaml": "caf\xe9: 1\n".encode("latin-1"),
        "broken.yaml": b"a: [1, 2\n",
    }
    for name, content in bad.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
    expected = {
        "missing.yaml": f"missing.yaml: {what} not found",
        "folder.yaml": f"folder.yaml: {what} is a folder, not a file",
        "latin1.yaml": f"latin1.yaml: cannot read the {what} ('utf-8' codec",
        "broken.yaml": "broken.yaml: line 2, column 1: invalid YAML",
    }
    for name, words in expected.items():
        with pytest.raises(ConfigError) as caught:
            read(tmp_path / name)
        assert str(caught.value).count("\n") == 0
        assert words in str(caught.value), (name, str(caught.value))
