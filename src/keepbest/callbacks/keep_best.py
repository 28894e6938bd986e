"""``keepbest.KeepBest``: the best model of any ``model.fit``, provably, from disk.

A drop-in for ``EarlyStopping(restore_best_weights=True)`` plus
``ModelCheckpoint(save_best_only=True)``, with keepbest's promises:

- the value that picks the best is measured on exactly the weights saved: ``val_*`` from
  fit's own end-of-epoch validation pass (or, with ``every_steps``, a pass over
  ``validation_data``), a training-set monitor (``loss``, ``accuracy``, ...) from an
  evaluation pass over ``train_data`` in inference mode, never Keras' running mean;
- the best weights live only in ``run_dir/best.weights.h5`` (atomic, fsync'ed, sha256 in
  ``best.json``), never as a copy in memory; at the end of ``fit`` they are loaded back
  into the model and the value is measured again, and must equal the record;
- resume states as training goes (a budgeted cadence): the same script run again after a
  kill or a signal continues where it stopped (``resume=True``), bit for bit when the
  data's order does not depend on the process (arrays with ``shuffle=False``); SIGTERM,
  SIGINT and SIGUSR1 save a state and end ``fit`` with ``keepbest.StoppedForResume``;
- the run dir is the one ``keepbest.train`` writes: ``keepbest.load_best``,
  ``keepbest show|evaluate|export|plot`` work on it;
- with an optimizer's ``use_ema``, the moving-average weights are the ones judged, saved
  and verified (what fit leaves in the model at its end), measured by a pass of its own;
- another callback that sets ``model.stop_training`` ends the run: the last resume state
  records it, the best is verified, and running the script again finds it complete.

Arguments shared with Keras' EarlyStopping mean what they mean there (``patience``,
``min_delta``, ``baseline``, ``start_from_epoch``, ``mode``), with one difference:
``patience=None`` (the default) never stops early. ``keepbest.train`` uses this very
callback (``KeepBest.for_run``), so every promise is proven once for both.

Example:

    >>> import keepbest
    >>> best = keepbest.KeepBest("runs/mine", monitor="val_loss", patience=5)
    >>> model.fit(x, y, validation_data=(xv, yv), epochs=50,
    ...           callbacks=[best])                                  # doctest: +SKIP
    >>> best.best_epoch, best.best_value == best.verified_value      # doctest: +SKIP
    (12, True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
from pydantic import ValidationError

from keepbest.callbacks.session import RunSession, RunSetup
from keepbest.config.schema import CheckpointConfig, ResumeConfig
from keepbest.errors import ConfigError, KeepbestError, RunBusyError, StoppedForResume
from keepbest.monitor import Monitor
from keepbest.rundir.layout import RunDir
from keepbest.rundir.lock import RunLock
from keepbest.signals import DEFAULT_SIGNALS, StopRequested, StopSignals

log = logging.getLogger("keepbest.training")

_CHECKPOINT_ARGS = (
    "monitor",
    "mode",
    "min_delta",
    "patience",
    "start_from_epoch",
    "baseline",
    "stop_on_nonfinite",
    "verify_tolerance",
    "train_eval_steps",
    "every_steps",
    "start_from_step",
    "keep_top",
    "average",
)


class KeepBest(keras.callbacks.Callback):
    """Keep the best weights of ``fit`` in ``run_dir``, judged on measured values.

    ``train_data``: what a training-set monitor is measured on ((x, y) or (x, y, w)
    arrays, or a finite batched tf.data.Dataset; ``train_eval_steps`` bounds it to N batches).
    ``validation_data``: what ``val_*`` is measured on at ``every_steps`` points (at
    epoch ends fit's own validation pass serves). ``restore_best``: end ``fit`` with the
    best weights (verified either way; with False the model gets its final weights back
    from the last resume state). ``resume``: continue the run found in ``run_dir``
    (False: refuse a run dir that holds one). After ``fit``: ``best_epoch`` (1-based),
    ``best_step``, ``best_value``, ``verified_value``, ``record``, ``stop_reason``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int | None = None,
        min_delta: float = 0.0,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        every_steps: int | None = None,
        start_from_step: int = 0,
        keep_top: int = 1,
        average: dict | None = None,
        train_data: Any = None,
        validation_data: Any = None,
        train_eval_steps: int | None = None,
        restore_best: bool = True,
        resume: bool = True,
        stop_on_nonfinite: bool = True,
        verify_tolerance: float | None = None,
        signals: Sequence[str] = DEFAULT_SIGNALS,
        requeue: bool | str = "auto",
        max_overhead: float | None = 0.05,
        state_every_steps: int | None = None,
        state_every_seconds: float | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        given = dict(locals())
        self.checkpoint = _validated(
            CheckpointConfig, {key: given[key] for key in _CHECKPOINT_ARGS}, "KeepBest"
        )
        self.resume_settings = _validated(
            ResumeConfig,
            {
                "signals": list(signals),
                "requeue": requeue,
                "max_overhead": max_overhead,
                "every_steps": state_every_steps,
                "every_seconds": state_every_seconds,
            },
            "KeepBest",
            rename={"every_steps": "state_every_steps", "every_seconds": "state_every_seconds"},
        )
        on_validation = Monitor(monitor, "min").on_validation
        if not on_validation and train_data is None:
            raise ConfigError(
                f"KeepBest: monitor {monitor!r} is measured on the training data, so pass "
                "train_data=(x, y) or (x, y, sample_weight) (or a finite tf.data.Dataset) to "
                f"measure it on the saved weights, or monitor 'val_{monitor}'"
            )
        if on_validation and every_steps is not None and validation_data is None:
            raise ConfigError(
                f"KeepBest: monitor {monitor!r} with every_steps={every_steps} is measured "
                "between epochs, where fit does not validate: pass validation_data=(x, y)"
            )
        self.train_data = train_data
        self.validation_data = validation_data
        self.restore_best = bool(restore_best)
        self.resume = bool(resume)
        self._setup: RunSetup | None = None  # given by ``for_run``; else made in on_train_begin
        self._active: _Active | None = None
        self.session: RunSession | None = None
        self.record = None

    @classmethod
    def for_run(cls, setup: RunSetup) -> KeepBest:
        """The callback ``keepbest.train`` puts in ``fit``: settings from ``setup.cfg``,
        measuring data and fingerprints from its pipelines."""
        ck, rs = setup.cfg.checkpoint, setup.cfg.resume
        callback = cls.__new__(cls)
        keras.callbacks.Callback.__init__(callback)
        callback.run_dir = setup.cfg.run_dir()
        callback.checkpoint, callback.resume_settings = ck, rs
        callback.train_data = callback.validation_data = None
        callback.restore_best, callback.resume = True, True
        callback._setup, callback._active = setup, None
        callback.session = callback.record = None
        return callback

    # ------------------------------------------------------------------ results

    @property
    def best_epoch(self) -> int | None:
        return self.record.epoch if self.record else None

    @property
    def best_step(self) -> int | None:
        return self.record.step if self.record else None

    @property
    def best_value(self) -> float | None:
        return self.record.value if self.record else None

    @property
    def verified_value(self) -> float | None:
        return self.record.verified_value if self.record else None

    @property
    def stop_reason(self) -> str | None:
        return self.session.stop_reason if self.session else None

    @property
    def complete_before(self) -> str | None:
        return self.session.complete_before if self.session else None

    @property
    def history(self) -> list[dict[str, float]]:
        return self.session.history if self.session else []

    # ------------------------------------------------------------------ Keras' hooks

    def open(self, model) -> RunSession:
        """Open the run before ``fit`` (``keepbest.train`` does, to start its data where
        the run resumes): lock, recover, check, restore. ``on_train_begin`` opens it
        otherwise."""
        self.set_model(model)
        if self._setup is None:
            raise KeepbestError("KeepBest.open needs a run setup; let fit open the run")
        self._open(self._setup)
        return self.session

    def close(self) -> None:
        """Release the run dir and the signal handlers (``fit`` does, unless it failed
        elsewhere; closing twice is harmless)."""
        self._close()

    def on_train_begin(self, logs=None):
        if self._active is None or self._active.model is not self.model:
            self._close()  # a session an exception elsewhere left open
            self._open(self._setup or self._script_setup())
        try:
            self._active.attach(self.params.get("epochs", 0))
        except BaseException:
            self._close()
            raise

    def _open(self, setup: RunSetup) -> None:
        model = self.model
        if not hasattr(model, "_initial_epoch") or not hasattr(model, "train_function"):
            raise KeepbestError(
                f"KeepBest needs Keras {keras.__version__}'s fit (model._initial_epoch, "
                "model.train_function); install the Keras version keepbest pins"
            )
        active = _Active(self, setup)
        self._active = active
        try:
            active.open()
        except BaseException:
            self._close()
            raise
        self.session = active.session

    def on_epoch_begin(self, epoch, logs=None):
        self._forward("on_epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._forward("on_train_batch_begin", batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._forward("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        active = self._active
        if active is None:
            return
        try:
            self.record = active.end(self.params.get("epochs", 0), self.restore_best)
        finally:
            self._close()

    # ------------------------------------------------------------------ plumbing

    def _forward(self, hook: str, *args) -> None:
        active = self._active
        if active is None or active.loop is None:
            return
        try:
            getattr(active.loop, hook)(*args)
        except StopRequested as stopped:
            self._stopped(stopped)
        except BaseException:
            self._close()
            raise

    def _stopped(self, stopped: StopRequested) -> None:
        """A stop signal: the state is saved; leave fit with ``StoppedForResume``."""
        from keepbest.cluster.slurm import requeue_self, should_requeue

        active = self._active
        folder = active.session.run.resume_dir
        note = active.setup.rerun
        if should_requeue(self.resume_settings.requeue) and active.session.chief:
            note = requeue_self()
        self._close()
        raise StoppedForResume(f"{stopped}; resume state saved in {folder}; {note}") from None

    def _step(self, original, iterator):
        active = self._active
        if active is None or active.loop is None:  # a session that ended: Keras' own step
            return original(iterator)
        try:
            return active.loop.step(original, iterator)
        except StopRequested as stopped:
            self._stopped(stopped)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._active is not None:
            active, self._active = self._active, None
            active.close()

    def _script_setup(self) -> RunSetup:
        """What a plain script's ``fit`` tells of its run (``keepbest.callbacks.script``)."""
        from keepbest.callbacks.script import script_setup

        return script_setup(self)


class _Active:
    """The state of one ``fit`` call with the callback: lock, signals, session, the
    wrapped train function."""

    def __init__(self, callback: KeepBest, setup: RunSetup):
        self.callback = callback
        self.setup = setup
        self.model = callback.model
        self.lock: RunLock | None = None
        self.stop: StopSignals | None = None
        self.session: RunSession | None = None
        self.loop = None
        self._original = None

    def open(self) -> None:
        callback, setup, model = self.callback, self.setup, self.model
        run = RunDir(callback.run_dir)
        if setup.distribution.is_chief:
            _check_run_dir(run, callback.resume, setup)
            self.lock = RunLock(run.path).acquire()
        self.stop = StopSignals(callback.resume_settings.signals).__enter__()
        self.session = RunSession(run.path, setup, model, self.stop)
        self.session.open()
        self.loop = self.session.loop

    def attach(self, epochs: int) -> None:
        """Inside ``fit``: where its epochs start, and keepbest's step around its train
        function."""
        model, callback = self.model, self.callback
        if self.loop is None:  # finished before: nothing to train, verify below
            model._initial_epoch = max(epochs, 1)
            return
        self.loop.set_model(model)
        self.loop.total_epochs = epochs
        model._initial_epoch = self.session.start_epoch or None
        original = model.train_function
        self._original = original
        model.train_function = lambda iterator: callback._step(original, iterator)

    def end(self, epochs: int, restore_best: bool):
        session = self.session
        if self.loop is not None:
            self.loop.finish(epochs)
        self._unwrap()
        record = session.verify()
        if not restore_best and self.loop is not None:
            _final_weights(self.model, session)
        return record

    def _unwrap(self) -> None:
        if self._original is not None:
            self.model.train_function, self._original = self._original, None
        self.model._initial_epoch = None

    def close(self) -> None:
        self._unwrap()
        if self.stop is not None:
            self.stop.__exit__(None, None, None)
            self.stop = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _check_run_dir(run: RunDir, resume: bool, setup: RunSetup) -> None:
    """Where a script's run goes must be a run dir of its own (the overwrite rule of
    ``keepbest.rundir.guard``); ``resume=False`` refuses one that holds a run."""
    from keepbest.rundir import guard
    from keepbest.rundir.lock import holder_of

    if not setup.compare_architecture:
        return  # keepbest.train checked it before any work
    holder = holder_of(run.path) if run.path.is_dir() else None
    if holder:
        raise RunBusyError(
            f"{run.path} is in use by another training process ({holder}); "
            "wait for it to finish or stop it, or use another run_dir"
        )
    if not resume and run.has_run():
        raise ConfigError(
            f"KeepBest: {run.path} already holds a run and resume=False; use another "
            "run_dir, or resume=True to continue it"
        )
    try:
        guard.check_run_dir(run.path, restart=False, overwrite=False, writes=True)
    except ConfigError as exc:
        raise ConfigError([f"KeepBest: run_dir: {line}" for line in exc.problems]) from None


def _final_weights(model, session: RunSession) -> None:
    """``restore_best=False``: the model's final weights back from the last resume state
    (the verification loaded the best into it)."""
    from keepbest.rundir.resume_store import ResumeStore, restore

    state = ResumeStore(session.run.path).latest()
    if state is not None:
        restore(model, state)


def _validated(section, values: dict, who: str, rename: dict | None = None):
    """A config section made of keyword arguments; bad ones are one line each, named
    as the argument."""
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "arguments"
            given = values.get(field.split(".")[0], error.get("input"))
            key = (rename or {}).get(field, field)
            lines.append(f"{who}: {key}={given!r}: {error['msg']}")
        raise ConfigError(lines) from None
    except ConfigError as exc:
        lines = [line.replace("checkpoint.", "").replace("resume.", "") for line in exc.problems]
        raise ConfigError([f"{who}: {line}" for line in lines]) from None
