"""The overwrite rule (keepbest.rundir.guard), case by case, on real folders: what export,
predict, plot, train, sweep and tune may write, and what they never replace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keepbest.errors import CorruptFileError, InputError
from keepbest.rundir.guard import check_output, check_run_dir, check_study_dir, enclosing_run

STUDY_MARKERS = ("study.json", "optuna.journal")


@pytest.fixture
def place(tmp_path, monkeypatch) -> Path:
    """A folder holding a run dir (runs/t: its setup files, a record, resume states) and a
    file of the user's; the working directory."""
    run = tmp_path / "runs" / "t"
    (run / "resume").mkdir(parents=True)
    for name in ("config.yaml", "data_spec.json", "best.json", "history.csv"):
        (run / name).write_text("x")
    (tmp_path / "mine.csv").write_text("precious")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(call, *fragments: str) -> str:
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_new_file_in_an_ordinary_folder_is_fine(place):
    assert check_output("p.csv", "--output") == Path("p.csv")
    assert check_output("runs/p.csv", "--output") == Path("runs/p.csv")  # beside runs


def test_an_existing_file_only_with_overwrite(place):
    refused(lambda: check_output("mine.csv", "--output"), "mine.csv exists", "--overwrite")
    assert check_output("mine.csv", "--output", overwrite=True) == Path("mine.csv")


