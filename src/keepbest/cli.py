"""The command line: ``train --config exp.yaml`` and ``keepbest <command>``.

Every keepbest error ends the process with one ``error: ...`` line per problem on stderr
and its documented exit code (see ``keepbest.errors``), never a traceback. So do a
command-line slip (click's usage errors) and an error of the operating system. Anything
else is a bug or a fault in user code: one line that says where its full traceback was
written (``error.log`` in the run dir that ``train`` was writing, else a temporary file),
exit code 1; ``--debug`` (anywhere on the command line) or ``KEEPBEST_DEBUG=1`` prints the
traceback instead.

A stop signal (SIGTERM, SIGINT, SIGUSR1) before training begins ends the command with one
line and exit 75 (``keepbest.signals.watch_start_up``, installed by the package root
before any heavy import); TensorFlow missing (``pip install keepbest`` without an extra) is one line
naming the extras.

Example::

    train --config configs/quickstart.yaml --set train.epochs=5
    keepbest train --config configs/quickstart.yaml --print-config
"""

from __future__ import annotations

# The stop signals are watched already: keepbest/__init__.py installs the watch when the
# process is the command, before this module's heavy imports (see keepbest.signals).
import contextlib
import errno
import json
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click

from keepbest.config.schema import MAX_SEED
from keepbest.errors import EXIT_STOPPED, EXIT_UNEXPECTED, EXIT_WRITE_FAILED, KeepbestError
from keepbest.inference.export import FORMATS as EXPORT_FORMATS
from keepbest.rundir.guard import check_input
from keepbest.signals import StartUpStop, arm, end_start_up, watch_start_up

# TensorFlow's INFO chatter (oneDNN notices...) drowns the one-line-per-epoch log; it must
# be silenced before TensorFlow is first imported. Users can still set their own level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up chatter (absl and oneDNN notices, which no
    environment variable silences) kept off stderr, so that stderr holds keepbest's own
    lines. If the import fails, what TensorFlow said is shown after all."""
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports TensorFlow)
        except StartUpStop:
            raise  # a stop signal: what TensorFlow said so far is noise
        except BaseException as exc:
            os.dup2(saved, 2)
            if _missing_tensorflow(exc) is None:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_EXTRAS = 'pip install "keepbest[cpu]" (or "keepbest[gpu]" for a GPU)'


def _missing_tensorflow(exc: BaseException) -> str | None:
    """The one line for TensorFlow or Keras not installed (keepbest installed without its
    ``[cpu]`` or ``[gpu]`` extra), or None for any other error."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and name in ("tensorflow", "keras"):
        return f"keepbest needs TensorFlow and Keras, but {name} is not installed: {_EXTRAS}"
    return None


overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (parsed as YAML), e.g. --set train.epochs=30. Repeatable.",
)


HELP_OPTIONS = ["-h", "--help"]


@click.group(context_settings={"help_option_names": HELP_OPTIONS})
def cli() -> None:
    """keepbest: train Keras models and keep the provably best checkpoint.

    Errors are one line each; --debug (anywhere) shows the traceback of an unexpected one."""


@cli.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The experiment's YAML file.",
)
@overrides_option
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option(
    "--restart",
    is_flag=True,
    help="Start the run over; the old run dir is renamed aside (NAME.old-TIMESTAMP).",
)
@click.option("--overwrite", is_flag=True, help="With --restart: delete the old run instead.")
def train_command(
    config_path: str,
    overrides: tuple[str, ...],
    print_config: bool,
    restart: bool,
    overwrite: bool,
) -> None:
    """Train the model a config describes (or resume it) and verify its best checkpoint.

    A run dir holding a resume state continues where it stopped. Exit codes: 0 done,
    2 bad input, 3 verification failed, 4 no best, 5 run dir busy, 6 write failed,
    7 corrupt file, 8 a multi-worker peer was lost, 75 stopped by a signal after saving
    (run again to resume).
    """
    from keepbest.callbacks.mlflow_tracking import require_mlflow
    from keepbest.config import config_to_yaml, load_config

    cfg = load_config(check_input(config_path, "--config"), overrides)
    if print_config:
        click.echo(config_to_yaml(cfg), nl=False)
        return
    from keepbest.config import reported_against
    from keepbest.rundir.guard import check_run_path
    from keepbest.training import check_run_dir

    # Before TensorFlow loads (seconds): where the run goes, MLflow's server, and the data
    # (but a python factory's, which may import TensorFlow itself).
    with reported_against(cfg):
        check_run_path(cfg.run_dir())  # a name the file system takes, before any look
    run = check_run_dir(cfg, restart, overwrite)
    require_mlflow(cfg)
    _ERROR_LOG.run_dir = run.path
    if cfg.data.source != "python":
        from keepbest.data.pipelines import read_training_data

        read_training_data(cfg)
    _import_tensorflow_quietly()
    from keepbest.training import train

    result = train(cfg, restart=restart, overwrite=overwrite)
    click.echo(result.summary())


