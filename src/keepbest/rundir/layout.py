"""The layout of a run directory: every name in it is spelled here, and only here.

::

    runs/<name>/
        config.yaml        the resolved config the run was trained with
        data_spec.json     input shape, classes, ... (what rebuilding the model needs)
        code.json          where the config's folder and its module:function code were
        model.json         Keras' serialized architecture (when the model has one)
        best.weights.h5    the best checkpoint's weights (keepbest.rundir.record)
        best.json          its record: epoch, monitor, value, sha256, verified_value
        history.csv        one row per evaluation (keepbest.rundir.history)
        resume/            the newest resume state and its predecessor, and
                           attempts.json: each training attempt, from which step, how far
        tensorboard/       TensorBoard event files (logging.tensorboard)
        mlflow.json        the run's MLflow run id and tracking URI (logging.mlflow)
        curves.png         keepbest plot's default output
        error.log          the traceback of an unexpected error (see keepbest.cli)
        .lock              who is training here (keepbest.rundir.lock)

``--restart`` moves an old run aside to ``<name>.old-<timestamp>``. Nothing in these files
is an absolute path that loading depends on, so a run directory can be copied or moved to
another machine. Imports no TensorFlow.

Example:

    >>> from keepbest.rundir.layout import RunDir
    >>> run = RunDir("runs/digits-mlp")
    >>> run.weights_file.name, run.resume_dir.name, RunDir.is_set_aside("t.old-20261129-0900")
    ('best.weights.h5', 'resume', True)
"""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from keepbest.atomic import TEMP_PREFIX, write_text_atomic
from keepbest.config import ExperimentConfig, config_to_yaml, load_config
from keepbest.config.code import apply_code_record, code_json
from keepbest.data.spec import DataSpec

CONFIG_FILE = "config.yaml"
DATA_SPEC_FILE = "data_spec.json"
CODE_FILE = "code.json"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "best.weights.h5"
RECORD_FILE = "best.json"
PENDING_FILE = "best.json.pending"
HISTORY_FILE = "history.csv"
RESUME_DIR = "resume"
ATTEMPTS_FILE = "attempts.json"  # in RESUME_DIR: the training attempts (rundir.resume_store)
KEPT_DIR = "checkpoints"  # checkpoint.keep_top / average: one file per kept point
AVERAGE_FILE = "average.weights.h5"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_FILE = "mlflow.json"
PLOT_FILE = "curves.png"
ERROR_LOG_FILE = "error.log"
LOCK_FILE = ".lock"
SET_ASIDE_MARKER = ".old-"
# Every name keepbest writes in a run dir (besides temporaries, TEMP_PREFIX...).
OWNED_NAMES = frozenset(
    {
        CONFIG_FILE,
        DATA_SPEC_FILE,
        CODE_FILE,
        MODEL_FILE,
        WEIGHTS_FILE,
        RECORD_FILE,
        PENDING_FILE,
        HISTORY_FILE,
        RESUME_DIR,
        KEPT_DIR,
        AVERAGE_FILE,
        TENSORBOARD_DIR,
        MLFLOW_FILE,
        PLOT_FILE,
        ERROR_LOG_FILE,
        LOCK_FILE,
    }
)


