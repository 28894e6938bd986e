"""`keepbest tune` on a real Optuna journal store: a study of 8 trials on the bundled
digits, its first worker stopped by SIGTERM mid-trial, then two worker processes sharing
the journal finish it; the interrupted trial resumes in its own run dir and is counted
once, pruning judges the values measured at each evaluation point (never Keras' running
mean), and the best trial's checkpoint is verified again. Bad input is refused before
any trial runs."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import run_cli, small_config
from keepbest.errors import ConfigError, InputError
from keepbest.rundir.history import read_history
from keepbest.rundir.record import read_record
from keepbest.search.tune import Tuner

TRIALS = 8
# With seed 7, trial k draws with RandomSampler(seed=7 + k): trials 0-2 get the good
# learning rate, and 3, 4 and 6 the hopeless one, which the median pruner (once 2 trials
# are complete) stops.
SPACE = {
    "optimizer.learning_rate": {"choice": [1.0e-5, 0.01]},
    "model.kwargs.hidden": {"choice": [[8], [16]]},
}
ARGS = ["--space", "space.yaml", "--sampler", "random", "--seed", "7", "--startup-trials", "2"]
STEPS_PER_EPOCH = 45  # 1438 training digits in batches of 32


def write_study(folder: Path, **sections) -> None:
    # A training-set monitor: its measured value (epoch_end_loss) differs from Keras'
    # running mean (loss), so a report of the wrong one shows.
    sections = {
        "data": {"batch_size": 32},
        "train": {"epochs": 2},
        "checkpoint": {"monitor": "loss"},
        **sections,
    }
    cfg = small_config(name="st", **sections)
    (folder / "exp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))


def tune(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "keepbest", "tune", "exp.yaml", *ARGS, *extra],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def load_study(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "runs/st/optuna.journal"))
    )
    return optuna.load_study(study_name="st", storage=storage)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tune")
    write_study(folder)
    first = tune(folder, "--trials", str(TRIALS))
    deadline = time.monotonic() + 120
    while True:  # SIGTERM once trial 0 has finished an epoch: mid-trial
        found = list((folder / "runs/st").glob("000-*/history.csv"))
        if found and read_history(found[0]):
            break
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "trial 0 never finished an epoch"
        time.sleep(0.005)  # epoch 2 is short: the signal must land before its last step
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    interrupted = load_study(folder).get_trials()
    # two workers share the journal and finish the study
    workers = [tune(folder, "--trials", str(TRIALS)) for _ in range(2)]
    finished = [worker.communicate(timeout=300) for worker in workers]
    return {
        "folder": folder,
        "first": (first.returncode, out, err),
        "interrupted": interrupted,
        "workers": [(w.returncode, o, e) for w, (o, e) in zip(workers, finished, strict=True)],
        "trials": load_study(folder).get_trials(),
    }


def run_dir(study: dict, trial) -> Path:
    return study["folder"] / "runs/st" / trial.user_attrs["run_dir"]


def test_a_signal_stops_the_worker_and_the_trial_resumes_once(study):
    code, _, err = study["first"]
    assert code == 75, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    [stopped] = study["interrupted"]  # no trial was asked after the signal
    assert stopped.state == optuna.trial.TrialState.RUNNING and stopped.number == 0
    for code, _, err in study["workers"]:
        assert code == 0, err
    resumed = [out for _, out, _ in study["workers"] if "== trial 0: resuming" in out]
    assert len(resumed) == 1 and "resuming at epoch" in resumed[0]
    trials = study["trials"]
    assert [t.number for t in trials] == list(range(TRIALS))  # none asked twice, none lost
    trial0 = trials[0]
    assert trial0.state == optuna.trial.TrialState.COMPLETE
    history = read_history(run_dir(study, trial0) / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]  # one run dir, continued
    names = {t.user_attrs["run_dir"] for t in trials}
    assert len(names) == TRIALS
    on_disk = {p.name for p in (study["folder"] / "runs/st").iterdir() if p.is_dir()}
    assert on_disk == names


def test_tune_tells_statuses_in_the_words_of_show_and_summary(study):
    """A trial's end and the study's counts say done, as a run's status does, never
    Optuna's complete."""
    from keepbest.rundir.status import run_status

    outs = "".join(out for _, out, _ in study["workers"])
    counts = [line for line in outs.splitlines() if line.startswith("study 'st': ")]
    assert counts and all(" done" in line and "complete" not in line for line in counts)
    done = [line for line in outs.splitlines() if line.startswith("trial ") and " done: " in line]
    finished = [t for t in study["trials"] if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(finished) > 0
    assert {run_status(run_dir(study, t)).state for t in finished} == {"done"}


def test_two_workers_shared_the_study(study):
    owners = {t.user_attrs["keepbest_owner"]["pid"] for t in study["trials"][1:]}
    assert len(owners) == 2  # both workers trained trials after trial 0
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study["trials"])