@cli.command("sweep")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option(
    "--grid",
    "grid_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML mapping of dotted config keys to lists of values.",
)
@overrides_option
@click.option(
    "--index",
    type=int,
    default=None,
    envvar="SLURM_ARRAY_TASK_ID",
    help="Run only this run of the sweep, numbered from 0 as --dry-run lists them "
    "(default: $SLURM_ARRAY_TASK_ID).",
)
@click.option("--dry-run", is_flag=True, help="List the runs and exit.")
def sweep_command(
    config_path: str,
    grid_path: str,
    overrides: tuple[str, ...],
    index: int | None,
    dry_run: bool,
) -> None:
    """Expand CONFIG x GRID into runs and train them in turn (or the --index one).

    Every run of a grid of up to 1000 is validated before the first trains (of a larger
    grid, every value once; each run again when it trains). Finished runs are skipped,
    stopped ones resume. A signal stops the whole sweep (exit 75); other failures are
    reported and the remaining runs still train (the exit code is the first failure's).
    """
    from keepbest.errors import KeepbestError, StoppedForResume
    from keepbest.search.sweep import expand_sweep, run_label, select

    config = check_input(config_path, "CONFIG")
    sweep = expand_sweep(config, check_input(grid_path, "--grid"), overrides)
    chosen = range(len(sweep)) if index is None else [select(sweep, index)[0].index]
    count = len(sweep)
    if dry_run:  # listed lazily: the first line at once, whatever the grid's size
        for number in chosen:
            click.echo(sweep.line(number))
        click.echo(f"{count} runs; as a Slurm array: sbatch --array=0-{count - 1}")
        return
    _import_tensorflow_quietly()
    from keepbest.training import train

    failures: list[tuple[str, KeepbestError]] = []
    for number in chosen:
        name = sweep.name(number)
        click.echo(f"== {run_label(number, count)}: {name}")
        try:
            run = sweep[number]  # validated again: a large grid's runs were not all checked
            _ERROR_LOG.run_dir = run.config.run_dir()
            click.echo(train(run.config).summary())
        except StoppedForResume:
            raise
        except KeepbestError as exc:
            click.echo(f"error: {run_label(number, count)} ({name}): {exc}", err=True)
            failures.append((name, exc))
    if failures:
        raise type(failures[0][1])(
            f"{len(failures)} of {len(chosen)} runs failed: "
            + ", ".join(name for name, _ in failures)
        )


@cli.command("tune")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option(
    "--space",
    "space_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML mapping of dotted config keys to distributions.",
)
@click.option("--trials", type=click.IntRange(min=1), help="The study's total number of trials.")
@click.option(
    "--study", "study_name", help="The study's name and folder (default: the config's name)."
)
@click.option(
    "--storage",
    help="An Optuna storage URL (sqlite:///study.db) or a journal file; default: "
    "optuna.journal in the study's folder.",
)
@click.option(
    "--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True
)
@click.option(
    "--pruner", type=click.Choice(["median", "none"]), default="median", show_default=True
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    help="The sampler's seed (default: the config's seed).",
)
@click.option(
    "--startup-trials",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Complete trials before the median pruner prunes and TPE models the space.",
)
@overrides_option
@click.option("--best", is_flag=True, help="Print the best trial's run dir and exit.")
def tune_command(
    config_path: str,
    space_path: str,
    trials: int | None,
    study_name: str | None,
    storage: str | None,
    sampler: str,
    pruner: str,
    seed: int | None,
    startup_trials: int,
    overrides: tuple[str, ...],
    best: bool,
) -> None:
    """Search CONFIG's hyperparameters over --space with Optuna; every trial is a run dir
    whose objective is its verified best value.

    Several processes (or Slurm array tasks) with the same arguments share the study and
    its --trials. A signal stops the worker after saving (exit 75); running it again
    resumes the interrupted trial. --best prints the best trial's run dir.
    """
    from keepbest.errors import InputError
    from keepbest.search.tune import Tuner

    if trials is None and not best:
        raise InputError("--trials: give the study's number of trials, e.g. --trials 20")
    config_path, space_path = check_input(config_path, "CONFIG"), check_input(space_path, "--space")
    arguments = (config_path, space_path, trials, study_name, storage, sampler, pruner, seed)
    # Config, space and study folder first, without TensorFlow; then the space against
    # the config, which builds optimizers and metrics.
    tuner = Tuner.prepare(*arguments, startup_trials, overrides, check=False)
    if not best:
        _import_tensorflow_quietly()
        tuner = Tuner.prepare(*arguments, startup_trials, overrides, check=True)
    if best:
        click.echo(str(tuner.open(create=False).best_run_dir()))
        return
    tuner.open()
    outcomes = tuner.work()
    click.echo(tuner.summary())
    failed = [o for o in outcomes if o.state == "failed"]
    if outcomes and len(failed) == len(outcomes):
        error = failed[0].error
        raise type(error)(f"all {len(outcomes)} trials of this worker failed; the first: {error}")


