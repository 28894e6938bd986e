"""The search space of `keepbest tune` (no training, no Optuna study): how a space file
becomes Optuna distributions, which values are checked before any trial, trial names,
and which interrupted trials a worker may adopt."""

from __future__ import annotations

import subprocess
import sys

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from keepbest.errors import ConfigError
from keepbest.search.space import parse_space, trial_name
from keepbest.search.tune import Owner


def test_each_kind_becomes_its_optuna_distribution():
    dims = parse_space(
        {
            "optimizer.learning_rate": {"log_uniform": [1.0e-4, 0.1]},
            "model.kwargs.dropout": {"uniform": [0.0, 0.5, 0.1]},
            "data.batch_size": {"int": [16, 128, 16]},
            "train.epochs": {"log_int": [1, 64]},
            "model.kwargs.hidden": {"choice": [[64], [128, 64]]},
            "optimizer.name": {"choice": ["adam", "sgd"]},
        }
    )
    got = {dim.key: dim.distribution() for dim in dims}
    assert got["optimizer.learning_rate"] == FloatDistribution(1.0e-4, 0.1, log=True)
    assert got["model.kwargs.dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert got["data.batch_size"] == IntDistribution(16, 128, step=16)
    assert got["train.epochs"] == IntDistribution(1, 64, log=True)
    # lists are no Optuna choices: they are stored as YAML and mapped back to values
    assert got["model.kwargs.hidden"] == CategoricalDistribution(["[64]", "[128, 64]"])
    hidden = dims[4]
    assert hidden.value("[128, 64]") == [128, 64] and dims[5].value("sgd") == "sgd"
    assert hidden.corners() == [[64], [128, 64]] and dims[2].corners() == [16, 128]
    assert dims[1].grid() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert dims[2].grid() == [16, 32, 48, 64, 80, 96, 112, 128]
    assert dims[0].grid() is None  # continuous: no grid search


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"int": [1.5, 4]}, "int: expected whole numbers (got [1.5, 4])"),
        ({"uniform": [0.1]}, "uniform: expected [low, high] or [low, high, step] of numbers"),
        ({"uniform": [True, 2]}, "uniform: expected [low, high] or [low, high, step] of numbers"),
        ({"uniform": [0, 1, -1]}, "uniform: step must be above 0 (got -1)"),
        ({"log_uniform": [0.1, 1, 0.1]}, "log_uniform: a log scale takes no step"),
        ({"choice": []}, "choice: expected a non-empty list of values (got [])"),
        ({"choice": [[1], [1]]}, "choice: [1] is listed twice"),
        ({"uniform": [0, 1], "int": [0, 1]}, "expected one distribution"),
    ],
)
def test_bad_distributions_name_the_key_and_the_problem(spec, problem):
    with pytest.raises(ConfigError) as caught:
        parse_space({"a.b": spec}, "space.yaml")
    [line] = caught.value.problems
    assert line.startswith(f"space.yaml: a.b: {problem}")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        parse_space({"name": {"choice": ["a"]}, "a..b": {"choice": [1]}, "x": {"int": [2, 1]}})
    assert [line.split(": ")[1] for line in caught.value.problems] == ["name", "a..b", "x"]


def test_trial_names_read_and_stay_valid_run_names():
    dims = parse_space(
        {
            "optimizer.learning_rate": {"log_uniform": [1.0e-5, 0.1]},
            "model.kwargs.hidden": {"choice": [[128, 64]]},
        }
    )
    values = {"optimizer.learning_rate": 0.0031234567, "model.kwargs.hidden": [128, 64]}
    assert trial_name(7, dims, values) == "007-learning_rate=0.00312,hidden=128-64"
    assert trial_name(3, dims, {**values, "optimizer.learning_rate": 1.23456e-5}).startswith(
        "003-learning_rate=1.23e-05,"
    )


def test_a_worker_adopts_its_own_requeued_trials_and_trials_of_dead_processes_here():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    dead = int(done.stdout)
    me = Owner("node1", 1234, "77")
    assert me.may_adopt({"host": "node2", "pid": 1, "slurm_job": "77"})  # requeued job
    assert me.may_adopt({"host": "node1", "pid": dead, "slurm_job": None})  # gone
    assert me.may_adopt(None)  # asked, then its worker died before naming it
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not me.may_adopt({"host": "node1", "pid": alive.pid, "slurm_job": "78"})
    finally:
        alive.kill()
        alive.wait()
    assert not me.may_adopt({"host": "node2", "pid": dead, "slurm_job": "78"})  # elsewhere


_OUT = {"capture_output": True, "text": True, "check": True}
