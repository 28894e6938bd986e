"""Hyperparameter search on Optuna: ``keepbest tune``, whose every trial is a verified run.

A space file maps dotted config keys to distributions; each trial samples one value per
key, applies them as ``--set`` overrides (``keepbest.search.sweep.placed_config``) and
trains an ordinary run dir under the study's folder, ``output_dir/<study>/<NNN>-<values>``.
A trial's objective is its run's *verified* best value (``best.json``'s
``verified_value``), in the monitor's direction. Pruning sees the value measured at
each evaluation point (``EvaluationPoint.value``, reported at the global optimizer
step), never Keras' running mean.

Workers share a study through Optuna's storage: by default a journal file in the study's
folder (``optuna.journal``), which works on a file system several machines share; or
any Optuna storage URL (``sqlite:///study.db`` on one machine). Claiming a trial (asking
Optuna for a new one, or adopting an interrupted one) happens under a lock file in the
study's folder, so ``--trials N`` is the study's total, whatever the number of workers.
A trial interrupted by a signal stays RUNNING with its resume state on disk: the Slurm
array task that owned it (same ``SLURM_JOB_ID`` after requeue), or a worker on the same
host once its process is gone, resumes it in the same run dir; it is counted once. A
trial that crashes is marked failed with its error.

A trial's status is told in the words of a run dir's (``keepbest.rundir.status``: new,
running, resumable, done, failed), plus ``pruned``, which only a trial can be
(``trial_status``): Optuna's COMPLETE is ``done``, in ``tune``'s output and in
``keepbest summary`` of a study, as in ``show`` and ``summary`` of a run.

Example space (``space.yaml``)::

    optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}
    model.kwargs.dropout: {uniform: [0.0, 0.5]}
    model.kwargs.hidden: {choice: [[64], [128, 64]]}
    data.batch_size: {int: [16, 128, 16]}

    $ keepbest tune exp.yaml --space space.yaml --trials 20 --study lr

The space itself (``Dimension``, ``read_space``, ``check_space``) is
``keepbest.search.space``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keepbest.config import ExperimentConfig, load_config, parse_yaml, reported_against
from keepbest.config.references import describe_exception
from keepbest.config.schema import RUN_NAME_PATTERN
from keepbest.errors import (
    ConfigError,
    InputError,
    KeepbestError,
    NoBestError,
    RunBusyError,
    StoppedForResume,
)
from keepbest.rundir.guard import check_study_dir
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import chosen, chosen_value
from keepbest.search.space import Dimension, check_space, read_space, trial_name
from keepbest.search.sweep import _as_yaml, placed_config

if TYPE_CHECKING:
    from keepbest.rundir.table import SummaryRow

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"  # in the study's folder: the study's name and storage
JOURNAL_FILE = "optuna.journal"  # the default storage
CLAIM_LOCK = "tune"  # Optuna's open-lock adds ".lock": tune.lock
SAMPLERS = ("tpe", "random", "grid")
# Optuna's GridSampler holds every point of the grid (the product of the keys' values) in
# memory, and each worker builds it again for every trial: bounded here, before any work.
MAX_GRID_POINTS = 100_000
PRUNERS = ("median", "none")


def objective_direction(cfg: ExperimentConfig) -> str:
    """``min`` or ``max``: the monitor's direction, known before any model exists."""
    from keepbest.monitor import resolve_mode

    with reported_against(cfg):
        return resolve_mode(cfg.checkpoint.monitor, cfg.checkpoint.mode)