RUN_DIR = click.Path(exists=True, file_okay=False)


@cli.command("evaluate")
@click.argument("run_dir", type=RUN_DIR)
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True),
    help="A file (or image folder) in the run's data format, raw as its training files; "
    "default: the run's own data.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate_command(run_dir: str, data_file: str | None, as_json: bool) -> None:
    """Measure RUN_DIR's best model again: every compiled metric and the monitored value,
    which must reproduce the recorded one (exit 3 if not)."""
    from keepbest.inference.evaluate import check_data_file
    from keepbest.rundir.record import read_record

    read_record(run_dir)  # a run dir without a (valid) record fails before TensorFlow loads
    if data_file is not None:
        check_data_file(run_dir, data_file)  # of the run's kind: a file, or a folder
    _import_tensorflow_quietly()
    from keepbest.inference.evaluate import evaluate_run

    result = evaluate_run(run_dir, data_file)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())
    result.check_reproduced()


@cli.command("predict")
@click.argument("run_dir", type=RUN_DIR)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True),
    help="An .npz (array 'x'), a .csv (the feature columns) or a folder of images.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="An .npz or .csv file, written atomically.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Default: the run's data.batch_size."
)
@click.option(
    "--overwrite", is_flag=True, help="Replace --output if it exists (never a run's file)."
)
@click.option(
    "--keep",
    multiple=True,
    metavar="COLUMN",
    help="A column of a .csv --input to copy into a .csv --output, in front of the "
    "predictions (repeat it, or separate names by commas; --keep '' keeps none). Default: "
    "every column the model does not take but the run's target (an id, say).",
)
@click.option(
    "--precision",
    type=click.IntRange(1, 17),
    help="Significant digits of the numbers in a .csv --output (default 6); an .npz keeps "
    "full floats.",
)
def predict_command(
    run_dir: str,
    input_path: str,
    output_path: str,
    batch_size: int | None,
    overwrite: bool,
    keep: tuple[str, ...],
    precision: int | None,
) -> None:
    """Predict every sample of --input with RUN_DIR's best model.

    The input holds raw values, as the run's training files do (the model applies the
    run's preprocessing itself); values far outside the training range get a warning.
    A .csv output starts with the input's columns the model does not take (--keep)."""
    from keepbest.inference.predict import prepare_prediction

    columns = [n.strip() for given in keep for n in given.split(",") if n.strip()] if keep else None
    # the output, the run and the input, checked before TensorFlow loads
    job = prepare_prediction(
        run_dir, input_path, output_path, batch_size, overwrite, columns, precision
    )
    _import_tensorflow_quietly()
    result = job.run()
    click.echo(f"wrote {result.count} predictions to {result.path}")


@cli.command("export")
@click.argument("run_dir", type=RUN_DIR)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(EXPORT_FORMATS),
    default="keras",
    show_default=True,
    help="keras: one .keras file; savedmodel: a TensorFlow SavedModel folder.",
)
@click.option("--out", required=True, type=click.Path(), help="The file or folder to write.")
@click.option(
    "--overwrite", is_flag=True, help="Replace --out if it exists (never a run or its files)."
)
def export_command(run_dir: str, export_format: str, out: str, overwrite: bool) -> None:
    """Export RUN_DIR's best model for serving; it loads without keepbest installed."""
    from keepbest.inference.export import check_target
    from keepbest.rundir.record import read_record

    check_target(out, export_format, overwrite)  # before TensorFlow loads
    read_record(run_dir)
    _import_tensorflow_quietly()
    from keepbest.inference.export import export_model

    click.echo(export_model(run_dir, out, export_format, overwrite).summary())


