"""The CLI-wide guard (keepbest.cli._run): an error keepbest has no name for is one line
plus where its traceback went (exit 1); an error of the operating system names the path
and the cause (exit 6 when only a write causes it); --debug shows the traceback."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import click
import pytest

from keepbest import cli


def command_raising(exc: BaseException) -> click.Command:
    @click.command()
    def broken() -> None:
        raise exc

    return broken


def run(exc: BaseException, monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    monkeypatch.setattr("sys.argv", ["keepbest", *args])
    monkeypatch.delenv("KEEPBEST_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_ERROR_LOG", cli._ErrorLog())
    with pytest.raises(SystemExit) as exited:
        cli._run(command_raising(exc))
    return exited.value.code, capsys.readouterr().err.splitlines()


def test_an_unexpected_error_is_one_line_and_a_log(monkeypatch, capsys, tmp_path):
    """No run dir: the traceback goes to the per-user cache, not the shared temp folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, lines = run(RuntimeError("boom\nsecond line"), monkeypatch, capsys)
    assert code == 1
    [line] = lines
    found = re.fullmatch(r"error: unexpected RuntimeError: boom \(the traceback is in (.+)\)", line)
    assert found, line
    log = Path(found.group(1))
    assert log.parent == tmp_path / "keepbest" / "errors"
    assert "Traceback (most recent call last)" in log.read_text()
    assert "RuntimeError: boom" in log.read_text()


def test_only_the_newest_tracebacks_are_kept(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "keepbest" / "errors"
    for number in range(cli.ERROR_LOGS_KEPT + 5):
        run(RuntimeError(f"boom {number}"), monkeypatch, capsys)
    logs = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(logs) == cli.ERROR_LOGS_KEPT
    assert f"boom {cli.ERROR_LOGS_KEPT + 4}" in logs[-1].read_text()
    assert not any("boom 0\n" in log.read_text() for log in logs)


def test_a_log_that_cannot_be_written_is_still_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "keepbest").write_text("a file where the cache folder goes")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, [line] = run(RuntimeError("boom"), monkeypatch, capsys)
    assert code == 1
    assert line == "error: unexpected RuntimeError: boom (run with --debug to see why)"


def test_the_log_goes_to_the_run_dir_being_trained(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.argv", ["keepbest"])
    guard = cli._ErrorLog()
    guard.run_dir = tmp_path
    monkeypatch.setattr(cli, "_ERROR_LOG", guard)
    with pytest.raises(SystemExit):
        cli._run(command_raising(KeyError("missing")))
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(f"(the traceback is in {tmp_path / 'error.log'})")
    assert "KeyError: 'missing'" in (tmp_path / "error.log").read_text()


def test_debug_shows_the_traceback(monkeypatch, capsys):
    code, lines = run(RuntimeError("boom"), monkeypatch, capsys, "--debug")
    assert code == 1
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "error: unexpected RuntimeError: boom"


@pytest.mark.parametrize(
    ("number", "code"), [(errno.ENOSPC, 6), (errno.EROFS, 6), (errno.EFBIG, 6), (errno.EIO, 1)]
)
def test_an_os_error_names_the_path_and_the_cause(monkeypatch, capsys, tmp_path, number, code):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    exc = OSError(number, "the cause", "/data/out.csv")
    exit_code, [line] = run(exc, monkeypatch, capsys)
    assert exit_code == code
    assert line.startswith(f"error: /data/out.csv: {os.strerror(number)} (")


def test_a_usage_error_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["keepbest", "predict", "--bogus"])
    with pytest.raises(SystemExit) as exited:
        cli._run(cli.cli)
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: No such option '--bogus'")
    assert line.endswith("--help)")


def test_only_the_command_changes_how_the_process_takes_signals():
    """A program that imports keepbest.cli keeps its own SIGTERM; `python -m keepbest`
    catches it from its first line (the test beside the hostile table signals one)."""
    import subprocess
    import sys

    check = "import signal, keepbest.cli; print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr
