"""Optional MLflow tracking: ``logging: {mlflow: {tracking_uri: ..., experiment: ...}}``.

One MLflow run per run dir, written by the chief only:

- params: the resolved config, flattened (``optimizer.learning_rate``, ...);
- metrics at every evaluation point, at ``step`` = the global optimizer step: every
  logged value, Keras' running means (``loss``) and the measured ones (``epoch_end_loss``,
  ``val_*``); ``best_value`` each time a new best is saved;
- the best record once verified: metrics ``best_value`` and ``best_verified_value``,
  tags ``best_epoch``, ``best_step``, ``best_monitor``;
- the run dir's small files (config, data spec, architecture, best.json, history.csv)
  as artifacts, when training ends.

The MLflow run id is kept in the run dir (``RunDir.mlflow_file``), so a resumed run logs
into the same MLflow run (its status goes KILLED on a stop, RUNNING again on resume,
FINISHED when verified). MLflow params cannot change: a resumed run with a raised
``train.epochs`` keeps the first value. A tracking failure during training is a warning,
never the end of the training. Needs ``pip install "keepbest[mlflow]"``, checked before
any work is done (``require_mlflow``), as is the tracking URI: a server (http, https) must
answer within ``PROBE_SECONDS`` (MLflow itself would retry for minutes), and a local store
(``sqlite:///``, ``file:``, a path) goes through the overwrite rule
(``keepbest.rundir.guard``: never inside a run dir, its folder must exist), so that a
refused URI costs seconds and leaves nothing behind.

Example:

    >>> from keepbest.callbacks.mlflow_tracking import tracking
    >>> with tracking(cfg, RunDir(cfg.run_dir()), chief=True) as tracker:  # doctest: +SKIP
    ...     result = train_with(observers=tracker.observers)
    ...     tracker.finish(result.record)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keepbest.atomic import write_json_atomic
from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.diff import flatten_config
from keepbest.errors import ConfigError, KeepbestError, StoppedForResume
from keepbest.rundir.layout import (
    CONFIG_FILE,
    DATA_SPEC_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RECORD_FILE,
    RunDir,
)

log = logging.getLogger(__name__)

ARTIFACTS = (CONFIG_FILE, DATA_SPEC_FILE, MODEL_FILE, RECORD_FILE, HISTORY_FILE)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
PROBE_SECONDS = 5.0  # how long a tracking server has to answer before any work
_KEY = "logging.mlflow.tracking_uri"
_answered: set[str] = set()  # servers that answered in this process (probed once)


def require_mlflow(cfg: ExperimentConfig) -> None:
    """``ConfigError`` if the config asks for MLflow tracking and mlflow is not installed,
    or its tracking URI cannot be used (``check_tracking_uri``)."""
    if cfg.logging.mlflow is None:
        return
    with reported_against(cfg):
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(
                "logging.mlflow: the mlflow package is not installed; "
                "pip install 'keepbest[mlflow]', or remove logging.mlflow"
            )
        uri = cfg.logging.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            check_tracking_uri(uri)


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local tracking store (``sqlite:///``, ``file:``, a plain
    path), or None for a server or a database elsewhere."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        name = uri.removeprefix("sqlite:///")
        return None if name in ("", ":memory:") or name == uri else Path(name)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (or a Windows drive)
        return Path(uri)
    return None


def check_tracking_uri(uri: str) -> None:
    """``ConfigError`` naming ``logging.mlflow.tracking_uri`` unless the store can be used:
    a local store never inside a run dir, in a folder that exists; a server that answers
    an HTTP request within ``PROBE_SECONDS`` (any answer: an error status is still one)."""
    from keepbest.rundir.guard import check_path, enclosing_run, shown

    store = _local_store(uri)
    if store is not None:
        try:
            check_path(store, _KEY)
        except KeepbestError as exc:
            raise ConfigError(str(exc)) from None
        run = enclosing_run(store)
        if run is not None:
            raise ConfigError(
                f"{_KEY}: {shown(store)} is inside the run dir {shown(run)}, which only "
                "keepbest's training writes; keep the MLflow store outside run dirs"
            )
        folder = store.absolute().parent  # MLflow makes the database or store folder
        if not folder.is_dir():
            raise ConfigError(f"{_KEY}: the folder {shown(folder)} does not exist")
        return
    if urllib.parse.urlparse(uri).scheme in ("http", "https"):
        _probe(uri)


def _probe(uri: str) -> None:
    """Ask the server once (in a thread, so that a name lookup is bounded too)."""
    if uri in _answered:
        return
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(uri.rstrip("/") + "/health", method="GET")
            with urllib.request.urlopen(request, timeout=PROBE_SECONDS):
                pass
            outcome.append(None)
        except urllib.error.HTTPError:  # it answered, if only with an error
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, name="keepbest-mlflow-probe", daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 1)
    if not outcome:
        why = f"no answer within {PROBE_SECONDS:g} s"
    elif outcome[0] is not None:
        exc = outcome[0]
        reason = getattr(exc, "reason", exc)
        why = f"no answer within {PROBE_SECONDS:g} s" if "timed out" in str(reason) else reason
    else:
        _answered.add(uri)
        return
    raise ConfigError(
        f"{_KEY}: the MLflow server {uri} does not answer ({why}); start it or fix the URI, "
        "or remove logging.mlflow to train without tracking"
    )


def _sqlite_artifacts(uri: str | None) -> str | None:
    """Where a local SQLite store's experiments keep artifacts: beside the database (by
    default MLflow would use ./mlruns in whatever folder training ran from)."""
    prefix = "sqlite:///"
    if uri and uri.startswith(prefix) and uri != prefix + ":memory:":
        return (Path(uri.removeprefix(prefix)).parent / "mlartifacts").as_uri()
    return None


class MlflowTracker:
    """Logs one run dir's training into one MLflow run; call ``start`` first."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        from mlflow import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic"):  # database set-up chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        self.cfg = cfg
        self.run = run
        self.settings = cfg.logging.mlflow
        self.client = MlflowClient(tracking_uri=self.settings.tracking_uri)
        self.uri = self.client.tracking_uri
        self.run_id: str | None = None
        self.was_finished = False
        self._warned = False

    # ----------------------------------------------------------------- the run

    def _experiment_id(self) -> str | None:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment
        if name is None:
            return None  # MLflow's default experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=_sqlite_artifacts(self.uri)
            )
        except MlflowException:  # another process created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def _stored_run_id(self) -> str | None:
        path = self.run.mlflow_file
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); starting a new MLflow run", path, exc)
            return None
        if not isinstance(stored, dict) or stored.get("tracking_uri") != self.uri:
            return None
        return stored.get("run_id")

    def start(self) -> None:
        """Continue the run dir's MLflow run, or create one; log the params."""
        from mlflow.exceptions import MlflowException

        run_id = self._stored_run_id()
        existing = None
        if run_id:
            try:
                existing = self.client.get_run(run_id)
            except MlflowException:
                log.warning("MLflow run %s is gone from %s; starting a new one", run_id, self.uri)
        if existing is not None:
            self.was_finished = existing.info.status == "FINISHED"
            self.client.update_run(run_id, status="RUNNING")
            logged = existing.data.params
        else:
            created = self.client.create_run(
                self._experiment_id(),
                run_name=self.cfg.name,
                tags={"keepbest.run_dir": str(self.run.path)},
            )
            run_id, logged = created.info.run_id, {}
            self.run.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                self.run.mlflow_file,
                {
                    "run_id": run_id,
                    "tracking_uri": self.uri,
                    "experiment": self.settings.experiment,
                },
            )
        self.run_id = run_id
        self._log_params(logged)

    def _log_params(self, logged: dict[str, str]) -> None:
        from mlflow.entities import Param

        params = []
        for key, value in flatten_config(self.cfg).items():
            text = value if isinstance(value, str) else json.dumps(value)
            text = text[:MAX_PARAM_LENGTH]
            if key not in logged:
                params.append(Param(key, text))
            elif logged[key] != text:
                log.info(
                    "MLflow keeps %s = %s (params cannot change); now %s", key, logged[key], text
                )
        for first in range(0, len(params), 100):  # MLflow takes 100 params per batch
            self.client.log_batch(self.run_id, params=params[first : first + 100])

    # ----------------------------------------------------------------- points

    def __call__(self, point) -> None:
        """An observer: log every value of the evaluation point at its global step."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, point.step) for k, v in point.values.items()]
        tags = []
        if point.saved:
            metrics.append(Metric("best_value", float(point.value), now, point.step))
            tags = [RunTag("best_epoch", str(point.epoch)), RunTag("best_step", str(point.step))]
        self._safely(self.client.log_batch, self.run_id, metrics=metrics, tags=tags)

    def _safely(self, call, *args, **kwargs) -> None:
        """A tracking failure is a warning (once): training goes on."""
        try:
            call(*args, **kwargs)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "MLflow logging failed (%s: %s); training goes on", type(exc).__name__, exc
                )

    # ----------------------------------------------------------------- the end

    def finish(self, record) -> None:
        """The verified best as metrics and tags, the small files as artifacts, FINISHED."""
        from mlflow.entities import Metric, RunTag

        if not self.was_finished:
            now = int(time.time() * 1000)
            metrics = [Metric("best_value", record.value, now, 0)]
            if record.verified_value is not None:
                metrics.append(Metric("best_verified_value", record.verified_value, now, 0))
            tags = [
                RunTag("best_epoch", str(record.epoch)),
                RunTag("best_monitor", record.monitor),
                RunTag("best_mode", record.mode),
            ]
            self._safely(self.client.log_batch, self.run_id, metrics=metrics, tags=tags)
            for name in ARTIFACTS:
                path = self.run.path / name
                if path.is_file():
                    self._safely(self.client.log_artifact, self.run_id, str(path))
        self._safely(self.client.set_terminated, self.run_id, "FINISHED")

    def end(self, status: str) -> None:
        self._safely(self.client.set_terminated, self.run_id, status)


class _NoTracking:
    observers: tuple = ()

    def finish(self, record) -> None:
        pass


class _Tracking:
    def __init__(self, tracker: MlflowTracker):
        self.tracker = tracker
        self.observers = [tracker]

    def finish(self, record) -> None:
        self.tracker.finish(record)


@contextlib.contextmanager
def tracking(cfg: ExperimentConfig, run: RunDir, chief: bool) -> Iterator[Any]:
    """The run's MLflow tracking while training (nothing unless configured, or off the
    chief): ``.observers`` to pass to training, ``.finish(record)`` once verified. A
    stop (signal, or an observer such as a tuner's pruning) ends the MLflow run KILLED,
    a keepbest error FAILED."""
    if not chief or cfg.logging.mlflow is None:
        yield _NoTracking()
        return
    try:
        tracker = MlflowTracker(cfg, run)
        tracker.start()
    except Exception as exc:
        where = cfg.logging.mlflow.tracking_uri or "MLflow's default tracking URI"
        with reported_against(cfg):
            raise ConfigError(
                f"logging.mlflow: cannot start an MLflow run in {where} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
    try:
        yield _Tracking(tracker)
    except StoppedForResume:
        tracker.end("KILLED")
        raise
    except KeepbestError:
        tracker.end("FAILED")
        raise
    except BaseException:
        tracker.end("KILLED")
        raise
