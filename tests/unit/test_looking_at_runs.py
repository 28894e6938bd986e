"""`keepbest summary` over unrelated runs (monitors never mixed in one ranking, paths
relative, an ordinary terminal's width), `keepbest plot` on curves that span decades, and
`-h` for every command. Run dirs are written by hand (real files, real checksums); no
training, no TensorFlow."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keepbest.config import config_to_yaml, load_config
from keepbest.rundir.layout import RunDir
from keepbest.rundir.plot import curves_figure, plot_run
from keepbest.rundir.record import BestRecord
from keepbest.rundir.table import format_table, summarize


def make_run(
    root: Path,
    name: str,
    monitor: str,
    mode: str,
    value: float | None,
    **config,
) -> RunDir:
    """A run dir with a config, a spec and (if ``value`` is given) a best checkpoint."""
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    raw = {
        "name": name.rpartition("/")[2],
        "data": {"source": "digits", "validation": {"split": 0.2}},
        "metrics": ["accuracy"],
        "checkpoint": {"monitor": monitor, "mode": mode},
        **config,
    }
    run.config_file.write_text(config_to_yaml(load_config(raw, base_dir=root)))
    run.spec_file.write_text('{"input_shape": [8, 8, 1], "num_classes": 10, "target_shape": []}')
    if value is not None:
        run.weights_file.write_bytes(b"weights of " + name.encode())
        record = {
            "epoch": 3,
            "monitor": monitor,
            "mode": mode,
            "value": value,
            "checkpoint": run.weights_file.name,
            "sha256": hashlib.sha256(run.weights_file.read_bytes()).hexdigest(),
            "verified_value": value,
            "saved_at": "2026-11-29T00:00:00+00:00",
            "versions": {},
        }
        run.record_file.write_text(json.dumps(record))
        run.resume_dir.mkdir()  # a state after epoch 3 (as status expects next to a best)
        state = run.resume_dir / "state-000000000003.npz"
        state.write_bytes(b"state")
        manifest = {
            "progress": {"epoch": 3, "batch": 0},
            "global_step": 3,
            "stop_kind": None,
            "history": [],
            "weights_file": state.name,
            "sha256": hashlib.sha256(b"state").hexdigest(),
            "signature": [],
        }
        (run.resume_dir / "state-000000000003.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Unrelated runs: val_loss (min), val_accuracy (max), one with no best yet."""
    root = tmp_path / "runs"
    make_run(root, "loss-a", "val_loss", "min", 0.30, seed=1)
    make_run(root, "loss-b", "val_loss", "min", 0.10, seed=2)
    make_run(root, "acc/high", "val_accuracy", "max", 0.95, seed=3)
    make_run(root, "acc/low", "val_accuracy", "max", 0.50, seed=4)
    make_run(root, "acc/waiting", "val_accuracy", "auto", None, seed=5)
    forced = {"monitor": "val_loss", "mode": "max", "force_mode": True}
    make_run(root, "acc/big-loss", "val_loss", "max", 9.0, seed=6, checkpoint=forced)  # strange
    return root


def test_summary_never_ranks_different_monitors_or_modes_together(mixed):
    rows = summarize(mixed)
    groups = [(row.monitor, row.mode) for row in rows]
    assert groups == [
        ("val_accuracy", "max"),
        ("val_accuracy", "max"),
        ("val_accuracy", "max"),
        ("val_loss", "min"),
        ("val_loss", "min"),
        ("val_loss", "max"),
    ]
    assert [row.name for row in rows] == [
        "acc/high",
        "acc/low",
        "acc/waiting",  # no best: last of its monitor's group
        "loss-b",
        "loss-a",
        "acc/big-loss",
    ]
    text = format_table(rows, width=80)
    tables = text.split("\n\n")
    assert [table.splitlines()[0] for table in tables] == [
        "val_accuracy (max), best first:",
        "val_loss (min), best first:",
        "val_loss (max), best first:",
    ]
    assert [line.split()[0] for line in tables[1].splitlines()[2:]] == ["loss-b", "loss-a"]


def test_summary_fits_80_columns_with_relative_paths_and_wide_shows_everything(tmp_path):
    root = tmp_path / "runs"
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        path = data / f"a-long-descriptive-file-name-for-experiment-{i}.npz"
        np.savez(path, x=np.zeros((4, 2)), y=np.zeros(4, "int64"))
        make_run(
            root,
            f"run-{i}",
            "val_loss",
            "min",
            0.1 * (i + 1),
            data={"source": "npz", "path": str(path), "validation": {"split": 0.5}},
            model={"builder": "mlp", "kwargs": {"hidden": [8 * (i + 1)], "dropout": 0.1 * i}},
            optimizer={"name": "adam", "learning_rate": 0.001 * (i + 1), "beta_1": 0.8 + i / 20},
            seed=i,
            train={"epochs": 10 + i},
        )
    rows = summarize(root)
    assert rows[0].swept["data.path"] == "../data/a-long-descriptive-file-name-for-experiment-0.npz"
    narrow = format_table(rows, width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert str(tmp_path) not in narrow
    assert narrow.splitlines()[-1].startswith("(--wide also shows ")
    wide = format_table(rows, width=None)
    header = wide.splitlines()[1].split()
    for key in rows[0].swept:
        assert key in header
    assert "../data/a-long-descriptive-file-name-for-experiment-2.npz" in wide
    assert max(len(line) for line in wide.splitlines()) > 80


def test_summary_cli_json_text_and_bad_folders(mixed, tmp_path):
    def keepbest(*args: str, columns: str = "80") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "keepbest", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_env(), "COLUMNS": columns},
        )

    rows = json.loads(keepbest("summary", str(mixed), "--json").stdout)
    assert [row["name"] for row in rows][:2] == ["acc/high", "acc/low"]
    text = keepbest("summary", str(mixed))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("val_accuracy (max), best first:\nrun ")
    (tmp_path / "a-file").write_text("not a folder")
    for target in (tmp_path / "a-file", tmp_path / "missing"):
        done = keepbest("summary", str(target))
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        [line] = [line for line in done.stderr.splitlines() if "rror" in line]
        assert str(target) in line or target.name in line


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


