"""The decision logic, without training: which value improves, when patience runs out,
what a finished run says, whether a reload reproduces. Pure functions, real values."""

from __future__ import annotations

import json
import math

import pytest

from keepbest.measure import values_match
from keepbest.monitor import Monitor, patience_exhausted, stop_reason

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("monitor", "value", "best", "expected"),
    [
        (Monitor("val_loss", "min"), 0.5, 0.7, True),
        (Monitor("val_loss", "min"), 0.7, 0.7, False),  # equal is not better
        (Monitor("val_loss", "min"), 0.8, 0.7, False),
        (Monitor("val_loss", "min"), 0.5, None, True),  # the first finite value wins
        (Monitor("val_accuracy", "max"), 0.9, 0.8, True),
        (Monitor("val_accuracy", "max"), 0.8, 0.8, False),
        (Monitor("val_loss", "min", min_delta=0.1), 0.61, 0.7, False),  # not by more than 0.1
        (Monitor("val_loss", "min", min_delta=0.1), 0.59, 0.7, True),
        (Monitor("val_accuracy", "max", min_delta=0.05), 0.84, 0.8, False),
        (Monitor("val_accuracy", "max", min_delta=0.05), 0.86, 0.8, True),
        (Monitor("val_loss", "min", baseline=0.3), 0.4, None, False),  # must beat the baseline
        (Monitor("val_loss", "min", baseline=0.3), 0.2, None, True),
        (Monitor("val_accuracy", "max", baseline=0.9), 0.95, None, True),
        (Monitor("val_loss", "min", baseline=0.3), 0.25, 0.2, False),  # then the best counts
        (Monitor("val_loss", "min"), NAN, None, False),  # non-finite never becomes best
        (Monitor("val_loss", "min"), -INF, 0.7, False),
        (Monitor("val_accuracy", "max"), INF, 0.7, False),
        (Monitor("val_loss", "min"), NAN, 0.7, False),
    ],
)
def test_improves(monitor, value, best, expected):
    assert monitor.improves(value, best) is expected


def test_a_training_monitor_is_judged_on_its_end_of_epoch_value():
    assert Monitor("loss", "min").log_key == "epoch_end_loss"
    assert Monitor("accuracy", "max").metric == "accuracy"
    assert Monitor("val_loss", "min").log_key == "val_loss"
    assert Monitor("val_loss", "min").metric == "loss"
    assert Monitor("val_loss", "min").on_validation and not Monitor("loss", "min").on_validation


@pytest.mark.parametrize(
    ("done", "best_at", "patience", "start_from", "expected"),
    [
        (5, 5, 3, 0, None),  # just improved
        (7, 5, 3, 0, None),  # waited 2 of 3
        (8, 5, 3, 0, 3),  # waited 3 of 3: stop
        (9, 5, 3, 0, 4),  # (a resumed run that raised nothing: still exhausted)
        (8, 5, None, 0, None),  # patience off
        (3, None, 3, 0, 3),  # no best at all: counted from the start
        (2, None, 3, 0, None),
        (4, None, 3, 4, None),  # warm-up epochs are not counted
        (6, None, 3, 4, None),
        (7, None, 3, 4, 3),
        (7, 6, 1, 4, 1),
    ],
)
def test_patience_exhausted(done, best_at, patience, start_from, expected):
    assert patience_exhausted(done, best_at, patience, start_from) == expected


def test_stop_reasons_have_one_wording():
    assert stop_reason("patience", "val_loss", waited=5, patience=5) == (
        "no improvement of val_loss for 5 epochs (patience 5)"
    )
    assert stop_reason("patience", "loss", waited=4, patience=4, unit="evaluations") == (
        "no improvement of loss for 4 evaluations (patience 4)"
    )
    assert stop_reason("nonfinite", "loss", value=NAN, where="at epoch 3") == (
        "loss is nan at epoch 3"
    )
    assert stop_reason("nonfinite", "loss") == "loss became non-finite"


@pytest.mark.parametrize(
    ("measured", "recorded", "tolerance", "expected"),
    [
        (0.0717901, 0.0717901, 0.0, True),
        (0.07179010000000001, 0.0717901, 0.0, False),  # exact means exact on CPU
        (0.07179, 0.0717901, 1e-5, True),  # relative 1e-5 of 0.07 is 7.2e-7
        (0.0717, 0.0717901, 1e-5, False),
        (0.0717901 + 5e-6, 0.0717901, 1e-5, False),  # an absolute 1e-5 would pass this
        (1e-9, 0.0, 1e-5, False),  # no absolute slack around zero
        (1000.005, 1000.0, 1e-5, True),
        (1000.02, 1000.0, 1e-5, False),
    ],
)
def test_values_match_is_relative_only(measured, recorded, tolerance, expected):
    assert values_match(measured, recorded, tolerance) is expected


# --------------------------------------------------------------------------- schedules


def test_evaluation_points_every_n_steps_and_their_ordinals():
    from keepbest.monitor import Schedule

    every = Schedule(every_steps=20, start_from_step=45)
    assert [step for step in range(1, 101) if every.is_point(step)] == [20, 40, 60, 80, 100]
    assert not every.is_point(0)
    assert [every.ordinal(epoch=1, step=s) for s in (20, 40, 60)] == [1, 2, 3]
    assert every.start_from == 2  # the points at steps 20 and 40 are warm-up
    assert every.unit == "evaluations"
    epochs = Schedule(start_from_epoch=3)
    assert not epochs.is_point(20)  # points are epoch ends, which the loop knows
    assert (epochs.ordinal(epoch=4, step=92), epochs.start_from, epochs.unit) == (4, 3, "epochs")


# --------------------------------------------------------------------------- cadence