def test_trials_report_the_measured_value_at_each_step_and_bad_ones_are_pruned(study):
    trials = study["trials"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state for t in trials]
    assert any(t.params["optimizer.learning_rate"] == 1.0e-5 for t in pruned)
    for trial in complete + pruned:
        history = read_history(run_dir(study, trial) / "history.csv")
        measured = {row["epoch"] * STEPS_PER_EPOCH: row["epoch_end_loss"] for row in history}
        reported = trial.intermediate_values
        assert reported.items() <= measured.items()  # the measured value, at its global step
        # every point is reported; but a stop at an epoch end leaves before the observers
        # hear of it (NotifyObservers runs after ResumeCheckpoint), so the interrupted
        # trial may lack the point where it stopped
        assert len(reported) >= len(measured) - (trial.number == 0)
        assert all(row["epoch_end_loss"] != row["loss"] for row in history)
    for trial in pruned:  # worse than the median of the trials complete by then
        step, value = max(trial.intermediate_values.items())
        before = [t for t in complete if t.datetime_complete < trial.datetime_complete]
        assert len(before) >= 2  # --startup-trials 2
        others = [t.intermediate_values[step] for t in before if step in t.intermediate_values]
        assert value > statistics.median(others)
        epoch = step // STEPS_PER_EPOCH
        assert trial.user_attrs["pruned"].startswith(f"at step {step} (epoch {epoch}): loss ")
    for trial in complete:  # the objective is the verified best value
        record = read_record(run_dir(study, trial))
        assert trial.value == record.verified_value == record.value
        assert trial.value == min(trial.intermediate_values.values())


def test_best_prints_the_best_trials_run_dir_and_its_checkpoint_verifies(study):
    folder = study["folder"]
    best = run_cli("tune", "exp.yaml", *ARGS, "--best", cwd=folder)
    assert best.returncode == 0, best.stderr
    path = Path(best.stdout.strip())
    complete = [t for t in study["trials"] if t.state == optuna.trial.TrialState.COMPLETE]
    values = {run_dir(study, t): read_record(run_dir(study, t)).verified_value for t in complete}
    assert path == min(values, key=values.get)
    from keepbest.inference.evaluate import evaluate_run

    evaluated = evaluate_run(path)  # reloads the checkpoint (sha256 first) and measures
    evaluated.check_reproduced()
    assert evaluated.measured == values[path]