# --------------------------------------------------------------------------- show


def test_show_says_what_the_model_takes_and_its_classes(tmp_path):
    from keepbest.data.preprocessing import Preprocessing
    from keepbest.data.spec import DataSpec
    from keepbest.rundir.show import describe_run

    run = make_run(tmp_path, "images", "val_loss", "min", 0.2)
    spec = DataSpec(
        input_shape=(16, 16, 3),
        num_classes=3,
        target_shape=(),
        class_names=["cat", "dog", "emu"],
        raw_shape=(None, None, 3),
        raw_dtype="uint8",
        raw_range=(0.0, 255.0),
        preprocessing=Preprocessing(resize=(16, 16), scale=1 / 255),
    )
    run.spec_file.write_text(spec.to_json())
    lines = describe_run(run.path).highlights
    assert lines["inputs"] == (
        "(N, any, any, 3) uint8, 0..255; preprocessing: resize to 16x16 (bilinear), "
        "then x * 0.00392157"
    )
    assert lines["classes"] == "cat, dog, emu (3)"
    run.spec_file.write_text('{"input_shape": ')  # damaged: said, not a traceback
    assert describe_run(run.path).highlights["inputs"] == "data_spec.json cannot be read"


# --------------------------------------------------------------------------- plot


def _history(loss, val_loss):
    return [
        {"epoch": i + 1, "loss": a, "val_loss": b}
        for i, (a, b) in enumerate(zip(loss, val_loss, strict=True))
    ]


def _record(rows) -> BestRecord:
    best = min(rows, key=lambda row: row["val_loss"])
    return BestRecord(
        epoch=int(best["epoch"]),
        monitor="val_loss",
        mode="min",
        value=best["val_loss"],
        checkpoint="best.weights.h5",
        sha256="0" * 64,
        verified_value=best["val_loss"],
        saved_at="2026-11-29T00:00:00+00:00",
        versions={},
    )


def test_plot_draws_a_loss_spanning_decades_on_a_log_scale(tmp_path):
    epochs = range(30)
    rows = _history(
        [30 * math.exp(-e / 2.5) + 0.04 for e in epochs],
        [25 * math.exp(-e / 2.5) + 0.06 + 0.0004 * (e - 18) ** 2 for e in epochs],
    )
    [axes] = curves_figure(rows, _record(rows), "decades").axes
    assert axes.get_yscale() == "log" and axes.get_title() == "loss (log scale)"
    low, high = axes.get_ylim()
    assert low < _record(rows).value < high


def test_plot_zooms_past_early_outliers_that_no_log_scale_can_show():
    epochs = range(30)
    values = [400 * math.exp(-e / 1.2) - 1 + 0.001 * (e - 18) ** 2 for e in epochs]
    rows = _history([v + 0.05 for v in values], values)
    [axes] = curves_figure(rows, _record(rows), "negative").axes
    assert axes.get_yscale() == "linear"
    low, high = axes.get_ylim()
    assert high < 10 < max(values)  # the first epochs are above the panel
    assert low < min(values)
    assert axes.get_title().startswith("loss (zoomed: ")


def test_plot_keeps_a_linear_axis_for_ordinary_curves_and_survives_non_finite_values(tmp_path):
    rows = _history([1.0, 0.8, 0.7, float("inf")], [1.1, 0.9, 0.85, float("nan")])
    [axes] = curves_figure(rows, _record(rows[:3]), "plain").axes
    assert (axes.get_yscale(), axes.get_title()) == ("linear", "loss")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.history_file.write_text(
        "epoch,loss,val_loss,best_saved,seconds\n1,20.0,18.0,1,0.1\n2,0.5,0.4,1,0.1\n"
        "3,0.05,0.04,1,0.1\n"
    )
    out = plot_run(run.path, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- -h


COMMANDS = ["train", "sweep", "evaluate", "predict", "export", "show", "plot", "summary"]


def test_dash_h_works_for_every_command_and_for_the_train_entry_point():
    code = (
        "import sys\nfrom keepbest.cli import main, train_main\n"
        "entry = train_main if sys.argv[1] == 'train-entry' else main\n"
        "sys.argv = ['keepbest', *sys.argv[2:]]\nentry()\n"
    )
    calls = [["train-entry", "-h"], ["keepbest", "-h"]]
    calls += [["keepbest", command, "-h"] for command in COMMANDS]
    for call in calls:
        done = subprocess.run(
            [sys.executable, "-c", code, *call],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert done.returncode == 0, (call, done.stderr)
        assert done.stdout.startswith("Usage: "), call
        assert "-h, --help" in done.stdout, call
