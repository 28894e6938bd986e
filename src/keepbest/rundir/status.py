"""Where a run directory stands: new, running, resumable, done or failed, without TensorFlow.

``keepbest show`` prints it for one run, and a table over many runs can call it for each:
it reads only small files and the checksummed checkpoints, imports no TensorFlow, and
never writes. The five states:

- ``new``: nothing trained here yet (no ``config.yaml``);
- ``running``: a live process holds the run's lock (``keepbest.rundir.lock``);
- ``resumable``: training stopped before its end (killed, signalled, or the best is not
  verified yet); the same ``train`` command continues it;
- ``done``: training ended (all epochs, or early stopping) and the best is verified;
- ``failed``: a file is corrupt, or training ended without any best checkpoint.

Example:

    >>> from keepbest.rundir.status import run_status
    >>> status = run_status("runs/digits-mlp")       # doctest: +SKIP
    >>> status.state, status.detail                  # doctest: +SKIP
    ('done', 'stopped after epoch 27 of 30: no improvement of val_loss for 5 epochs')
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from keepbest.config import ExperimentConfig
from keepbest.errors import KeepbestError
from keepbest.monitor import patience_exhausted, stop_reason
from keepbest.rundir.layout import RunDir
from keepbest.rundir.lock import holder_of
from keepbest.rundir.record import (
    RECORD_FILE,
    BestRecord,
    read_record_or_none,
    run_problem,
    verify_checksum,
)
from keepbest.rundir.resume_store import ResumeState, ResumeStore, StateManifest

RunState = Literal["new", "running", "resumable", "done", "failed"]


@dataclasses.dataclass(frozen=True)
class RunStatus:
    state: RunState
    detail: str  # one line, e.g. "stopped at epoch 4 of 10; train again to resume"
    epochs_done: int = 0
    epochs_planned: int | None = None
    record: BestRecord | None = None  # the best checkpoint's record, if there is one
    newest_state: StateManifest | None = None  # the resume state a train would continue


def completion(cfg: ExperimentConfig, state: ResumeState, record: BestRecord | None) -> str | None:
    """Why a run whose newest resume state is ``state`` is finished under ``cfg`` (all
    epochs done, or it stopped early and may not go on), or None if it is not."""
    ck = cfg.checkpoint
    schedule = ck.schedule()
    progress = state.progress
    if state.manifest.stop_kind == "nonfinite" and ck.stop_on_nonfinite:
        return stop_reason("nonfinite", ck.monitor)
    if state.manifest.stop_kind == "callback":
        return stop_reason("callback", ck.monitor, where=f"at step {state.manifest.global_step}")
    if progress.batch == 0 and progress.epoch >= cfg.train.epochs:
        return f"all {cfg.train.epochs} epochs are done"
    done = schedule.ordinal(progress.epoch, state.manifest.global_step)
    best = state.manifest.best or record  # the best as of the state (older states: best.json)
    best_at = None
    if best is not None and (best.step is not None or not schedule.by_steps):
        best_at = schedule.ordinal(best.epoch, best.step or 0)
    waited = patience_exhausted(done, best_at, ck.patience, schedule.start_from)
    if waited is not None:
        unit = schedule.unit
        return stop_reason("patience", ck.monitor, waited=waited, patience=ck.patience, unit=unit)
    return None


def run_status(run_dir: str | Path) -> RunStatus:
    """The state of ``run_dir``; checksums are checked unless a process is training there."""
    run = RunDir(run_dir)
    if not run.has_run():
        return RunStatus("new", f"nothing trained in {run.path} yet")
    holder = holder_of(run.path)
    if holder:
        return _running(run, holder)
    try:
        cfg = run.read_config()
        record = read_record_or_none(run.path)
        if record is not None:
            verify_checksum(run.path, record)
        state = ResumeStore(run.path).latest()
    except KeepbestError as exc:
        return RunStatus("failed", str(exc).splitlines()[0])
    planned = cfg.train.epochs
    reason = completion(cfg, state, record) if state is not None else None
    if record is not None:  # a record that cannot be this run's is never shown as done
        final = state.history if state is not None and reason is not None else None
        reached = None if state is None else state.progress.epoch + bool(state.progress.batch)
        problem = run_problem(record, planned, reached, final)
        if problem:
            fix = f"restore {RECORD_FILE} from a backup, or retrain with --restart"
            return RunStatus("failed", f"{problem}; {fix}", 0, planned)
    if state is None:
        return RunStatus("resumable", "no epoch finished yet; train again to start", 0, planned)
    done = state.progress.epoch
    if reason is None:
        where = f"in epoch {done + 1}" if state.progress.batch else f"after epoch {done}"
        detail = f"stopped {where} of {planned}; train again to resume"
        return RunStatus("resumable", detail, done, planned, record, state.manifest)
    if record is None:
        detail = f"training ended after epoch {done} without a best checkpoint ({reason})"
        return RunStatus("failed", detail, done, planned, newest_state=state.manifest)
    if not record.verified:
        detail = f"training ended after epoch {done}; train again to verify the best"
        return RunStatus("resumable", detail, done, planned, record, state.manifest)
    early = state.manifest.stop_kind is not None and done < planned
    ending = f"stopped after epoch {done} of {planned}: {reason}" if early else reason
    return RunStatus("done", ending, done, planned, record, state.manifest)


def _running(run: RunDir, holder: str) -> RunStatus:
    """What can be read safely while another process writes (files are replaced
    atomically, so each read sees a whole file)."""
    try:
        record = read_record_or_none(run.path)
        planned = run.read_config().train.epochs
        state = ResumeStore(run.path).latest()
    except (KeepbestError, OSError):  # a state pruned while being read: skip the details
        return RunStatus("running", f"training now ({holder})")
    done = state.progress.epoch if state else 0
    manifest = state.manifest if state else None
    return RunStatus("running", f"training now ({holder})", done, planned, record, manifest)