def test_summary_ranks_trials_with_sampled_values_and_states(study):
    done = run_cli("summary", "runs/st", "--json", cwd=study["folder"])
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    trials = {t.number: t for t in study["trials"]}
    assert sorted(row["swept"]["trial"] for row in rows) == list(range(TRIALS))
    for row in rows:
        trial = trials[row["swept"]["trial"]]
        assert row["swept"]["model.kwargs.hidden"] == json.loads(
            trial.params["model.kwargs.hidden"]
        )
        assert row["swept"]["optimizer.learning_rate"] == trial.params["optimizer.learning_rate"]
        # the words of a run dir's status (done, not Optuna's complete), plus pruned
        state = trial.state.name.lower()
        assert row["status"] == {"complete": "done", "pruned": "pruned"}[state]
        if state == "pruned":
            assert row["detail"] == f"pruned {trial.user_attrs['pruned']}"
    complete = [row for row in rows if row["status"] == "done"]
    assert rows[: len(complete)] == complete  # trials done first, best first
    assert [row["value"] for row in complete] == sorted(row["value"] for row in complete)
    assert {row["status"] for row in rows} == {"done", "pruned"}
    table = run_cli("summary", "runs/st", "--wide", cwd=study["folder"])  # every key in full
    assert [line.split()[-1] for line in table.stdout.splitlines()[2:]] == [
        row["status"] for row in rows
    ]
    heading, header = table.stdout.splitlines()[:2]
    assert heading == "loss (min), best first:"  # one group: every trial monitors loss
    assert header.split()[:4] == [
        "run",
        "trial",
        "optimizer.learning_rate",
        "model.kwargs.hidden",
    ]


# --------------------------------------------------------------------------- bad input


def test_a_crashing_trial_is_marked_failed_with_its_error(tmp_path):
    write_study(tmp_path, train={"epochs": 1}, checkpoint={"monitor": "loss", "baseline": -1.0})
    done = run_cli("tune", "exp.yaml", *ARGS, "--trials", "1", "--pruner", "none", cwd=tmp_path)
    assert done.returncode == 4, done.stderr  # every trial of the worker failed: NoBestError
    warning, error = done.stderr.splitlines()
    assert warning.startswith("warning: trial 0 (000-learning_rate=0.01,hidden=")
    assert ") failed: no epoch qualified as best loss" in warning
    assert error.startswith("error: all 1 trials of this worker failed; the first: no epoch")
    [trial] = load_study(tmp_path).get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "none was finite and beat the baseline" in trial.user_attrs["error"]