@pytest.mark.parametrize(
    "target",
    ["runs/t", "runs/t/history.csv", "runs/t/new.csv", "runs/t/resume", "runs/t/resume/x.npz"],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_never_a_run_dir_nor_anything_inside_one(place, target, overwrite):
    for folder in (False, True):
        refused(
            lambda folder=folder: check_output(target, "--out", overwrite=overwrite, folder=folder),
            "--out: ",
            "not even with --overwrite",
        )


def test_never_a_folder_that_holds_a_run(place):
    refused(lambda: check_output("runs", "--out", overwrite=True, folder=True), "holds the run dir")


def test_never_through_a_link_into_a_run(place):
    Path("link.csv").symlink_to(place / "runs" / "t" / "history.csv")
    refused(lambda: check_output("link.csv", "--output", overwrite=True), "inside the run dir")


def test_never_the_input_however_it_is_spelled(place):
    os.link("mine.csv", "hard.csv")
    for spelling in ("mine.csv", "./mine.csv", str(place / "mine.csv"), "hard.csv"):
        refused(
            lambda spelling=spelling: check_output(
                spelling, "--output", overwrite=True, inputs=["mine.csv"]
            ),
            "is the input mine.csv",
        )


def test_a_command_s_own_file_in_the_run_dir(place):
    own = place / "runs" / "t" / "curves.png"
    own.write_text("old plot")
    assert check_output(own, "--out", own=own) == own  # replaced without --overwrite
    refused(lambda: check_output("runs/t/history.csv", "--out", own=own), "inside the run dir")


def test_kinds_of_output(place):
    Path("out.csv").mkdir()
    refused(lambda: check_output("out.csv", "--output", overwrite=True), "is a folder")
    is_model = ("a SavedModel", lambda folder: (folder / "saved_model.pb").is_file())
    Path("photos").mkdir()
    (place / "photos" / "a.jpg").write_text("mine")
    refused(
        lambda: check_output("photos", "--out", overwrite=True, folder=True, replaceable=is_model),
        "is a folder but not a SavedModel",
    )
    Path("export").mkdir()
    (place / "export" / "saved_model.pb").write_text("")
    refused(lambda: check_output("export", "--out", folder=True), "exists", "--overwrite")
    check_output("export", "--out", overwrite=True, folder=True, replaceable=is_model)
    check_output("mine.csv", "--out", overwrite=True, folder=True)  # a file where it goes


def test_the_folder_must_exist_and_be_one(place):
    refused(lambda: check_output("nope/p.csv", "--output"), "the folder nope does not exist")
    refused(lambda: check_output("mine.csv/p.csv", "--output"), "mine.csv is a file")


def test_enclosing_run_recognizes_a_damaged_run(place):
    (place / "runs" / "t" / "config.yaml").unlink()
    (place / "runs" / "t" / "data_spec.json").unlink()
    assert enclosing_run("runs/t/resume/state.npz") == place / "runs" / "t"  # best.json
    assert enclosing_run("runs/other.csv") is None


# --------------------------------------------------------------------------- run dirs


def test_train_may_use_a_new_an_empty_or_its_own_run_dir(place):
    check_run_dir(place / "runs" / "new")
    Path("runs/empty").mkdir()
    check_run_dir(place / "runs" / "empty")
    check_run_dir(place / "runs" / "t")  # to resume it
    check_run_dir(place / "runs" / "t" / "lr=0.1")  # a sweep's run inside a run


def test_a_folder_holding_only_runs_is_a_sweep_s(place):
    (place / "sweep" / "lr=0.1" / "resume").mkdir(parents=True)
    (place / "sweep" / "lr=0.1" / "best.json").write_text("x")
    check_run_dir(place / "sweep")


def test_train_never_writes_into_a_file_or_someone_else_s_folder(place):
    refused(lambda: check_run_dir(place / "mine.csv"), "mine.csv is a file, not a run dir")
    (place / "photos").mkdir()
    (place / "photos" / "a.jpg").write_text("mine")
    refused(lambda: check_run_dir(place / "photos"), "is not a keepbest run dir", "a.jpg")
    refused(lambda: check_run_dir(place / "mine.csv" / "t"), "mine.csv is a file, not a folder")


def test_a_new_run_never_takes_a_name_its_enclosing_run_uses(place):
    for name in ("resume", "history.csv", "tensorboard", ".tmp-1-x.best.weights.h5"):
        refused(lambda name=name: check_run_dir(place / "runs" / "t" / name), "belongs to")


def test_a_resume_folder_replaced_by_a_file_is_damage(place):
    resume = place / "runs" / "t" / "resume"
    resume.rmdir()
    resume.write_text("not a folder")
    with pytest.raises(CorruptFileError, match="resume is not a folder"):
        check_run_dir(place / "runs" / "t")
    check_run_dir(place / "runs" / "t", restart=True)  # the old run is set aside


def test_restart_overwrite_deletes_only_a_run_and_nothing_else(place):
    check_run_dir(place / "runs" / "t", restart=True, overwrite=True)
    (place / "runs" / "t" / "notes.txt").write_text("mine")
    refused(
        lambda: check_run_dir(place / "runs" / "t", restart=True, overwrite=True),
        "also holds notes.txt",
    )
    check_run_dir(place / "runs" / "t", restart=True)  # renamed aside: nothing is lost


# --------------------------------------------------------------------------- studies


def test_a_study_folder(place):
    check_study_dir(place / "runs" / "study", STUDY_MARKERS)
    (place / "runs" / "study").mkdir()
    (place / "runs" / "study" / "notes.txt").write_text("mine")
    refused(
        lambda: check_study_dir(place / "runs" / "study", STUDY_MARKERS),
        "is not a study's folder",
    )
    (place / "runs" / "study" / "study.json").write_text("{}")
    check_study_dir(place / "runs" / "study", STUDY_MARKERS)
    refused(lambda: check_study_dir(place / "runs" / "t", STUDY_MARKERS), "run dir of a single")
    refused(lambda: check_study_dir(place / "mine.csv", STUDY_MARKERS), "is a file")
    refused(lambda: check_study_dir(place / "runs" / "t" / "resume", STUDY_MARKERS), "belongs to")


def test_train_from_python_names_a_run_dir_too_long_for_the_file_system(place):
    """``keepbest.train`` checks the run dir's path as the command line does, before
    asking whether another process holds it (that look failed with ENAMETOOLONG): each
    folder name fits NAME_MAX, the whole passes PATH_MAX."""
    import keepbest

    deep = "/".join(["d" * 250] * 16)  # 4015 bytes, under PATH_MAX; with the name over it
    config = {
        "name": "n" * 250,
        "output_dir": deep,
        "data": {"source": "digits", "validation": {"split": 0.2}},
        "model": {"builder": "mlp"},
        "loss": "sparse_categorical_crossentropy",
    }
    message = refused(lambda: keepbest.train(config), "output_dir", "PATH_MAX")
    assert len(message.splitlines()) == 1, message
    assert not (place / ("d" * 250)).exists()