# --------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who trains a trial: a Slurm job (stable across requeues) or a process on a host."""

    host: str
    pid: int
    slurm_job: str | None

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), os.environ.get("SLURM_JOB_ID"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def may_adopt(self, attrs: dict | None) -> bool:
        """Whether a RUNNING trial owned by ``attrs`` is left for this worker to resume:
        its Slurm job is this one (requeued), or its process on this host is gone."""
        if not attrs:  # asked, but its worker died before naming it
            return True
        if self.slurm_job and attrs.get("slurm_job") == self.slurm_job:
            return True
        return attrs.get("host") == self.host and not _alive(attrs.get("pid"))


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checked_storage(label: str) -> str:
    """A storage file (a journal, an SQLite database) goes through the overwrite rule as
    every path a command writes: never into a run dir (its ``.lock``, its files, a
    finished run's folder); ``open_storage`` refuses a folder."""
    from keepbest.rundir.guard import check_path, enclosing_run, shown

    path = None
    if "://" not in label:
        path = Path(label)
    elif label.startswith("sqlite:///") and ":memory:" not in label:
        path = Path(label.removeprefix("sqlite:///"))
    if path is None:
        return label
    check_path(path, "--storage")
    run = enclosing_run(path)
    if run is not None:
        raise InputError(
            f"--storage: {shown(path)} is inside the run dir {shown(run)}, which only "
            "keepbest's training writes; give a file outside run dirs (by default the "
            "study's folder holds it)"
        )
    return label


def _storage_label(storage: str | None, study_dir: Path) -> str:
    """The storage as written to study.json: a URL, or an absolute journal path."""
    if storage is None:
        return str(study_dir / JOURNAL_FILE)
    if "://" in storage:
        prefix = "sqlite:///"
        path = storage.removeprefix(prefix)
        if storage.startswith(prefix) and path and not path.startswith("/"):
            return prefix + str(Path(path).resolve())
        return storage
    return str(Path(storage).expanduser().resolve())


def open_storage(label: str, where: str = "--storage", create: bool = True):
    """An Optuna storage for ``label`` (a URL, or a journal file path). ``create=False``
    (a command that only reads): a journal or SQLite file that does not exist is an
    ``InputError``, never created."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    local = Path(label) if "://" not in label else None
    if label.startswith("sqlite:///") and ":memory:" not in label:
        local = Path(label.removeprefix("sqlite:///"))
    if not create and local is not None and not local.is_file():
        raise InputError(
            f"{where}: the study's storage {local} does not exist (moved or deleted?); "
            "nothing was created"
        )
    if "://" in label:
        if local is not None and not local.absolute().parent.is_dir():
            raise InputError(f"{where}: the folder {local.parent} does not exist")
        try:
            return optuna.storages.RDBStorage(label)
        except Exception as exc:
            raise InputError(
                f"{where}: cannot open the Optuna storage {label} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
    path = Path(label)
    if path.is_dir():
        raise InputError(f"{where}: {path} is a folder, not a journal file")
    if not path.parent.is_dir():
        raise InputError(f"{where}: folder not found: {path.parent}")
    _check_journal(path, where)
    try:
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)  # reads the journal
    except Exception as exc:
        raise InputError(
            f"{where}: {path} is not an Optuna journal ({type(exc).__name__}: {exc}); "
            "move it away or give another --storage"
        ) from None


def _check_journal(path: Path, where: str) -> None:
    """An existing file must start like an Optuna journal (a JSON line with an op_code):
    Optuna would append to any file it is given. Nor may it end in a torn line (an append
    that was cut short: a kill, a full disk): Optuna skips it when reading, but the next
    append would glue a whole entry to it, and from then on every worker fails to read
    the journal. Refused with the fix (cut the torn bytes off), not repaired behind the
    user's back: another worker might be writing that very line (looked at twice)."""
    from keepbest.rundir.guard import check_input

    if not path.exists():
        return
    check_input(path, where)  # a regular file: never a pipe or a device
    if path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as handle:
            first = json.loads(handle.readline())
        if not isinstance(first, dict) or "op_code" not in first:
            raise ValueError("its first line is no journal entry")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{where}: {path} is not an Optuna journal ({exc}); move it away or give "
            "another --storage"
        ) from None
    torn = _torn_tail(path)
    if torn and (time.sleep(1.0) or _torn_tail(path)):  # not an append under way
        size = path.stat().st_size
        raise InputError(
            f"{where}: {path} ends in a torn entry ({torn} bytes without an end of line: an "
            f"append was cut short); cut it off with: truncate -s {size - torn} {path}, "
            "then run again"
        )