@pytest.mark.parametrize(
    ("cadence", "steps", "seconds", "last_cost", "expected"),
    [
        # the budget alone: as soon as the time since the last state pays for it
        ({}, 1, 0.001, None, True),  # no state yet (or its cost unknown): write one
        ({}, 10, 19.9, 1.0, False),  # 1 s of writing needs 20 s of training at 5%
        ({}, 10, 20.0, 1.0, True),
        ({"max_overhead": 0.5}, 1, 2.0, 1.0, True),
        ({}, 0, 100.0, 1.0, False),  # no step since the last state: nothing new to save
        # a fixed cadence, with the budget still applying
        ({"every_steps": 100}, 99, 1000.0, 1.0, False),
        ({"every_steps": 100}, 100, 1000.0, 1.0, True),
        ({"every_steps": 100}, 100, 10.0, 1.0, False),  # wanted, but over the budget
        ({"every_seconds": 60.0}, 5, 59.0, 0.1, False),
        ({"every_seconds": 60.0}, 5, 60.0, 0.1, True),
        ({"every_steps": 100, "every_seconds": 60.0}, 5, 61.0, 0.1, True),  # either one
        # a fixed cadence alone
        ({"every_steps": 100, "max_overhead": None}, 100, 0.5, 30.0, True),
        ({"every_seconds": 1.0, "max_overhead": None}, 3, 0.5, 30.0, False),
    ],
)
def test_resume_cadence(cadence, steps, seconds, last_cost, expected):
    from keepbest.callbacks.resume import Cadence

    assert Cadence(**cadence).due(steps, seconds, last_cost) is expected


def test_a_cadence_config_needs_some_cadence(tmp_path):
    from keepbest.config import load_config
    from keepbest.errors import ConfigError

    base = {"name": "t", "data": {"source": "digits", "validation": {"split": 0.2}}}
    with pytest.raises(ConfigError, match=r"resume\.max_overhead: null leaves no cadence"):
        load_config({**base, "resume": {"max_overhead": None}})
    assert load_config({**base, "resume": {"max_overhead": None, "every_seconds": 600}})
    with pytest.raises(ConfigError, match=r"set checkpoint\.start_from_step instead"):
        load_config({**base, "checkpoint": {"every_steps": 10, "start_from_epoch": 1}})
    with pytest.raises(ConfigError, match=r"applies with checkpoint\.every_steps only"):
        load_config({**base, "checkpoint": {"start_from_step": 10}})


@pytest.mark.parametrize(
    "monitor, direction",
    [
        ("val_accuracy", "max"),
        ("sparse_categorical_accuracy", "max"),
        ("val_acc", "max"),
        ("auc", "max"),
        ("val_auc_2", "max"),  # Keras numbers a second AUC metric
        ("precision", "max"),
        ("val_recall", "max"),
        ("f1_score", "max"),
        ("loss", "min"),
        ("val_loss", "min"),
        ("val_mse", "min"),
        ("mae", "min"),
        ("mean_squared_error", "min"),
        ("val_root_mean_squared_error", "min"),
        ("categorical_crossentropy", "min"),
        ("accuracy_loss", "min"),  # a loss of an accuracy is a loss
        ("true_positives", None),
        ("val_confident", None),
        ("score", None),
    ],
)
def test_direction_from_name(monitor, direction):
    from keepbest.monitor import direction_from_name

    assert direction_from_name(monitor) == direction


def test_a_mode_against_the_monitor_s_name_is_refused_unless_forced():
    from keepbest.config import load_config
    from keepbest.errors import ConfigError

    base = {"name": "t", "data": {"source": "digits", "validation": {"split": 0.2}}}
    base["metrics"] = ["accuracy"]
    with pytest.raises(ConfigError) as caught:
        load_config({**base, "checkpoint": {"monitor": "val_accuracy", "mode": "min"}})
    assert caught.value.problems == [
        "config: checkpoint.mode: min contradicts val_accuracy (an accuracy goes up when the "
        "model improves); use mode: max, or auto, or set checkpoint.force_mode: true"
    ]
    with pytest.raises(ConfigError, match=r"^config: checkpoint\.mode: max contradicts loss \(a"):
        load_config({**base, "checkpoint": {"monitor": "loss", "mode": "max"}})
    forced = {"monitor": "val_accuracy", "mode": "min", "force_mode": True}
    assert load_config({**base, "checkpoint": forced}).checkpoint.mode == "min"
    for agreed in ({"monitor": "val_accuracy", "mode": "max"}, {"monitor": "loss", "mode": "min"}):
        assert load_config({**base, "checkpoint": agreed}).checkpoint.mode == agreed["mode"]
    unnamed = {"monitor": "val_loss", "mode": "auto"}
    assert load_config({**base, "checkpoint": unnamed}).checkpoint.mode == "auto"


def _tf_config(task: str, index: int, chief: bool = False) -> dict:
    cluster = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if chief else {})}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task, "index": index}})}


@pytest.mark.parametrize(
    "env, writes",
    [
        (_tf_config("worker", 0), True),
        (_tf_config("worker", 1), False),
        (_tf_config("worker", 0, chief=True), False),
        (_tf_config("chief", 0, chief=True), True),
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}, True),
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "1"}, False),
    ],
)
def test_only_the_chief_s_run_dir_must_be_writable_before_training(monkeypatch, env, writes):
    """The pre-flight write check runs where the chief will write; the other workers see
    the run dir read-only by design and must not be refused for it."""
    from keepbest.cluster.distribute import may_write
    from keepbest.config.schema import DistributeConfig

    for name in ("TF_CONFIG", "SLURM_JOB_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert may_write(DistributeConfig(strategy="multi_worker")) is writes
    assert may_write(DistributeConfig(strategy="none")) is True
