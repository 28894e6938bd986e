"""MLflow tracking against a real local tracking store (SQLite in a temporary folder),
read back with MlflowClient: params, every evaluation point's values at its global step,
the verified best, the run dir's small files; a run stopped by SIGTERM and resumed logs
into the same MLflow run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import run_cli, small_config
from keepbest.config import load_config
from keepbest.config.diff import flatten_config
from keepbest.errors import ConfigError
from keepbest.rundir.history import read_history
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import read_record
from test_resume import start_training

STEPS_PER_EPOCH = 180  # 1438 training digits in batches of 8: a signal lands mid-epoch


def write(folder: Path, **mlflow) -> Path:
    tracking = {"tracking_uri": "sqlite:///tracking/mlflow.db", "experiment": "digits", **mlflow}
    cfg = small_config(
        data={"batch_size": 8},
        checkpoint={"monitor": "loss"},
        logging={"mlflow": tracking},
    )
    (folder / "tracking").mkdir(exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def client(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/tracking/mlflow.db")


def runs_of(folder: Path) -> list:
    experiment = client(folder).get_experiment_by_name("digits")
    return client(folder).search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("mlflow")
    config = write(folder)
    first = start_training(config)
    run = folder / "runs" / "t"
    deadline = time.monotonic() + 120
    while not read_history(run / "history.csv"):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    stopped = [(r.info.run_id, r.info.status) for r in runs_of(folder)]
    second = run_cli("train", "--config", str(config), cwd=folder)
    return {
        "folder": folder,
        "run": run,
        "first": (first.returncode, err),
        "stopped": stopped,
        "second": second,
        "runs": runs_of(folder),
    }


def test_a_stopped_run_is_killed_in_mlflow_and_its_resume_continues_the_same_run(tracked):
    code, err = tracked["first"]
    assert code == 75, err
    [(run_id, status)] = tracked["stopped"]
    assert status == "KILLED"
    assert tracked["second"].returncode == 0, tracked["second"].stderr
    assert "resuming at epoch" in tracked["second"].stdout
    [run] = tracked["runs"]
    assert (run.info.run_id, run.info.status) == (run_id, "FINISHED")
    stored = json.loads(RunDir(tracked["run"]).mlflow_file.read_text())
    assert stored["run_id"] == run_id


def test_every_evaluation_point_is_logged_at_its_step(tracked):
    [run] = tracked["runs"]
    history = read_history(tracked["run"] / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for key in ("loss", "epoch_end_loss", "val_loss", "accuracy", "epoch_end_accuracy"):
        logged = client(tracked["folder"]).get_metric_history(run.info.run_id, key)
        points = sorted((m.step, m.value) for m in logged)
        expected = [(row["epoch"] * STEPS_PER_EPOCH, row[key]) for row in history]
        assert points == expected, key


def test_params_best_record_and_artifacts(tracked):
    [run] = tracked["runs"]
    folder, run_dir = tracked["folder"], tracked["run"]
    saved = flatten_config(load_config(run_dir / "config.yaml", check_files=False))
    params = run.data.params
    assert params["optimizer.learning_rate"] == "0.01"
    assert params["model.kwargs.hidden"] == "[16]"
    assert set(params) == set(saved)
    record = read_record(run_dir)
    assert run.data.tags["best_epoch"] == str(record.epoch)
    assert run.data.tags["best_monitor"] == "loss"
    assert run.data.metrics["best_verified_value"] == pytest.approx(record.verified_value)
    assert run.data.metrics["best_value"] == pytest.approx(record.value)
    names = sorted(a.path for a in client(folder).list_artifacts(run.info.run_id))
    assert names == ["best.json", "config.yaml", "data_spec.json", "history.csv", "model.json"]
    local = client(folder).download_artifacts(run.info.run_id, "best.json", str(folder))
    assert Path(local).read_bytes() == (run_dir / "best.json").read_bytes()


def test_a_relative_sqlite_store_starts_at_the_config_folder(tmp_path):
    cfg = load_config(write(tmp_path))
    assert cfg.logging.mlflow.tracking_uri == f"sqlite:///{tmp_path}/tracking/mlflow.db"


def test_bad_mlflow_settings_are_refused_before_training(tmp_path, monkeypatch):
    config = write(tmp_path, tracking_uri="nosuch://nowhere")
    done = run_cli("train", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"error: {config}: logging.mlflow: cannot start an MLflow run in nosuch://nowhere ("
    )
    assert not (tmp_path / "runs" / "t" / "best.json").exists()
    with pytest.raises(ConfigError, match=r"logging\.mlflow\.experimnt: unknown key"):
        load_config(write(tmp_path, experimnt="x"))

    import importlib.util

    from keepbest.callbacks.mlflow_tracking import require_mlflow

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name)
    )
    with pytest.raises(ConfigError, match=r"pip install 'keepbest\[mlflow\]'"):
        require_mlflow(load_config(write(tmp_path)))