def _torn_tail(path: Path) -> int:
    """The number of bytes after the journal's last end of line (0: none torn)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        start = max(0, size - (1 << 16))
        while True:
            handle.seek(start)
            chunk = handle.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return len(chunk) - cut - 1
            if start == 0:
                return size
            start = max(0, start - (1 << 16))


def _grid_size(dims: list[Dimension], space: str | Path) -> int:
    """The number of points ``--sampler grid`` visits, computed without enumerating them;
    ``ConfigError`` for a continuous range or a grid above ``MAX_GRID_POINTS``, naming
    the key with the most values."""
    sizes = {dim.key: dim.grid_size() for dim in dims}
    continuous = [key for key, size in sizes.items() if size is None]
    if continuous:
        raise ConfigError(
            [
                f"{space}: {key}: --sampler grid needs a finite set of values; give "
                "the range a step, e.g. {uniform: [0.0, 0.5, 0.1]}, or use choice"
                for key in continuous
            ]
        )
    total = math.prod(sizes.values())
    if total > MAX_GRID_POINTS:
        key = max(sizes, key=lambda k: sizes[k])
        raise ConfigError(
            f"{space}: {key}: --sampler grid would visit {total:,} points ({key} alone has "
            f"{sizes[key]:,} values), more than the {MAX_GRID_POINTS:,} keepbest allows: give "
            "the range a larger step, or use --sampler tpe or random"
        )
    return total


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclasses.dataclass
class Claim:
    trial: Any  # optuna.trial.Trial
    name: str
    resumed: bool


@dataclasses.dataclass
class Outcome:
    number: int
    name: str
    state: str  # done, pruned, failed (keepbest.rundir.status's words), or busy
    detail: str
    error: KeepbestError | None = None


@dataclasses.dataclass
class Tuner:
    """One worker's view of a study: the base config, the space, the Optuna study."""

    config: Path
    overrides: tuple[str, ...]
    base: ExperimentConfig
    dims: list[Dimension]
    study_name: str
    study_dir: Path
    storage_label: str
    direction: str
    budget: int
    sampler: str
    pruner: str
    seed: int | None
    startup_trials: int
    study: Any = None  # optuna.Study once opened

    # ----------------------------------------------------------------- opening

    @classmethod
    def prepare(
        cls,
        config: str | Path,
        space: str | Path,
        trials: int | None,
        study: str | None = None,
        storage: str | None = None,
        sampler: str = "tpe",
        pruner: str = "median",
        seed: int | None = None,
        startup_trials: int = 5,
        overrides: Sequence[str] = (),
        check: bool = True,
    ) -> Tuner:
        """Check everything (config, space, every key, the study's folder) before
        anything is written; ``InputError`` lists the problems. ``check=False`` skips
        trying the space on the config (for reading a study, not running trials)."""
        if importlib.util.find_spec("optuna") is None:
            raise InputError("keepbest tune needs Optuna: pip install 'keepbest[tune]'")
        base = load_config(config, overrides)
        name = study or base.name
        if not RUN_NAME_PATTERN.match(name):
            raise ConfigError(
                f"--study: {name!r}: use letters, digits and . _ , = + - only "
                "(it names the study's folder)"
            )
        if sampler not in SAMPLERS:
            raise InputError(f"--sampler: {sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if pruner not in PRUNERS:
            raise InputError(f"--pruner: {pruner!r}: expected one of {', '.join(PRUNERS)}")
        dims = read_space(space)
        if base.distribute.strategy == "multi_worker":
            with reported_against(base):
                raise ConfigError(
                    "distribute.strategy: multi_worker runs are not tuned (each trial is "
                    "one process); use mirrored or none, and parallel workers instead"
                )
        study_dir = base.output_dir / name
        check_study_dir(study_dir, (STUDY_FILE, JOURNAL_FILE), writes=check)
        if check:
            from keepbest.callbacks.mlflow_tracking import require_mlflow

            require_mlflow(base)  # every trial logs there: a server that answers, now
            check_space(config, overrides, dims, study_dir)
        budget = trials if trials is not None else 0
        if sampler == "grid":
            size = _grid_size(dims, space)
            if trials is not None and trials > size:
                log.info("the grid has %d points: the study stops after %d trials", size, size)
                budget = size
        return cls(
            config=Path(config),
            overrides=tuple(overrides),
            base=base,
            dims=dims,
            study_name=name,
            study_dir=study_dir,
            storage_label=_checked_storage(_storage_label(storage, study_dir)),
            direction=objective_direction(base),
            budget=budget,
            sampler=sampler,
            pruner=pruner,
            seed=base.seed if seed is None else seed,
            startup_trials=startup_trials,
        )

    def _space_attr(self) -> list:
        return [dim.describe() for dim in self.dims]

    def open(self, create: bool = True) -> Tuner:
        """Create (or join) the study; refuse one that searches another space or
        direction. With ``create=False`` the study must exist (nothing is created)."""
        _quiet_optuna()
        label = self.storage_label
        journal = "://" not in label
        if not create and journal and not Path(label).is_file():
            raise InputError(
                f"--study: no study {self.study_name!r} yet ({label} does not exist); "
                "run keepbest tune without --best first"
            )
        if not create:
            return self._open(open_storage(label, create=False), create)
        from keepbest.rundir.guard import made_folder

        with made_folder(self.study_dir):  # a refused storage leaves no study folder
            return self._open(open_storage(label), create)

    def _open(self, storage, create: bool) -> Tuner:
        import optuna

        label = self.storage_label
        journal = "://" not in label
        direction = "minimize" if self.direction == "min" else "maximize"
        try:
            if create:
                study = optuna.create_study(
                    storage=storage,
                    study_name=self.study_name,
                    direction=direction,
                    load_if_exists=True,
                )
            else:
                study = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            raise InputError(
                f"--study: {label} holds no study {self.study_name!r}; "
                "run keepbest tune without --best first"
            ) from None
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            if journal:
                raise InputError(
                    f"--storage: {label} is not an Optuna journal ({what}); move it away "
                    "or give another --storage"
                ) from None
            raise InputError(
                f"--storage: cannot open study {self.study_name!r} in {label} ({what})"
            ) from None
        if study.direction.name.lower() != direction:
            raise InputError(
                f"--study: {self.study_name!r} in {label} was created to "
                f"{study.direction.name.lower()}, but {self.base.checkpoint.monitor} is to be "
                f"{direction}d; use another --study"
            )
        space = study.user_attrs.get("keepbest_space")
        if space is None and create:
            study.set_user_attr("keepbest_space", self._space_attr())
            study.set_user_attr("keepbest_monitor", self.base.checkpoint.monitor)
        elif space is not None and space != self._space_attr():
            raise InputError(
                f"--space: study {self.study_name!r} in {label} searches another space "
                f"({', '.join(d['key'] for d in space)}); use its space file or another --study"
            )
        if create:
            from keepbest.atomic import write_json_atomic

            meta = self.study_dir / STUDY_FILE
            payload = {"study": self.study_name, "storage": label}
            if not meta.is_file() or json.loads(meta.read_text(encoding="utf-8")) != payload:
                write_json_atomic(meta, payload)
        study.pruner = self._make_pruner()
        self.study = study
        return self

    def _make_pruner(self):
        import optuna

        if self.pruner == "none":
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=self.startup_trials)

    def _make_sampler(self, number: int):
        """The sampler for trial ``number``, seeded with ``seed + number``: a trial's
        random draws depend on its number, not on which worker asked for it."""
        import optuna

        seed = None if self.seed is None else self.seed + number
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "grid":
            grid = {dim.key: dim.grid() for dim in self.dims}
            return optuna.samplers.GridSampler(grid, seed=self.seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials)

    # ----------------------------------------------------------------- claiming

    def _lock(self):
        from optuna.storages.journal import JournalFileOpenLock

        return JournalFileOpenLock(str(self.study_dir / CLAIM_LOCK), grace_period=60)

    def claim(self, me: Owner, skip: set[int] = frozenset()) -> Claim | None:
        """Under the study's lock: adopt an interrupted trial this worker may resume, or
        ask Optuna for a new one while the study has fewer than ``budget`` trials;
        None when there is nothing left to do."""
        import optuna

        lock = self._lock()
        lock.acquire()
        try:
            trials = self.study.get_trials(deepcopy=False)
            for frozen in trials:
                running = frozen.state == optuna.trial.TrialState.RUNNING
                owner = frozen.user_attrs.get("keepbest_owner")
                if running and frozen.number not in skip and me.may_adopt(owner):
                    trial = optuna.trial.Trial(self.study, frozen._trial_id)
                    name = frozen.user_attrs.get("run_dir") or self._name(frozen.number, trial)
                    trial.set_user_attr("run_dir", name)
                    trial.set_user_attr("keepbest_owner", me.to_dict())
                    return Claim(trial, name, resumed=owner is not None)
            if len(trials) >= self.budget:
                return None
            self.study.sampler = self._make_sampler(len(trials))
            trial = self.study.ask({dim.key: dim.distribution() for dim in self.dims})
            name = self._name(trial.number, trial)
            trial.set_user_attr("run_dir", name)
            trial.set_user_attr("keepbest_owner", me.to_dict())
            return Claim(trial, name, resumed=False)
        finally:
            lock.release()

    def _values(self, trial) -> dict[str, Any]:
        params = trial.params
        return {dim.key: dim.value(params[dim.key]) for dim in self.dims}

    def _name(self, number: int, trial) -> str:
        return trial_name(number, self.dims, self._values(trial))

    # ----------------------------------------------------------------- training

    def run_trial(self, claim: Claim) -> Outcome:
        """Train (or resume) the claimed trial and tell Optuna how it ended."""
        import keras
        import optuna

        from keepbest.training import train

        trial, name = claim.trial, claim.name
        number = trial.number
        values = self._values(trial)
        shown = ", ".join(f"{k}={_as_yaml(v)}" for k, v in values.items())
        log.info("== trial %d: %s (%s)", number, "resuming" if claim.resumed else "new", shown)
        try:
            cfg = placed_config(self.config, self.overrides, values, self.study_dir, name)
        except ConfigError as exc:
            return self._fail(trial, name, exc)

        def report(point) -> None:
            trial.report(point.value, point.step)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"at step {point.step} (epoch {point.epoch}): {point.monitor} {point.value:.6g}"
                )

        keras.backend.clear_session()  # layer names as a fresh `keepbest train` gives them
        try:
            result = train(cfg, observers=[report])
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("pruned", str(pruned))
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("trial %d pruned %s", number, pruned)
            return Outcome(number, name, "pruned", str(pruned))
        except StoppedForResume:
            raise  # the trial stays RUNNING, owned by this worker: it resumes later
        except RunBusyError as exc:
            log.warning("trial %d: %s; leaving it to that process", number, exc)
            return Outcome(number, name, "busy", str(exc))
        except KeepbestError as exc:
            return self._fail(trial, name, exc)
        except Exception as exc:
            return self._fail(trial, name, KeepbestError(describe_exception(exc)))
        record = result.record
        trial.set_user_attr("best_epoch", record.epoch)
        value = chosen_value(record)  # what load_best returns: the best, or a kept average
        trial.set_user_attr("verified_value", value)
        self.study.tell(trial, value)
        detail = f"{record.monitor} {value:.6g} at epoch {record.epoch}, verified"
        if chosen(record) == "average":
            detail += f" (the average of {len(record.average.steps)} points)"
        log.info("trial %d done: %s", number, detail)
        return Outcome(number, name, "done", detail)

    def _fail(self, trial, name: str, exc: KeepbestError) -> Outcome:
        import optuna

        message = str(exc).replace("\n", "; ")
        trial.set_user_attr("error", message)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d (%s) failed: %s", trial.number, name, message)
        return Outcome(trial.number, name, "failed", message, exc)

    def work(self) -> list[Outcome]:
        """Claim and train trials until the study has ``budget`` of them. A stop signal
        between trials ends the worker like one during a trial (exit 75, Slurm
        requeue); a claimed trial that has not started stays RUNNING for later."""
        from keepbest.cluster.slurm import requeue_self, should_requeue
        from keepbest.signals import StopSignals, ignore_from_now_on

        me = Owner.current()
        outcomes: list[Outcome] = []
        skip: set[int] = set()
        with StopSignals(self.base.resume.signals) as stop:
            while True:
                claim = None if stop.requested else self.claim(me, skip)
                if stop.requested:
                    note = "run the same command to resume"
                    if should_requeue(self.base.resume.requeue):
                        note = requeue_self()
                    ignore_from_now_on(self.base.resume.signals)
                    raise StoppedForResume(
                        f"stopped by {stop.received[0]} between trials of study "
                        f"{self.study_name!r}; {note}"
                    )
                if claim is None:
                    return outcomes
                try:
                    outcome = self.run_trial(claim)
                except StoppedForResume:
                    ignore_from_now_on(self.base.resume.signals)
                    raise
                if outcome.state == "busy":
                    skip.add(outcome.number)
                outcomes.append(outcome)

    # ----------------------------------------------------------------- results

    def best_run_dir(self) -> Path:
        """The run dir of the study's best trial (of those done)."""
        try:
            best = self.study.best_trial
        except ValueError:
            raise NoBestError(
                f"study {self.study_name!r} has no trial done yet; run keepbest tune"
            ) from None
        return self.study_dir / best.user_attrs["run_dir"]

    def summary(self) -> str:
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        counts = {}
        for frozen in trials:
            state = trial_status(frozen.state)
            counts[state] = counts.get(state, 0) + 1
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        line = f"study {self.study_name!r}: {len(trials)} of {self.budget} trials ({states})"
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            best = self.study.best_trial
            line += (
                f"\nbest: trial {best.number}, {self.base.checkpoint.monitor} "
                f"{best.value:.6g} (verified), {self.study_dir / best.user_attrs['run_dir']}"
            )
        return line