def test_a_bad_key_refuses_the_whole_study_before_any_trial(tmp_path):
    write_study(tmp_path)
    space = {**SPACE, "optimizer.learning_rat": {"log_uniform": [1.0e-4, 0.1]}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    done = run_cli("tune", "exp.yaml", *ARGS, "--trials", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --space optimizer.learning_rat=0.0001: exp.yaml: optimizer.learning_rat: "
        "Adam has no argument 'learning_rat'; did you mean 'learning_rate'?"
    ]
    assert not (tmp_path / "runs").exists()


def problems(tmp_path, space: object, **options) -> list[str]:
    (tmp_path / "space.yaml").write_text(
        space if isinstance(space, str) else yaml.safe_dump(space, sort_keys=False)
    )
    with pytest.raises(InputError) as caught:
        tuner = Tuner.prepare(tmp_path / "exp.yaml", tmp_path / "space.yaml", 2, **options)
        tuner.open()
    return caught.value.problems


@pytest.mark.parametrize(
    ("space", "options", "expected"),
    [
        (
            {"model.kwargs.hidden": {"choice": [[8], 16]}},
            {},
            "--space model.kwargs.hidden=16: {cfg}: model.kwargs.hidden: mlp() expects a "
            "list of integers (got 16)",
        ),
        (
            {"optimizer.learning_rate": {"uniform": [-1, 0.1]}},
            {},
            "--space optimizer.learning_rate=-1.0: {cfg}: optimizer.learning_rate: must be "
            "a finite number greater than 0 (got -1.0)",
        ),
        (
            {"optimizer.learning_rate": {"log_uniform": [0, 0.1]}},
            {},
            "{space}: optimizer.learning_rate: log_uniform: low must be above 0 on a log "
            "scale (got 0)",
        ),
        (
            {"data.batch_size": {"int": [16, 8]}},
            {},
            "{space}: data.batch_size: int: low (16) must be below high (8)",
        ),
        (
            {"data.batch_size": {"integer": [8, 16]}},
            {},
            "{space}: data.batch_size: unknown distribution 'integer'; did you mean 'int'?",
        ),
        (
            {"checkpoint.monitor": {"choice": ["loss", "val_loss"]}},
            {},
            "{space}: checkpoint.monitor: cannot be searched: it is the objective; use the "
            "same monitor for every trial",
        ),
        (
            {"model.kwargs.hidden": [[8], [16]]},
            {},
            "{space}: model.kwargs.hidden: expected one distribution, e.g. {{log_uniform: "
            "[1.0e-4, 0.1]}}, {{uniform: [0.0, 0.5]}}, {{int: [16, 128, 16]}} or {{choice: "
            "[[64], [128, 64]]}} (got [[8], [16]])",
        ),
        ("[1, 2]\n", {}, "{space}: expected a mapping of dotted config keys to distributions"),
        ("a: [\n", {}, "{space}: line 2, column 1: invalid YAML"),
        (
            {"model.kwargs.dropout": {"uniform": [0.0, 0.5]}},
            {"sampler": "grid"},
            "{space}: model.kwargs.dropout: --sampler grid needs a finite set of values",
        ),
        (SPACE, {"study": "a/b"}, "--study: 'a/b': use letters, digits and . _ , = + - only"),
    ],
    ids=[
        "bad-choice",
        "bad-bound",
        "log-zero",
        "low-above-high",
        "unknown-kind",
        "objective",
        "not-a-distribution",
        "not-a-mapping",
        "not-yaml",
        "grid-continuous",
        "study-name",
    ],
)
def test_bad_spaces_are_refused_with_one_line_each(tmp_path, space, options, expected):
    write_study(tmp_path)
    lines = problems(tmp_path, space, **options)
    text = expected.format(cfg=tmp_path / "exp.yaml", space=tmp_path / "space.yaml")
    assert len(lines) == 1 and lines[0].startswith(text), lines
    assert not (tmp_path / "runs").exists()


def test_bad_places_for_the_study_are_refused(tmp_path):
    write_study(tmp_path)
    cfg, space = tmp_path / "exp.yaml", tmp_path / "space.yaml"
    with pytest.raises(ConfigError, match=r"missing\.yaml: --space file not found"):
        Tuner.prepare(cfg, tmp_path / "missing.yaml", 2)
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        Tuner.prepare(cfg, tmp_path, 2)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "st").write_text("a file")
    with pytest.raises(InputError, match=r"--study: .*runs/st is a file, not a folder"):
        Tuner.prepare(cfg, space, 2)
    (tmp_path / "runs" / "st").unlink()
    (tmp_path / "runs" / "st").mkdir()  # a single run's dir: its setup files
    (tmp_path / "runs" / "st" / "config.yaml").write_text(cfg.read_text())
    (tmp_path / "runs" / "st" / "data_spec.json").write_text("{}")
    with pytest.raises(InputError, match="runs/st is the run dir of a single run"):
        Tuner.prepare(cfg, space, 2)
    garbage = tmp_path / "garbage.journal"
    garbage.write_text("not a journal\n")
    with pytest.raises(InputError, match=r"garbage\.journal is not an Optuna journal"):
        Tuner.prepare(cfg, space, 2, study="other", storage=str(garbage)).open()
    assert garbage.read_text() == "not a journal\n"
    with pytest.raises(InputError, match="is a folder, not a journal file"):
        Tuner.prepare(cfg, space, 2, study="other", storage=str(tmp_path)).open()
    # a study searched over another space is not mixed with this one
    Tuner.prepare(cfg, space, 2, study="one").open()
    space.write_text(yaml.safe_dump({"model.kwargs.hidden": {"choice": [[8]]}}))
    with pytest.raises(InputError, match="searches another space"):
        Tuner.prepare(cfg, space, 2, study="one").open()
    with pytest.raises(InputError, match="no study 'two' yet"):
        Tuner.prepare(cfg, space, 2, study="two").open(create=False)