@cli.command("show")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_command(run_dir: str, as_json: bool) -> None:
    """Show RUN_DIR: status, best epoch and value, verified value, config, files."""
    from keepbest.rundir.show import describe_run

    overview = describe_run(run_dir)
    click.echo(json.dumps(overview.to_dict(), indent=2) if as_json else overview.text())


@cli.command("plot")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--out", type=click.Path(), help="The PNG to write; default: RUN_DIR/curves.png.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (never a run's file).")
def plot_command(run_dir: str, out: str | None, overwrite: bool) -> None:
    """Plot RUN_DIR's training and validation curves per metric, the best epoch marked."""
    from keepbest.rundir.plot import plot_run

    click.echo(f"wrote {plot_run(run_dir, out, overwrite)}")


@cli.command("summary")
@click.argument("runs_dir", metavar="RUNS_DIR", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--wide", is_flag=True, help="Every column, nothing shortened.")
def summary_command(runs_dir: str, as_json: bool, wide: bool) -> None:
    """A table of the runs under RUNS_DIR per monitor, best first: the swept values, best
    epoch, monitored value, verified, status (done / resumable / running / failed). For a
    study's folder (keepbest tune): every trial, its sampled values and status (the same
    words, plus pruned).

    Runs with different monitors or modes are ranked in separate tables. The table fits
    the terminal (or $COLUMNS, else 80 columns); --wide shows everything."""
    import dataclasses
    import shutil

    from keepbest.rundir.table import format_table, summarize
    from keepbest.search.tune import summarize_study

    rows = summarize_study(runs_dir)  # a study's folder: every trial, with Optuna's state
    if rows is None:
        rows = summarize(runs_dir)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    else:
        width = None if wide else shutil.get_terminal_size((80, 24)).columns
        click.echo(format_table(rows, width))


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def _show_logs() -> None:
    """What the user sees of keepbest's logs: progress and notices (INFO) on stdout as
    they are, warnings on stderr as ``warning: ...``. Library code only logs."""
    logger = logging.getLogger("keepbest")
    if logger.handlers:
        return
    info = logging.StreamHandler(sys.stdout)
    info.setLevel(logging.INFO)
    info.addFilter(_Below(logging.WARNING))
    info.setFormatter(logging.Formatter("%(message)s"))
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(info)
    logger.addHandler(warnings)
    logger.setLevel(logging.INFO)
    logger.propagate = False


ERROR_LOGS_KEPT = 20  # tracebacks kept in the per-user cache folder, the newest


def error_log_folder() -> Path:
    """Where the tracebacks of unexpected errors go when no run dir takes them: a
    per-user cache folder (``$XDG_CACHE_HOME/keepbest/errors``, else
    ``~/.cache/keepbest/errors``), never the shared temporary folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "keepbest" / "errors"


class _ErrorLog:
    """Where the traceback of an unexpected error goes: ``error.log`` in the run dir that
    ``train`` (or a sweep or tune trial) writes, once it exists; else a file of its own in
    ``error_log_folder()``, of which only the newest ``ERROR_LOGS_KEPT`` are kept. Never
    fails: a traceback that cannot be written is not written (the line says --debug)."""

    run_dir: Path | None = None

    def write(self, text: str) -> Path | None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        command = " ".join(sys.argv[1:])
        entry = f"--- {stamp} keepbest {command}\n{text}\n"
        try:
            return self._in_run(entry) or self._in_cache(entry)
        except (OSError, ValueError):
            return None

    def _in_run(self, entry: str) -> Path | None:
        from keepbest.rundir.layout import RunDir

        try:
            if self.run_dir is None or not Path(self.run_dir).is_dir():
                return None
            path = RunDir(self.run_dir).error_log
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(entry)
            return path
        except OSError:
            return None

    def _in_cache(self, entry: str) -> Path:
        folder = error_log_folder()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        fd, name = tempfile.mkstemp(prefix=f"error-{stamp}-", suffix=".log", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(entry)
        logs = sorted(folder.glob("error-*.log"), key=lambda p: (p.stat().st_mtime, p.name))
        for old in logs[:-ERROR_LOGS_KEPT]:
            old.unlink(missing_ok=True)
        return Path(name)


_ERROR_LOG = _ErrorLog()
# Errors of the operating system that only a write can cause: exit 6 (a write failed).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _take_debug_flag() -> bool:
    """``--debug`` anywhere before a ``--`` (removed from the arguments), or
    ``KEEPBEST_DEBUG=1``: show the traceback of an unexpected error."""
    args = sys.argv[1:]
    end = args.index("--") if "--" in args else len(args)
    found = "--debug" in args[:end]
    if found:
        sys.argv = [sys.argv[0]] + [a for i, a in enumerate(args) if i >= end or a != "--debug"]
    return found or os.environ.get("KEEPBEST_DEBUG", "") not in ("", "0")


def _unexpected(exc: BaseException, debug: bool) -> int:
    """One line for an error keepbest has no name for; the traceback goes to a file (or,
    with --debug, to stderr). Returns the exit code."""
    import traceback

    from keepbest.atomic import failure_text

    text = "".join(traceback.format_exception(exc))
    code = EXIT_UNEXPECTED
    if isinstance(exc, OSError):  # an OS error no write or read path named: path and cause
        from keepbest.rundir.guard import printable

        name = printable(exc.filename) if exc.filename else ""
        name = name if len(name) <= 120 else f"{name[:60]}...{name[-57:]}"
        where = f"{name}: " if name else ""
        line = f"{where}{failure_text(exc)}"
        if exc.errno in _WRITE_ERRNOS:
            code = EXIT_WRITE_FAILED
    else:
        line = f"unexpected {failure_text(exc)}"
    if debug:
        sys.stderr.write(text)
        click.echo(f"error: {line}", err=True)
        return code
    log_path = _ERROR_LOG.write(text)
    where = f"the traceback is in {log_path}" if log_path else "run with --debug to see why"
    click.echo(f"error: {line} ({where})", err=True)
    return code


def _usage_line(exc: click.ClickException) -> str:
    """A click error as one line: the message, and where the help is."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message = f"{message.rstrip('.')} (see {ctx.command_path} --help)"
    return f"error: {message}"


def _hdf5_files_open() -> int:
    """How many HDF5 files h5py (if loaded) still has open."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return 0
    try:
        return len(h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE))
    except Exception:
        return 0


def _exit(code: int) -> None:
    """End the process with ``code``. After a failed write that left an HDF5 file open,
    without the interpreter's clean-up (``os._exit``, the streams flushed first). An HDF5
    file whose write failed (the file-size limit, a full disk) stays open in HDF5 after
    its ``close`` raised; HDF5's clean-up at exit, or any later close, flushes it again
    and may crash (SIGSEGV, exit -11, after the right error line). The best's own save
    never leaves one (``weights_h5.Sink``: HDF5 sees no failed write); the average of the
    kept points (``rundir.average``, written by h5py directly) still can. Everything
    keepbest saved is durable already, and the failed file was a temporary one, removed."""
    if code == EXIT_WRITE_FAILED and _hdf5_files_open():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _run(command: click.Command) -> None:
    debug = _take_debug_flag()
    for stream in (sys.stdout, sys.stderr):  # a name that is not UTF-8 is still printed
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    _show_logs()
    try:
        arm()  # a stop signal now (or one that came during the imports) ends the command
        # -h for every command, also for `train`, which is its own entry point
        command.main(standalone_mode=False, help_option_names=HELP_OPTIONS)
    except StartUpStop as stop:
        click.echo(
            f"error: stopped by {stop.name} before training started; nothing needed saving: "
            "run the same command to start again",
            err=True,
        )
        sys.exit(EXIT_STOPPED)
    except KeepbestError as exc:
        for line in str(exc).splitlines():
            click.echo(f"error: {line}", err=True)
        _exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(_usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except SystemExit as exc:  # keepbest never exits inside a command: user code did
        from keepbest.config.references import describe_exception

        if isinstance(exc.__context__, BrokenPipeError):  # click: stdout's reader left
            sys.exit(exc.code)

        click.echo(
            f"error: user code (a callback, a custom layer or metric) stopped keepbest: "
            f"{describe_exception(exc)}; what was saved is intact, run the same command "
            "to resume",
            err=True,
        )
        sys.exit(EXIT_UNEXPECTED)
    except Exception as exc:
        missing = _missing_tensorflow(exc)
        if missing is not None:
            click.echo(f"error: {missing}", err=True)
            sys.exit(EXIT_UNEXPECTED)
        _exit(_unexpected(exc, debug))
    finally:
        end_start_up()  # the process's own handlers back, for whoever called
        sys.stdout.flush()


def main() -> None:
    """Entry point of ``keepbest``."""
    watch_start_up()  # (again: also when started by another name)
    _run(cli)


def train_main() -> None:
    """Entry point of ``train`` (the same as ``keepbest train``)."""
    watch_start_up()
    _run(train_command)