# --------------------------------------------------------------------------- summary

# Optuna's trial states in keepbest.rundir.status's words (RunState), plus pruned
_TRIAL_STATUS = {
    "COMPLETE": "done",
    "RUNNING": "running",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "WAITING": "new",
}
# summary's order: trials done first (best first), then running ones, pruned, failed, new
_STATUS_ORDER = {"done": 0, "running": 1, "resumable": 1, "pruned": 2, "failed": 3, "new": 4}


def trial_status(state) -> str:
    """An Optuna ``TrialState`` as keepbest names statuses (``keepbest.rundir.status``):
    COMPLETE is ``done``, FAIL ``failed``, WAITING ``new``; PRUNED stays ``pruned``.

    >>> import optuna                                 # doctest: +SKIP
    >>> trial_status(optuna.trial.TrialState.COMPLETE)  # doctest: +SKIP
    'done'
    """
    return _TRIAL_STATUS.get(state.name, state.name.lower())


def summarize_study(folder: str | Path) -> list[SummaryRow] | None:
    """``keepbest summary`` rows for a study's folder, or None if ``folder`` holds no
    study: every trial with its sampled values and status (``trial_status``), trials done
    first (best first), then running, pruned and failed ones."""
    from keepbest.rundir.status import run_status
    from keepbest.rundir.table import SummaryRow

    folder = Path(folder)
    meta_file = folder / STUDY_FILE
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        name, label = meta["study"], meta["storage"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"RUNS_DIR: {meta_file} is not a keepbest study file ({exc})") from None
    try:
        import optuna
    except ImportError:
        return None
    _quiet_optuna()
    try:
        storage = open_storage(label, str(meta_file), create=False)  # summary only reads
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise InputError(f"RUNS_DIR: {label} holds no study {name!r}") from None
    mode = "min" if study.direction.name == "MINIMIZE" else "max"
    keys = [d["key"] for d in study.user_attrs.get("keepbest_space", [])]
    monitor = study.user_attrs.get("keepbest_monitor")
    rows = []
    for trial in study.get_trials(deepcopy=False):
        dims = {d.key: d for d in _dims_of(trial)}
        swept: dict[str, Any] = {"trial": trial.number}
        for key in keys:
            param = trial.params.get(key)
            dim = dims.get(key)
            swept[key] = dim.value(param) if dim and param is not None else param
        run = folder / trial.user_attrs.get("run_dir", f"{trial.number:03d}")
        status = run_status(run) if RunDir(run).has_run() else None
        record = status.record if status else None
        text = trial_status(trial.state)
        value = trial.value if text == "done" else (record.value if record else None)
        detail = status.detail if status else "no run dir"
        if text == "pruned":
            detail = f"pruned {trial.user_attrs.get('pruned', '')}".strip()
        elif text == "failed":
            detail = trial.user_attrs.get("error", "failed")
        elif text == "running" and status:
            text = status.state  # running (a live process), or resumable (interrupted)
        rows.append(
            SummaryRow(
                name=run.name,
                swept=swept,
                status=text,
                monitor=record.monitor if record else monitor,
                mode=mode,
                best_epoch=record.epoch if record else None,
                value=value,
                verified=bool(record and record.verified),
                detail=detail,
            )
        )

    def rank(row: SummaryRow) -> tuple:
        order = _STATUS_ORDER.get(row.status, 5)
        if row.value is None or not math.isfinite(row.value):
            return (order, 1, 0.0, row.swept["trial"])
        return (order, 0, row.value if mode == "min" else -row.value, row.swept["trial"])

    return sorted(rows, key=rank)


def _dims_of(trial) -> list[Dimension]:
    """Dimensions rebuilt from a trial's distributions (to turn a choice's label back
    into its value)."""
    from optuna.distributions import CategoricalDistribution

    dims = []
    for key, dist in trial.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            choices = tuple(
                parse_yaml(c, key) if isinstance(c, str) and c[:1] in "[{" else c
                for c in dist.choices
            )
            dim = Dimension(key, "choice", choices=choices)
            if dim.labels == tuple(dist.choices):
                dims.append(dim)
    return dims
