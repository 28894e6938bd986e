"""The layout of a run directory, in one place.

::

    runs/<name>/
        config.yaml        the resolved config the run was trained with
        data_spec.json     input shape, classes, ... (what rebuilding the model needs)
        model.json         Keras' serialized architecture (when the model has one)
        best.weights.h5    the best epoch's weights (written by keepbest.record)
        best.json          its record: epoch, monitor, value, sha256, verified_value
        history.csv        one row per completed epoch

Nothing in these files is an absolute path that loading depends on, so a run directory
can be copied or moved to another machine.

Example:

    >>> from keepbest.run_dir import RunDir
    >>> RunDir("runs/digits-mlp").read_spec().input_shape   # doctest: +SKIP
    (8, 8, 1)
"""

from __future__ import annotations

from pathlib import Path

from keepbest.atomic import write_text_atomic
from keepbest.config import ExperimentConfig, config_to_yaml, load_config
from keepbest.data import DataSpec
from keepbest.record import RECORD_FILE, WEIGHTS_FILE

CONFIG_FILE = "config.yaml"
DATA_SPEC_FILE = "data_spec.json"
MODEL_FILE = "model.json"
HISTORY_FILE = "history.csv"


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
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def record_file(self) -> Path:
        return self.path / RECORD_FILE

    def has_run(self) -> bool:
        return self.config_file.exists()

    def write_setup(self, cfg: ExperimentConfig, spec: DataSpec, model) -> None:
        """Write the files that describe the run (before the first epoch)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_file, config_to_yaml(cfg))
        write_text_atomic(self.spec_file, spec.to_json())
        architecture = _architecture_json(model)
        if architecture is not None:
            write_text_atomic(self.model_file, architecture)

    def read_config(self, check_files: bool = False) -> ExperimentConfig:
        """The saved config; its data files need not exist unless ``check_files``."""
        return load_config(self.config_file, check_files=check_files)

    def read_spec(self) -> DataSpec:
        return DataSpec.from_json(self.spec_file.read_text(encoding="utf-8"))


def _architecture_json(model) -> str | None:
    """Keras' own serialized architecture, or None for a subclassed model without config."""
    try:
        return model.to_json(indent=2) + "\n"
    except (NotImplementedError, TypeError, ValueError):
        return None
