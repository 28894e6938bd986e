"""Optional TensorBoard logging (``logging: {tensorboard: true}``), into the run dir.

Keras' TensorBoard callback needs the ``tensorboard`` package to write summaries, and
without it fails only at the end of the first epoch. ``require_tensorboard`` makes that a
config error before any work is done. Logs go to ``run_dir/tensorboard`` (``train`` and
``validation`` subfolders), with every value keepbest logs, ``epoch_end_*`` included.

Example:

    >>> from keepbest.callbacks.tensorboard import tensorboard_callback
    >>> model.fit(..., callbacks=[best, tensorboard_callback(run_dir)])   # doctest: +SKIP

    $ tensorboard --logdir runs/digits-mlp/tensorboard
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from keepbest.config import ExperimentConfig, reported_against
from keepbest.errors import ConfigError
from keepbest.rundir.layout import RunDir


def require_tensorboard(cfg: ExperimentConfig) -> None:
    """``ConfigError`` if the config asks for TensorBoard logs and it is not installed."""
    if cfg.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        with reported_against(cfg):
            raise ConfigError(
                "logging.tensorboard: the tensorboard package is not installed; "
                "pip install 'keepbest[tensorboard]', or set logging.tensorboard: false"
            )


def tensorboard_callback(run_dir: Path):
    """Keras' TensorBoard callback writing to ``run_dir/tensorboard``; place it after
    ``BestCheckpoint`` so that it logs the end-of-epoch values too."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(RunDir(run_dir).tensorboard_dir))