def kept_file(step: int) -> str:
    """A kept point's weights file, relative to the run dir."""
    return f"{KEPT_DIR}/step-{step:012d}.weights.h5"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def spec_file(self) -> Path:
        return self.path / DATA_SPEC_FILE

    @property
    def code_file(self) -> Path:
        return self.path / CODE_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def record_file(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def pending_file(self) -> Path:
        return self.path / PENDING_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def resume_dir(self) -> Path:
        return self.path / RESUME_DIR

    @property
    def attempts_file(self) -> Path:
        return self.resume_dir / ATTEMPTS_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def mlflow_file(self) -> Path:
        return self.path / MLFLOW_FILE

    @property
    def plot_file(self) -> Path:
        return self.path / PLOT_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def error_log(self) -> Path:
        return self.path / ERROR_LOG_FILE

    def has_run(self) -> bool:
        """Whether training ever started here (its setup files were written)."""
        return self.config_file.exists() and self.spec_file.exists()

    def looks_like_run(self) -> bool:
        """Whether this is a run dir, even a damaged one (keepbest.rundir.guard keeps every
        command from writing over one): a name only keepbest uses (``data_spec.json``,
        ``best.weights.h5``, a resume state), or ``best.json`` beside a history or
        ``resume``. A folder that merely holds a ``history.csv`` or a ``resume`` folder of
        its own is not one."""
        if not self.path.is_dir():
            return False
        if self.spec_file.exists() or self.weights_file.exists():
            return True
        if self.resume_dir.is_dir() and any(self.resume_dir.glob("state-*.json")):
            return True
        return self.record_file.exists() and (
            self.history_file.exists() or self.resume_dir.exists()
        )

    @staticmethod
    def owns(name: str) -> bool:
        """Whether ``name`` is one keepbest writes in a run dir (a file, ``resume/``, a
        temporary)."""
        return name in OWNED_NAMES or name.startswith(TEMP_PREFIX)

    def write_setup(self, cfg: ExperimentConfig, spec: DataSpec, model) -> None:
        """Write the files that describe the run (before the first training step)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_file, config_to_yaml(cfg))
        write_text_atomic(self.spec_file, spec.to_json())
        write_text_atomic(self.code_file, code_json(cfg, self.path))
        # The compile settings stay in model.json only when they are the model's own: a
        # config's are in config.yaml (its own objects, e.g. a loss with kwargs, need not
        # be serializable by Keras).
        architecture = architecture_json(model, with_compile=cfg.compiled_by_model)
        if architecture is not None:
            write_text_atomic(self.model_file, architecture)

    def read_config(self, check_files: bool = False) -> ExperimentConfig:
        """The saved config; its data files need not exist unless ``check_files``. Its
        ``module:function`` code and ``config_dir`` are looked for where training found
        them (``code.json``, see ``keepbest.config.code``)."""
        cfg = load_config(self.config_file, check_files=check_files)
        try:
            text = self.code_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return cfg  # a run from before code.json: the run dir is the config's folder
        apply_code_record(cfg, self.path, text)
        return cfg

    def read_spec(self) -> DataSpec:
        return DataSpec.from_json(self.spec_file.read_text(encoding="utf-8"))

    def remove_stale_temps(self) -> list[Path]:
        """Delete temporaries that a process killed mid-write left in the run dir or in
        ``resume/`` (call while holding the run lock)."""
        removed = []
        for folder in (self.path, self.resume_dir, self.path / KEPT_DIR):
            if not folder.is_dir():
                continue
            for leftover in folder.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    if leftover.is_dir():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
                    removed.append(leftover)
        return removed

    def set_aside_path(self) -> Path:
        """Where ``--restart`` moves this run: ``<name>.old-<timestamp>`` beside it."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return self.path.with_name(f"{self.path.name}{SET_ASIDE_MARKER}{stamp}")

    @staticmethod
    def is_set_aside(path: str | Path) -> bool:
        """Whether ``path`` is a run that ``--restart`` moved aside."""
        return SET_ASIDE_MARKER in Path(path).name


def architecture_json(model, with_compile: bool = True) -> str | None:
    """Keras' own serialized architecture (with the compile settings unless told not
    to), or None for a subclassed model without config."""
    try:
        if with_compile:
            return model.to_json(indent=2) + "\n"
        config = json.loads(model.to_json())
        config.pop("compile_config", None)
        return json.dumps(config, indent=2) + "\n"
    except (NotImplementedError, TypeError, ValueError):
        return None


def _python_lambdas(node: Any) -> list[str]:
    """Names of the layers in a serialized architecture whose config holds a Python
    lambda (``__lambda__``): what Keras' safe_mode refuses to deserialize."""
    found: list[str] = []
    if isinstance(node, dict):
        config = node.get("config")
        if isinstance(config, dict) and any(
            isinstance(value, dict) and value.get("class_name") == "__lambda__"
            for value in config.values()
        ):
            found.append(str(config.get("name") or node.get("class_name")))
        for value in node.values():
            found += _python_lambdas(value)
    elif isinstance(node, list):
        for value in node:
            found += _python_lambdas(value)
    return found


def unloadable_architecture(architecture: str) -> str | None:
    """Why ``load_best`` could not rebuild a model from this ``model.json`` text (a Python
    lambda in a Lambda layer, refused by Keras' safe_mode), or None. Training checks it
    before the run dir is touched."""
    try:
        layers = _python_lambdas(json.loads(architecture))
    except ValueError:
        return None
    if not layers:
        return None
    return (
        f"the model's layer {layers[0]!r} is a Lambda layer holding Python code (a lambda), "
        "which Keras' safe_mode refuses, so the run's model.json could never be loaded "
        "safely (load_best, export, serving); use a layer class registered with "
        "@keras.saving.register_keras_serializable instead"
    )
